package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDetectRuntime(t *testing.T) {
	tests := []struct {
		files map[string]string
		want  string
	}{
		{map[string]string{"go.mod": "module x", "run.sh": ""}, RuntimeGo},
		{map[string]string{"main.go": "package main"}, RuntimeGo},
		{map[string]string{"func.py": "", "helper.sh": ""}, RuntimePython},
		{map[string]string{"requirements.txt": ""}, RuntimePython},
		{map[string]string{"package.json": "{}", "build.sh": ""}, RuntimeNode},
		{map[string]string{"func.js": ""}, RuntimeNode},
		{map[string]string{"func.sh": ""}, RuntimeShell},
		{map[string]string{"README.md": "", "sub/x.py": ""}, ""},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		writeFiles(t, dir, tt.files)
		got, err := DetectRuntime(dir)
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), "--runtime") {
				t.Errorf("%v: got %q, %v; want an error naming --runtime", tt.files, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: got %q, %v; want %q", tt.files, got, err, tt.want)
		}
	}
}

func TestEntryFile(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"lib.py": "", "main.py": ""})
	if got, err := entryFile(dir, []string{"func.py", "main.py"}, ".py"); err != nil || got != "main.py" {
		t.Errorf("candidate: %q, %v", got, err)
	}
	dir = t.TempDir()
	writeFiles(t, dir, map[string]string{"only.sh": ""})
	if got, err := entryFile(dir, []string{"func.sh"}, ".sh"); err != nil || got != "only.sh" {
		t.Errorf("single file: %q, %v", got, err)
	}
	writeFiles(t, dir, map[string]string{"other.sh": ""})
	if _, err := entryFile(dir, []string{"func.sh"}, ".sh"); err == nil {
		t.Error("two candidates and no func.sh: no error")
	}
	dir = t.TempDir()
	writeFiles(t, dir, map[string]string{"package.json": `{"main": "lib/start.js"}`, "lib/start.js": ""})
	if got := packageMain(dir); got != "lib/start.js" {
		t.Errorf("packageMain = %q", got)
	}
	writeFiles(t, dir, map[string]string{"package.json": `{"main": "../escape.js"}`})
	if got := packageMain(dir); got != "" {
		t.Errorf("packageMain escaping the dir = %q", got)
	}
}

func TestMirrorFromAptSources(t *testing.T) {
	deb822 := `Types: deb
# a comment
URIs: http://mirror.test/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.test/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.test/debian
Suites: trixie

Enabled: no
Types: deb
URIs: http://disabled.test/debian
Suites: trixie
`
	src := parseDeb822Sources(deb822)
	want := []aptSource{
		{URI: "http://mirror.test/debian", Suites: []string{"bookworm", "bookworm-updates"}},
		{URI: "http://mirror.test/debian-security", Suites: []string{"bookworm-security"}},
	}
	if !reflect.DeepEqual(src, want) {
		t.Fatalf("deb822 = %+v", src)
	}
	if got := pickMirror(src, "bookworm"); got != "http://mirror.test/debian" {
		t.Errorf("exact release: %q", got)
	}
	if got := pickMirror(src, "trixie"); got != "http://mirror.test/debian" {
		t.Errorf("other release falls back to a main suite: %q", got)
	}
	oneLine := "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://one.test/debian trixie main\ndeb-src http://x.test trixie main\ndeb http://two.test/debian bookworm main contrib\n"
	src = parseOneLineSources(oneLine)
	if len(src) != 2 || src[0].URI != "http://one.test/debian" || src[1].Suites[0] != "bookworm" {
		t.Fatalf("one-line = %+v", src)
	}
	if got := pickMirror(src, "bookworm"); got != "http://two.test/debian" {
		t.Errorf("one-line exact: %q", got)
	}
	if got := pickMirror([]aptSource{{URI: "http://sec.test/debian-security", Suites: []string{"bookworm-security"}}}, "bookworm"); got != "" {
		t.Errorf("security-only sources gave %q", got)
	}
	t.Setenv("KILN_DEBIAN_MIRROR", "http://env.test/debian")
	if got, err := debianMirror("", "bookworm"); err != nil || got != "http://env.test/debian" {
		t.Errorf("env mirror: %q, %v", got, err)
	}
	if got, _ := debianMirror("http://given.test", "bookworm"); got != "http://given.test" {
		t.Errorf("given mirror: %q", got)
	}
}

