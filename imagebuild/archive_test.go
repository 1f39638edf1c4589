package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

// readTar returns the entries of a tar in order.
func readTar(t *testing.T, r io.Reader) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", hdr.Name, err)
		}
		out = append(out, tarEntry{hdr: hdr, data: data})
	}
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// layout is an untarred archive, with every blob checked against its name.
type layout struct {
	index    ocispec.Index
	manifest ocispec.Manifest
	config   ocispec.Image
	blobs    map[string][]byte // by digest
}

func parseArchive(t *testing.T, archive []byte) layout {
	t.Helper()
	l := layout{blobs: map[string][]byte{}}
	var sawLayout, sawIndex bool
	for _, e := range readTar(t, bytes.NewReader(archive)) {
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.ModTime.Unix() != 0 {
			t.Errorf("%s: uid %d gid %d mtime %v, want 0 0 epoch", e.hdr.Name, e.hdr.Uid, e.hdr.Gid, e.hdr.ModTime)
		}
		switch name := e.hdr.Name; {
		case e.hdr.Typeflag == tar.TypeDir:
			if name != "blobs/" && name != "blobs/sha256/" {
				t.Errorf("unexpected directory %q", name)
			}
		case name == "oci-layout":
			sawLayout = true
			var il ocispec.ImageLayout
			if err := json.Unmarshal(e.data, &il); err != nil || il.Version != "1.0.0" {
				t.Errorf("oci-layout = %s (%v)", e.data, err)
			}
		case name == "index.json":
			sawIndex = true
			if err := json.Unmarshal(e.data, &l.index); err != nil {
				t.Fatalf("index.json: %v", err)
			}
		case strings.HasPrefix(name, "blobs/sha256/"):
			want := "sha256:" + strings.TrimPrefix(name, "blobs/sha256/")
			if got := sumOf(e.data); got != want {
				t.Errorf("blob %s has digest %s", name, got)
			}
			if _, dup := l.blobs[want]; dup {
				t.Errorf("blob %s written twice", name)
			}
			l.blobs[want] = e.data
		default:
			t.Errorf("unexpected entry %q", name)
		}
	}
	if !sawLayout || !sawIndex {
		t.Fatalf("oci-layout present %v, index.json present %v", sawLayout, sawIndex)
	}
	if l.index.SchemaVersion != 2 || l.index.MediaType != ocispec.MediaTypeImageIndex || len(l.index.Manifests) != 1 {
		t.Fatalf("index = %+v", l.index)
	}
	md := l.index.Manifests[0]
	l.manifest = decodeBlob[ocispec.Manifest](t, l, md)
	if md.MediaType != ocispec.MediaTypeImageManifest || l.manifest.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest media types %q / %q", md.MediaType, l.manifest.MediaType)
	}
	if l.manifest.Config.MediaType != ocispec.MediaTypeImageConfig {
		t.Errorf("config media type %q", l.manifest.Config.MediaType)
	}
	l.config = decodeBlob[ocispec.Image](t, l, l.manifest.Config)
	return l
}

