package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePlatform(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{"", HostPlatform().String(), ""},
		{"linux/amd64", "linux/amd64", ""},
		{"amd64", "linux/amd64", ""},
		{"linux/x86_64", "linux/amd64", ""},
		{"linux/arm64/v8", "linux/arm64", ""},
		{"linux/arm", "linux/arm/v7", ""},
		{"linux/arm/v6", "linux/arm/v6", ""},
		{"windows/amd64", "", "bad platform"},
		{"linux/sparc", "", "unsupported platform"},
		{"linux/arm/v9", "", "no variant"},
	} {
		p, err := ParsePlatform(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParsePlatform(%q) = %v, %v; want error %q", tt.in, p, err, tt.err)
			}
			continue
		}
		if err != nil || p.String() != tt.want {
			t.Errorf("ParsePlatform(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
		}
	}
}

// Another platform than the host's is refused, with the reason, for every
// runtime made of this machine's binaries.
func TestOtherPlatformRefused(t *testing.T) {
	other := Platform{Arch: "arm64"}
	if HostPlatform() == other {
		other = Platform{Arch: "amd64"}
	}
	for rt, file := range map[string]string{RuntimePython: "func.py", RuntimeNode: "func.js", RuntimeShell: "func.sh"} {
		for _, base := range []string{BaseAuto, BaseHost, BaseDebian} {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{file: "x\n"})
			_, _, err := Build(context.Background(), io.Discard, BuildOptions{Dir: dir, Ref: "x:1", Platform: other, Base: BaseOptions{Source: base}})
			if err == nil || !strings.Contains(err.Error(), "cannot build") || !strings.Contains(err.Error(), other.String()) {
				t.Errorf("%s --base %s for %s: %v", rt, base, other, err)
			}
		}
	}
}

// A Go function cross-compiles, and the image says which platform it is for.
func TestGoCrossPlatform(t *testing.T) {
	if _, err := goTool(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"go.mod": "module x\n\ngo 1.21\n", "main.go": "package main\n\nfunc main() {}\n"})
	other := Platform{Arch: "arm64"}
	if HostPlatform() == other {
		other = Platform{Arch: "amd64"}
	}
	var buf bytes.Buffer
	if _, _, err := Build(context.Background(), &buf, BuildOptions{Dir: dir, Ref: "x:1", Platform: other}); err != nil {
		t.Fatal(err)
	}
	l := parseArchive(t, buf.Bytes())
	if l.config.Architecture != other.Arch || l.index.Manifests[0].Platform.Architecture != other.Arch {
		t.Errorf("config arch %q, index arch %q, want %s", l.config.Architecture, l.index.Manifests[0].Platform.Architecture, other.Arch)
	}
	bin := layerEntries(t, l, 1)["function"]
	f, err := elf.NewFile(bytes.NewReader(bin.data))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != other.elfMachine() {
		t.Errorf("binary is for %s, want %s", f.Machine, other.elfMachine())
	}
}

// The host base holds the interpreter at its own path, the loader and
// libraries it needs, and the trees the interpreter names (here one small
// package of the standard library, to keep the test fast); it is cached.
// That the whole base runs a function is the end-to-end tests' job.
func TestHostPythonBase(t *testing.T) {
	if _, err := hostPython.find(os.Getenv); err != nil {
		t.Skip(err)
	}
	h := hostPython
	var stdlib string
	h.trees = func(ctx context.Context, bin string) ([]string, error) {
		dirs, err := pythonTrees(ctx, bin)
		if err != nil {
			return nil, err
		}
		stdlib = dirs[0]
		return []string{filepath.Join(stdlib, "json")}, nil
	}
	cache := t.TempDir()
	var progress bytes.Buffer
	c, bin, err := hostBase(context.Background(), h, HostPlatform(), BaseOptions{CacheDir: cache, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(c.Path)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]*tar.Header{}
	for _, e := range readTar(t, bytes.NewReader(gunzip(t, data))) {
		names[strings.TrimSuffix(e.hdr.Name, "/")] = e.hdr
	}
	for _, want := range []string{bin[1:], filepath.Join(stdlib, "json", "__init__.py")[1:], "etc/passwd", "tmp"} {
		if _, ok := names[want]; !ok {
			t.Errorf("base lacks %s", want)
		}
	}
	libc, loader := false, false
	for n, hdr := range names {
		libc = libc || strings.Contains(n, "libc.so")
		loader = loader || strings.Contains(n, "ld-linux")
		if strings.HasSuffix(n, ".opt-1.pyc") {
			t.Errorf("base holds %s", n)
		}
		if hdr.Typeflag == tar.TypeSymlink && strings.HasPrefix(hdr.Linkname, "/") {
			if _, ok := names[strings.TrimPrefix(hdr.Linkname, "/")]; !ok {
				if _, err := os.Stat(hdr.Linkname); err != nil {
					t.Errorf("symlink %s -> %s dangles", n, hdr.Linkname)
				}
			}
		}
	}
	if !libc || !loader {
		t.Errorf("base has libc %v, loader %v", libc, loader)
	}

	progress.Reset()
	again, _, err := hostBase(context.Background(), h, HostPlatform(), BaseOptions{CacheDir: cache, Progress: &progress})
	if err != nil || again.Digest != c.Digest || !strings.Contains(progress.String(), "using cached") {
		t.Errorf("second build: %v, digest %s vs %s, progress %q", err, again.Digest, c.Digest, progress.String())
	}
}

// A library this machine lacks drops the extension module that needs it
// rather than failing the base.
func TestCollectorDropsModuleWithMissingLibrary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector(HostPlatform().elfMachine())
	c.libDirs = []string{t.TempDir()} // finds nothing
	err = c.addELF(self, false)
	f, ferr := elf.Open(self)
	if ferr != nil {
		t.Fatal(ferr)
	}
	libs, _ := f.ImportedLibraries()
	f.Close()
	if len(libs) == 0 {
		if err != nil {
			t.Errorf("static test binary: %v", err)
		}
		return
	}
	var skip errSkip
	if !errors.As(err, &skip) || len(c.files) != 0 {
		t.Errorf("err %v, %d files collected", err, len(c.files))
	}
}

// A {digest} tag names the image by its content: the same source gives the
// same name, and the name is in the archive for containerd to import.
func TestDigestTag(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"func.sh": "cat\n"})
	if _, err := findBusybox(); err != nil {
		t.Skip(err)
	}
	var a, b bytes.Buffer
	d1, _, err := Build(context.Background(), &a, BuildOptions{Dir: dir, Ref: "kiln.local/app/fn:" + DigestTag})
	if err != nil {
		t.Fatal(err)
	}
	d2, _, err := Build(context.Background(), &b, BuildOptions{Dir: dir, Ref: "kiln.local/app/fn:" + DigestTag})
	if err != nil || d1 != d2 {
		t.Fatalf("rebuild: %v, %s vs %s", err, d1, d2)
	}
	want := "kiln.local/app/fn:" + strings.TrimPrefix(d1, "sha256:")[:12]
	if got := ResolveRef("kiln.local/app/fn:"+DigestTag, d1); got != want {
		t.Errorf("ResolveRef = %s, want %s", got, want)
	}
	l := parseArchive(t, a.Bytes())
	if got := l.index.Manifests[0].Annotations[AnnotationImageName]; got != want {
		t.Errorf("archive names %q, want %q", got, want)
	}
}