func TestTarDirLayer(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"etc/os-release": "ID=test\n",
		"usr/bin/tool":   "#!/bin/sh\n",
		"proc/self/x":    "must not be archived",
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(filepath.Join(dir, "usr/bin/tool"), 0o755|os.ModeSetuid))
	must(os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool2")))
	must(os.Symlink("tool", filepath.Join(dir, "usr/bin/link")))
	if os.Geteuid() == 0 {
		must(os.Chown(filepath.Join(dir, "etc/os-release"), 0, 42))
	}
	old := time.Now().Add(-48 * time.Hour)
	must(os.Chtimes(filepath.Join(dir, "etc/os-release"), old, old))

	var a bytes.Buffer
	dgst, diffID, size, err := TarDirLayer(&a, dir, "proc")
	must(err)
	if size != int64(a.Len()) || dgst != sumOf(a.Bytes()) || diffID != sumOf(gunzip(t, a.Bytes())) {
		t.Fatalf("digests: %s %s %d, blob %d bytes", dgst, diffID, size, a.Len())
	}
	byName := map[string]tarEntry{}
	var names []string
	for _, e := range readTar(t, bytes.NewReader(gunzip(t, a.Bytes()))) {
		byName[e.hdr.Name] = e
		names = append(names, e.hdr.Name)
		if !e.hdr.ModTime.Equal(epoch()) {
			t.Errorf("%s mtime %v", e.hdr.Name, e.hdr.ModTime)
		}
	}
	wantNames := []string{"etc/", "etc/os-release", "proc/", "usr/", "usr/bin/", "usr/bin/link", "usr/bin/tool", "usr/bin/tool2"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("entries %v, want %v", names, wantNames)
	}
	if e := byName["usr/bin/tool"]; e.hdr.Mode&0o4000 == 0 || string(e.data) != "#!/bin/sh\n" {
		t.Errorf("setuid file: mode %o data %q", e.hdr.Mode, e.data)
	}
	if e := byName["usr/bin/tool2"]; e.hdr.Typeflag != tar.TypeLink || e.hdr.Linkname != "usr/bin/tool" {
		t.Errorf("hard link: %+v", e.hdr)
	}
	if e := byName["usr/bin/link"]; e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "tool" {
		t.Errorf("symlink: %+v", e.hdr)
	}
	if os.Geteuid() == 0 && byName["etc/os-release"].hdr.Gid != 42 {
		t.Errorf("ownership lost: gid %d", byName["etc/os-release"].hdr.Gid)
	}

	// Same tree, same digest: a rebuilt base does not churn images.
	must(os.Chtimes(filepath.Join(dir, "etc/os-release"), time.Now(), time.Now()))
	var b bytes.Buffer
	dgst2, _, _, err := TarDirLayer(&b, dir, "proc")
	must(err)
	if dgst2 != dgst {
		t.Errorf("touching a file changed the digest")
	}
}

func TestWriteArchiveBlobsChecksBlobs(t *testing.T) {
	l, err := NewLayer([]File{{Path: "a", Data: []byte("a")}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	dgst, err := WriteArchiveBlobs(&buf, "x:1", Config{Entrypoint: []string{"/a"}}, MemoryLayer(l), MemoryLayer(l))
	if err != nil {
		t.Fatal(err)
	}
	parsed := parseArchive(t, buf.Bytes())
	if parsed.index.Manifests[0].Digest.String() != dgst || len(parsed.manifest.Layers) != 2 {
		t.Errorf("digest %s, index %+v", dgst, parsed.index)
	}
	// WriteArchive of the same files gives the same image.
	var same bytes.Buffer
	d2, err := WriteArchive(&same, "x:1", Config{Entrypoint: []string{"/a"}}, []File{{Path: "a", Data: []byte("a")}}, []File{{Path: "a", Data: []byte("a")}})
	if err != nil || d2 != dgst {
		t.Errorf("WriteArchive gave %s, %v; WriteArchiveBlobs %s", d2, err, dgst)
	}

	bad := MemoryLayer(l)
	bad.Open = func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(strings.Repeat("x", int(bad.Size)))), nil
	}
	if _, err := WriteArchiveBlobs(io.Discard, "x:1", Config{}, bad); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("corrupt blob: %v", err)
	}
}