func decodeBlob[T any](t *testing.T, l layout, d ocispec.Descriptor) T {
	t.Helper()
	b, ok := l.blobs[d.Digest.String()]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	if int64(len(b)) != d.Size {
		t.Fatalf("blob %s: size %d, descriptor says %d", d.Digest, len(b), d.Size)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("blob %s: %v", d.Digest, err)
	}
	return v
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteArchive(t *testing.T) {
	cfg := Config{
		Entrypoint: []string{"/bin/app"},
		Cmd:        []string{"--serve"},
		Env:        []string{"A=1"},
		User:       "65534",
		WorkingDir: "/srv",
		Labels:     map[string]string{"k": "v"},
	}
	base := []File{
		{Path: "/etc/hosts", Data: []byte("127.0.0.1 localhost\n")},
		{Path: "tmp", Dir: true, Mode: fs.ModeSticky | 0o777},
	}
	app := []File{
		{Path: "bin/app", Mode: 0o755, Data: []byte("#!binary")},
		{Path: "bin/sh", Symlink: "app"},
	}
	var buf bytes.Buffer
	dgst, err := WriteArchive(&buf, "example.com/team/fn:v1", cfg, base, app)
	if err != nil {
		t.Fatal(err)
	}
	l := parseArchive(t, buf.Bytes())

	md := l.index.Manifests[0]
	if md.Digest.String() != dgst {
		t.Errorf("returned digest %s, index has %s", dgst, md.Digest)
	}
	wantAnn := map[string]string{
		"io.containerd.image.name":          "example.com/team/fn:v1",
		"org.opencontainers.image.ref.name": "v1",
	}
	if !reflect.DeepEqual(md.Annotations, wantAnn) {
		t.Errorf("annotations = %v, want %v", md.Annotations, wantAnn)
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != runtime.GOARCH {
		t.Errorf("index platform = %+v", md.Platform)
	}

	c := l.config
	if c.OS != "linux" || c.Architecture != runtime.GOARCH {
		t.Errorf("config platform %s/%s", c.OS, c.Architecture)
	}
	if !reflect.DeepEqual(c.Config.Entrypoint, cfg.Entrypoint) || !reflect.DeepEqual(c.Config.Cmd, cfg.Cmd) ||
		!reflect.DeepEqual(c.Config.Env, cfg.Env) || c.Config.User != cfg.User ||
		c.Config.WorkingDir != cfg.WorkingDir || !reflect.DeepEqual(c.Config.Labels, cfg.Labels) {
		t.Errorf("runtime config = %+v", c.Config)
	}
	if c.RootFS.Type != "layers" || len(c.RootFS.DiffIDs) != 2 || len(l.manifest.Layers) != 2 || len(c.History) != 2 {
		t.Fatalf("rootfs %+v, %d layers, %d history", c.RootFS, len(l.manifest.Layers), len(c.History))
	}

	wantEntries := [][]string{
		{"etc/", "etc/hosts", "tmp/"},
		{"bin/", "bin/app", "bin/sh"},
	}
	for i, ld := range l.manifest.Layers {
		if ld.MediaType != ocispec.MediaTypeImageLayerGzip {
			t.Errorf("layer %d media type %q", i, ld.MediaType)
		}
		blob := l.blobs[ld.Digest.String()]
		if int64(len(blob)) != ld.Size {
			t.Errorf("layer %d size %d, descriptor %d", i, len(blob), ld.Size)
		}
		raw := gunzip(t, blob)
		if got := sumOf(raw); got != c.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d diff_id %s, uncompressed digest %s", i, c.RootFS.DiffIDs[i], got)
		}
		var names []string
		for _, e := range readTar(t, bytes.NewReader(raw)) {
			names = append(names, e.hdr.Name)
			if e.hdr.Uid != 0 || e.hdr.Gid != 0 || !e.hdr.ModTime.Equal(epoch()) {
				t.Errorf("layer %d %s: uid %d gid %d mtime %v", i, e.hdr.Name, e.hdr.Uid, e.hdr.Gid, e.hdr.ModTime)
			}
			switch e.hdr.Name {
			case "tmp/":
				if e.hdr.Mode != 0o1777 {
					t.Errorf("tmp mode %o", e.hdr.Mode)
				}
			case "etc/hosts":
				if e.hdr.Mode != 0o644 || string(e.data) != "127.0.0.1 localhost\n" {
					t.Errorf("etc/hosts mode %o data %q", e.hdr.Mode, e.data)
				}
			case "bin/app":
				if e.hdr.Mode != 0o755 {
					t.Errorf("bin/app mode %o", e.hdr.Mode)
				}
			case "bin/sh":
				if e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "app" {
					t.Errorf("bin/sh = %+v", e.hdr)
				}
			}
		}
		if !reflect.DeepEqual(names, wantEntries[i]) {
			t.Errorf("layer %d entries %v, want %v", i, names, wantEntries[i])
		}
	}
}

func TestWriteArchiveDeterministic(t *testing.T) {
	files := func(reverse bool) []File {
		fs := []File{
			{Path: "a/b/c", Data: []byte("c")},
			{Path: "a/x", Data: []byte("x")},
			{Path: "z", Mode: 0o600, Data: []byte("z")},
		}
		if reverse {
			fs[0], fs[2] = fs[2], fs[0]
		}
		return fs
	}
	var a, b bytes.Buffer
	da, err := WriteArchive(&a, "fn", Config{Entrypoint: []string{"/z"}}, files(false))
	if err != nil {
		t.Fatal(err)
	}
	db, err := WriteArchive(&b, "fn", Config{Entrypoint: []string{"/z"}}, files(true))
	if err != nil {
		t.Fatal(err)
	}
	if da != db || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("same input gave %s and %s (archives equal: %v)", da, db, bytes.Equal(a.Bytes(), b.Bytes()))
	}
	var c bytes.Buffer
	dc, err := WriteArchive(&c, "fn", Config{Entrypoint: []string{"/y"}}, files(false))
	if err != nil {
		t.Fatal(err)
	}
	if dc == da {
		t.Error("different config gave the same digest")
	}
}

func TestWriteArchiveSharedLayerWrittenOnce(t *testing.T) {
	same := []File{{Path: "f", Data: []byte("f")}}
	var buf bytes.Buffer
	if _, err := WriteArchive(&buf, "fn:1", Config{}, same, same); err != nil {
		t.Fatal(err)
	}
	l := parseArchive(t, buf.Bytes()) // fails on a duplicate blob
	if len(l.manifest.Layers) != 2 || len(l.config.RootFS.DiffIDs) != 2 {
		t.Errorf("want two layer references, got %d and %d", len(l.manifest.Layers), len(l.config.RootFS.DiffIDs))
	}
}

func TestRefTag(t *testing.T) {
	tests := []struct {
		ref, tag string
		bad      bool
	}{
		{ref: "fn", tag: "latest"},
		{ref: "fn:v2", tag: "v2"},
		{ref: "localhost:5000/fn", tag: "latest"},
		{ref: "localhost:5000/team/fn:1.0", tag: "1.0"},
		{ref: "registry.example/library/hello:latest", tag: "latest"},
		{ref: "", bad: true},
		{ref: "fn:", bad: true},
		{ref: "repo/", bad: true},
		{ref: "fn@sha256:abcd", bad: true},
		{ref: "has space", bad: true},
	}
	for _, tt := range tests {
		tag, err := refTag(tt.ref)
		if tt.bad {
			if err == nil {
				t.Errorf("refTag(%q) = %q, want an error", tt.ref, tag)
			}
			continue
		}
		if err != nil || tag != tt.tag {
			t.Errorf("refTag(%q) = %q, %v; want %q", tt.ref, tag, err, tt.tag)
		}
	}
}

func TestNewLayerRejects(t *testing.T) {
	tests := map[string][]File{
		"duplicate":       {{Path: "a"}, {Path: "/a"}},
		"root":            {{Path: "/", Dir: true}},
		"dotdot":          {{Path: "a/../../etc/passwd"}},
		"parent not dir":  {{Path: "a", Data: []byte("x")}, {Path: "a/b"}},
		"nul in the name": {{Path: "a\x00b"}},
	}
	for name, files := range tests {
		if _, err := NewLayer(files); err == nil {
			t.Errorf("%s: NewLayer accepted %+v", name, files)
		}
	}
}