// fakeBase stands in for debootstrap: a tiny layer in a temp dir.
func fakeBase(t *testing.T, calls *atomic.Int32) func(context.Context, DebianBase, BaseOptions) (CachedBase, error) {
	dir := t.TempDir()
	return func(_ context.Context, b DebianBase, _ BaseOptions) (CachedBase, error) {
		calls.Add(1)
		l, err := NewLayer([]File{{Path: "usr/bin/" + b.Name, Data: []byte("interpreter")}})
		if err != nil {
			return CachedBase{}, err
		}
		p := filepath.Join(dir, b.Name+".tar.gz")
		if err := os.WriteFile(p, l.Blob, 0o644); err != nil {
			return CachedBase{}, err
		}
		return CachedBase{Path: p, Digest: l.Digest, DiffID: l.DiffID, Size: int64(len(l.Blob))}, nil
	}
}

func layerEntries(t *testing.T, l layout, i int) map[string]tarEntry {
	t.Helper()
	out := map[string]tarEntry{}
	for _, e := range readTar(t, bytes.NewReader(gunzip(t, l.blobs[l.manifest.Layers[i].Digest.String()]))) {
		out[e.hdr.Name] = e
	}
	return out
}

func TestBuildInterpretedImages(t *testing.T) {
	tests := []struct {
		runtime    string
		files      map[string]string
		entrypoint []string
		fdk        string
		env        string
	}{
		{RuntimePython, map[string]string{"func.py": "def handler(ctx, data): return data\n", ".git/HEAD": "x"},
			[]string{"/usr/bin/python3", "/fdk/fdk.py", "/function/func.py"}, "fdk/fdk.py", "PYTHONPATH=/function:/fdk"},
		{RuntimeNode, map[string]string{"package.json": `{"main":"src/app.js"}`, "src/app.js": "module.exports = () => 1\n"},
			[]string{"/usr/bin/node", "/fdk/fdk.js", "/function/src/app.js"}, "fdk/fdk.js", "NODE_PATH=/fdk:/function/node_modules"},
	}
	for _, tt := range tests {
		t.Run(tt.runtime, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			var calls atomic.Int32
			var buf, progress bytes.Buffer
			dgst, rt, err := Build(context.Background(), &buf, BuildOptions{
				Dir: dir, Ref: "fn:" + tt.runtime, Env: []string{"A=1"}, Progress: &progress,
				debianBase: fakeBase(t, &calls),
			})
			if err != nil {
				t.Fatal(err)
			}
			if rt != tt.runtime || calls.Load() != 1 {
				t.Errorf("runtime %q, base built %d times", rt, calls.Load())
			}
			l := parseArchive(t, buf.Bytes())
			if l.index.Manifests[0].Digest.String() != dgst || len(l.manifest.Layers) != 3 {
				t.Fatalf("digest %s, %d layers", dgst, len(l.manifest.Layers))
			}
			c := l.config.Config
			if !reflect.DeepEqual(c.Entrypoint, tt.entrypoint) || c.WorkingDir != "/function" {
				t.Errorf("entrypoint %v workdir %q", c.Entrypoint, c.WorkingDir)
			}
			if !slices.Contains(c.Env, tt.env) || !slices.Contains(c.Env, "A=1") || !slices.Contains(c.Env, DefaultPath) {
				t.Errorf("env %v", c.Env)
			}
			if _, ok := layerEntries(t, l, 0)["usr/bin/"+tt.runtime]; !ok {
				t.Error("base layer is not first")
			}
			if _, ok := layerEntries(t, l, 1)[tt.fdk]; !ok {
				t.Errorf("FDK layer lacks %s", tt.fdk)
			}
			fn := layerEntries(t, l, 2)
			for name := range tt.files {
				_, ok := fn["function/"+name]
				if strings.HasPrefix(name, ".git/") == ok {
					t.Errorf("function layer: %s present %v", name, ok)
				}
			}
		})
	}
}