func TestLayerFromDir(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "sub", "empty"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "top.txt"), []byte("hi"), 0o640))
	must(os.Symlink("sub/run.sh", filepath.Join(dir, "link")))

	files, err := LayerFromDir(dir)
	must(err)
	got := map[string]File{}
	for _, f := range files {
		got[f.Path] = f
	}
	want := map[string]File{
		"link":       {Path: "link", Mode: 0o777, Symlink: "sub/run.sh"},
		"sub":        {Path: "sub", Mode: 0o750, Dir: true},
		"sub/empty":  {Path: "sub/empty", Mode: 0o750, Dir: true},
		"sub/run.sh": {Path: "sub/run.sh", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
		"top.txt":    {Path: "top.txt", Mode: 0o640, Data: []byte("hi")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LayerFromDir = %+v\nwant %+v", got, want)
	}
	if _, err := NewLayer(files); err != nil {
		t.Errorf("NewLayer(LayerFromDir) = %v", err)
	}
}

func TestGoFunctionImage(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a Go program")
	}
	if _, err := goTool(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/hello\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from kiln\") }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	var progress, archive bytes.Buffer
	dgst, err := GoFunctionImage(ctx, &archive, dir, "hello:dev", []string{"GREETING=hi"}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "building Go package") || !strings.Contains(progress.String(), dgst) {
		t.Errorf("progress = %q", progress.String())
	}

	l := parseArchive(t, archive.Bytes())
	if l.index.Manifests[0].Annotations["io.containerd.image.name"] != "hello:dev" {
		t.Errorf("annotations %v", l.index.Manifests[0].Annotations)
	}
	c := l.config.Config
	if !reflect.DeepEqual(c.Entrypoint, []string{"/function"}) || c.User != "" || len(c.Cmd) != 0 {
		t.Errorf("runtime config %+v", c)
	}
	if !reflect.DeepEqual(c.Env, []string{DefaultPath, "GREETING=hi"}) {
		t.Errorf("env %v", c.Env)
	}
	if len(l.manifest.Layers) != 2 {
		t.Fatalf("%d layers, want base and binary", len(l.manifest.Layers))
	}
	contents := map[string]tarEntry{}
	for _, ld := range l.manifest.Layers {
		for _, e := range readTar(t, bytes.NewReader(gunzip(t, l.blobs[ld.Digest.String()]))) {
			contents[e.hdr.Name] = e
		}
	}
	for _, name := range []string{"etc/passwd", "etc/group", "tmp/", "function"} {
		if _, ok := contents[name]; !ok {
			t.Errorf("image lacks %s", name)
		}
	}
	if !strings.Contains(string(contents["etc/passwd"].data), "nobody:x:65534:65534:") {
		t.Errorf("passwd = %q", contents["etc/passwd"].data)
	}
	fn := contents["function"]
	if fn.hdr.Mode != 0o755 || !bytes.HasPrefix(fn.data, []byte("\x7fELF")) {
		t.Fatalf("function: mode %o, %d bytes, not an ELF binary", fn.hdr.Mode, len(fn.data))
	}

	// The binary is static and built for this host, so it can be run
	// directly to prove it is the program we wrote.
	if runtime.GOOS == "linux" {
		bin := filepath.Join(t.TempDir(), "function")
		if err := os.WriteFile(bin, fn.data, 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin).Output()
		if err != nil || string(out) != "hello from kiln\n" {
			t.Errorf("running the built binary: %q, %v", out, err)
		}
	}

	// A rebuild of the same source gives the same image.
	var again bytes.Buffer
	dgst2, err := GoFunctionImage(ctx, &again, dir, "hello:dev", []string{"GREETING=hi"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dgst2 != dgst {
		t.Errorf("rebuild digest %s, first %s", dgst2, dgst)
	}
}

func TestBuildGoReportsCompilerErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the Go compiler")
	}
	if _, err := goTool(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/broken\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { undefinedThing() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := BuildGo(context.Background(), dir, nil)
	if err == nil || !strings.Contains(err.Error(), "undefinedThing") {
		t.Errorf("BuildGo error = %v, want the compiler's message", err)
	}
}

func TestGoFunctionImageBadRefFailsFast(t *testing.T) {
	_, err := GoFunctionImage(context.Background(), io.Discard, t.TempDir(), "bad ref", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "whitespace") {
		t.Errorf("error = %v", err)
	}
}