func TestBuildShellImage(t *testing.T) {
	if _, err := findBusybox(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"func.sh": "cat\n"})
	var buf bytes.Buffer
	_, rt, err := Build(context.Background(), &buf, BuildOptions{Dir: dir, Ref: "sh:1"})
	if err != nil {
		if strings.Contains(err.Error(), "dynamically linked") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	if rt != RuntimeShell {
		t.Errorf("detected %q", rt)
	}
	l := parseArchive(t, buf.Bytes())
	want := []string{"/bin/busybox", "awk", "-f", "/fdk/run.awk", "/function/func.sh"}
	if !reflect.DeepEqual(l.config.Config.Entrypoint, want) {
		t.Errorf("entrypoint %v", l.config.Config.Entrypoint)
	}
	base := layerEntries(t, l, 0)
	if e := base["bin/sh"]; e.hdr == nil || e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "/bin/busybox" {
		t.Errorf("bin/sh = %+v", e.hdr)
	}
	if e := base["bin/busybox"]; e.hdr == nil || e.hdr.Mode != 0o755 || !bytes.HasPrefix(e.data, []byte("\x7fELF")) {
		t.Error("bin/busybox missing or not executable")
	}
	for _, name := range []string{"fdk/run.awk", "etc/passwd", "usr/bin/awk"} {
		if _, ok := base[name]; !ok {
			t.Errorf("base lacks %s", name)
		}
	}
	if _, ok := layerEntries(t, l, 1)["function/func.sh"]; !ok {
		t.Error("function layer lacks func.sh")
	}
}

func TestCheckStatic(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	// A test binary is static unless cgo linked it: either answer must
	// be consistent with the program header.
	static := !bytes.Contains(data[:min(len(data), 4096)], []byte("/ld-linux"))
	if err := checkStatic(data); (err == nil) != static {
		t.Errorf("checkStatic(test binary) = %v, static %v", err, static)
	}
	if err := checkStatic([]byte("#!/bin/sh\n")); err == nil {
		t.Error("a script passed as a static binary")
	}
}

func TestCachedBaseIsReused(t *testing.T) {
	cache := t.TempDir()
	b := DebianBase{Name: "test", Packages: []string{"pkg"}}
	key := "test-" + DefaultRelease + "-" + runtime.GOARCH
	l, err := NewLayer([]File{{Path: "x", Data: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "bases")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, key+".tar.gz"), l.Blob, 0o644); err != nil {
		t.Fatal(err)
	}
	meta := CachedBase{Digest: l.Digest, DiffID: l.DiffID, Size: int64(len(l.Blob)), Packages: []string{"pkg"},
		Recipe: baseRecipe, Release: DefaultRelease, BuiltAt: time.Now()}
	data, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(dir, key+".json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	// A mirror that cannot exist proves nothing was built.
	got, err := b.Base(context.Background(), BaseOptions{CacheDir: cache, Mirror: "http://invalid.invalid", Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != l.Digest || got.Path != filepath.Join(dir, key+".tar.gz") || !strings.Contains(progress.String(), "using cached") {
		t.Errorf("got %+v, progress %q", got, progress.String())
	}

	// Other packages, or a truncated layer, mean a rebuild.
	if _, ok := readCachedBase(got.Path, filepath.Join(dir, key+".json"), []string{"other"}); ok {
		t.Error("a base with other packages was reused")
	}
	if err := os.WriteFile(got.Path, l.Blob[:10], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := readCachedBase(got.Path, filepath.Join(dir, key+".json"), []string{"pkg"}); ok {
		t.Error("a truncated layer was reused")
	}
}

func TestLockFileWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.lock")
	unlock, err := lockFile(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{}, 1)
	got := make(chan error, 1)
	go func() {
		u, err := lockFile(context.Background(), path, func() { waited <- struct{}{} })
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("second locker did not wait")
	}
	unlock()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	unlock, _ = lockFile(context.Background(), path, nil)
	defer unlock()
	cancel()
	if _, err := lockFile(ctx, path, nil); err == nil {
		t.Error("a cancelled wait took the lock")
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/a\040b/c\134d`); got != `/a b/c\d` {
		t.Errorf("got %q", got)
	}
	if got := unescapeMount(`/plain`); got != "/plain" {
		t.Errorf("got %q", got)
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Setenv("KILN_CACHE_DIR", "")
	t.Setenv("KILN_DATA_DIR", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got := DefaultCacheDir(); got != "/xdg/kiln" {
		t.Errorf("xdg: %q", got)
	}
	t.Setenv("KILN_DATA_DIR", "/data")
	if got := DefaultCacheDir(); got != "/data/build-cache" {
		t.Errorf("data dir: %q", got)
	}
	t.Setenv("KILN_CACHE_DIR", "/cache")
	if got := DefaultCacheDir(); got != "/cache" {
		t.Errorf("explicit: %q", got)
	}
}
