package imagebuild

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	nodefdk "github.com/kiln-run/kiln/images/node"
	pythonfdk "github.com/kiln-run/kiln/images/python"
	shellfdk "github.com/kiln-run/kiln/images/shell"
)

// Runtimes kiln build knows.
const (
	RuntimeGo     = "go"
	RuntimePython = "python"
	RuntimeNode   = "node"
	RuntimeShell  = "shell"
)

// Runtimes lists the runtime names, for help texts and validation.
func Runtimes() []string { return []string{RuntimeGo, RuntimePython, RuntimeNode, RuntimeShell} }

// Debian bases of the interpreted runtimes. Only the interpreter is
// installed: its recommends pull in compilers and docs a function does
// not need.
var (
	pythonBase = DebianBase{Name: "python", Packages: []string{"python3"}}
	nodeBase   = DebianBase{Name: "node", Packages: []string{"nodejs"}}
)

// Where the pieces of a function image live.
const (
	functionDir = "function"
	fdkDir      = "fdk"
)

// BuildOptions describes one function image build.
type BuildOptions struct {
	// Dir holds the function's source.
	Dir string
	// Ref names the image.
	Ref string
	// Runtime is one of Runtimes(); empty means DetectRuntime(Dir).
	Runtime string
	// Env is appended to the image's environment.
	Env []string
	// Base says where the python and node bases come from and are kept.
	Base BaseOptions
	// Progress gets human-readable lines; nil discards them.
	Progress io.Writer
	// Platform to build for; the zero value is this machine's. Go
	// cross-compiles to any linux platform; the other runtimes take
	// binaries of this machine and refuse other platforms.
	Platform Platform

	// debianBase builds or fetches a base; tests replace debootstrap.
	debianBase func(ctx context.Context, b DebianBase, opts BaseOptions) (CachedBase, error)
}

// Build writes the function image archive to w and returns its manifest
// digest and the runtime it built for.
func Build(ctx context.Context, w io.Writer, opts BuildOptions) (dgst, rt string, err error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Base.Progress == nil {
		opts.Base.Progress = opts.Progress
	}
	if opts.debianBase == nil {
		opts.debianBase = func(ctx context.Context, b DebianBase, o BaseOptions) (CachedBase, error) { return b.Base(ctx, o) }
	} else if opts.Base.Source == "" {
		// A test that fakes debootstrap means the Debian base.
		opts.Base.Source = BaseDebian
	}
	if opts.Platform.Arch == "" {
		opts.Platform = HostPlatform()
	}
	if opts.Base.Source != "" && !slices.Contains(BaseSources(), opts.Base.Source) {
		return "", "", fmt.Errorf("unknown base %q: want one of %s", opts.Base.Source, strings.Join(BaseSources(), ", "))
	}
	if _, err := refTag(opts.Ref); err != nil {
		return "", "", err
	}
	abs, err := filepath.Abs(opts.Dir)
	if err != nil {
		return "", "", err
	}
	if fi, err := os.Stat(abs); err != nil {
		return "", "", err
	} else if !fi.IsDir() {
		return "", "", fmt.Errorf("%s is not a directory", opts.Dir)
	}
	opts.Dir = abs
	rt = opts.Runtime
	if rt == "" {
		if rt, err = DetectRuntime(abs); err != nil {
			return "", "", err
		}
		fmt.Fprintf(opts.Progress, "detected runtime %s in %s\n", rt, abs)
	}
	switch rt {
	case RuntimeGo:
		dgst, err = goFunctionImage(ctx, w, abs, opts.Ref, opts.Env, opts.Platform, opts.Progress)
	case RuntimePython:
		dgst, err = pythonImage(ctx, w, opts)
	case RuntimeNode:
		dgst, err = nodeImage(ctx, w, opts)
	case RuntimeShell:
		dgst, err = shellImage(w, opts)
	default:
		return "", "", fmt.Errorf("unknown runtime %q: want one of %s", rt, strings.Join(Runtimes(), ", "))
	}
	return dgst, rt, err
}

// DetectRuntime guesses a source tree's runtime from its files, in the
// order go, python, node, shell: a Go module may carry helper scripts, and
// a node package may carry shell scripts, but not the other way round.
func DetectRuntime(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	has := map[string]bool{}
	exts := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		has[e.Name()] = true
		exts[filepath.Ext(e.Name())] = true
	}
	switch {
	case has["go.mod"] || exts[".go"]:
		return RuntimeGo, nil
	case has["requirements.txt"] || exts[".py"]:
		return RuntimePython, nil
	case has["package.json"] || exts[".js"] || exts[".mjs"] || exts[".cjs"]:
		return RuntimeNode, nil
	case exts[".sh"]:
		return RuntimeShell, nil
	}
	return "", fmt.Errorf("cannot tell the runtime of %s (no go.mod or *.go, *.py, package.json or *.js, *.sh): pass --runtime", dir)
}

// entryFile picks the function's entry point in dir: the first of
// candidates that exists, else the only file with one of exts.
func entryFile(dir string, candidates []string, exts ...string) (string, error) {
	for _, c := range candidates {
		if fi, err := os.Stat(filepath.Join(dir, c)); err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(exts, filepath.Ext(e.Name())) {
			found = append(found, e.Name())
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return "", fmt.Errorf("no entry point in %s: want one of %s, or a single %s file (found %d)",
		dir, strings.Join(candidates, ", "), strings.Join(exts, "/"), len(found))
}

// functionFiles is the source tree under /function. VCS metadata stays
// out: it is large, changes with every commit and would churn the digest.
func functionFiles(dir string) ([]File, error) {
	files, err := LayerFromDir(dir, ".git")
	if err != nil {
		return nil, err
	}
	out := []File{{Path: functionDir, Dir: true, Mode: 0o755}}
	for _, f := range files {
		f.Path = functionDir + "/" + f.Path
		out = append(out, f)
	}
	return out, nil
}

// interpretedImage writes the image of a python or node function: the
// cached Debian base, the FDK, and the function, each its own layer so a
// rebuild after a code change only ships the last one.
func interpretedImage(ctx context.Context, w io.Writer, opts BuildOptions, base DebianBase, host hostInterpreter, fdkName string, fdk []byte, cfg Config) (string, error) {
	if fdk == nil {
		return "", fmt.Errorf("the %s FDK is missing from this kiln build", base.Name)
	}
	fn, err := functionFiles(opts.Dir)
	if err != nil {
		return "", err
	}
	b, interp, err := chooseBase(ctx, opts, base, host)
	if err != nil {
		return "", err
	}
	if interp != "" {
		cfg.Entrypoint[0] = interp
	}
	cfg.Platform = opts.Platform
	fdkLayer, err := NewLayer([]File{{Path: fdkDir + "/" + fdkName, Mode: 0o644, Data: fdk}})
	if err != nil {
		return "", err
	}
	fnLayer, err := NewLayer(fn)
	if err != nil {
		return "", err
	}
	cfg.Env = withDefaultPath(append(cfg.Env, opts.Env...))
	cfg.WorkingDir = "/" + functionDir
	fmt.Fprintf(opts.Progress, "writing image %s\n", displayRef(opts.Ref))
	dgst, err := WriteArchiveBlobs(w, opts.Ref, cfg, b.Layer(), MemoryLayer(fdkLayer), MemoryLayer(fnLayer))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(opts.Progress, "image %s %s\n", ResolveRef(opts.Ref, dgst), dgst)
	return dgst, nil
}

func pythonImage(ctx context.Context, w io.Writer, opts BuildOptions) (string, error) {
	entry, err := entryFile(opts.Dir, []string{"func.py", "main.py"}, ".py")
	if err != nil {
		return "", err
	}
	cfg := Config{
		Entrypoint: []string{"/usr/bin/python3", "/" + fdkDir + "/fdk.py", "/" + functionDir + "/" + entry},
		Env: []string{
			"PYTHONPATH=/" + functionDir + ":/" + fdkDir,
			"PYTHONUNBUFFERED=1",
			// The root filesystem is read-only in kiln's containers.
			"PYTHONDONTWRITEBYTECODE=1",
			"LANG=C.UTF-8",
		},
	}
	return interpretedImage(ctx, w, opts, pythonBase, hostPython, "fdk.py", pythonfdk.FDK(), cfg)
}

func nodeImage(ctx context.Context, w io.Writer, opts BuildOptions) (string, error) {
	candidates := []string{"func.js", "index.js"}
	if main := packageMain(opts.Dir); main != "" {
		candidates = append([]string{main}, candidates...)
	}
	entry, err := entryFile(opts.Dir, candidates, ".js", ".cjs")
	if err != nil {
		return "", err
	}
	cfg := Config{
		Entrypoint: []string{"/usr/bin/node", "/" + fdkDir + "/fdk.js", "/" + functionDir + "/" + entry},
		Env: []string{
			"NODE_PATH=/" + fdkDir + ":/" + functionDir + "/node_modules",
			"NODE_ENV=production",
			"LANG=C.UTF-8",
		},
	}
	return interpretedImage(ctx, w, opts, nodeBase, hostNode, "fdk.js", nodefdk.FDK(), cfg)
}

// chooseBase picks the base of an interpreted image (see BaseAuto) and
// returns it with the interpreter's path in it when that is not Debian's.
func chooseBase(ctx context.Context, opts BuildOptions, debian DebianBase, host hostInterpreter) (CachedBase, string, error) {
	src := opts.Base.Source
	if src == "" || src == BaseAuto {
		src = autoBase(debian, opts)
	}
	if src == BaseHost {
		return hostBase(ctx, host, opts.Platform, opts.Base)
	}
	if err := needHost("a "+debian.Name+" image with --base debian (debootstrap runs this machine's architecture)", opts.Platform); err != nil {
		return CachedBase{}, "", err
	}
	b, err := opts.debianBase(ctx, debian, opts.Base)
	return b, "", err
}

// autoBase is the Debian base when it is cached or can be built here, and
// the host base otherwise, saying why: a user without root still builds.
func autoBase(b DebianBase, opts BuildOptions) string {
	if opts.Platform != HostPlatform() {
		return BaseDebian // refused with its reason by chooseBase
	}
	release := opts.Base.Release
	if release == "" {
		release = DefaultRelease
	}
	cache := opts.Base.CacheDir
	if cache == "" {
		cache = DefaultCacheDir()
	}
	key := fmt.Sprintf("%s-%s-%s", b.Name, release, opts.Platform.Arch)
	dir := filepath.Join(cache, "bases")
	if _, ok := readCachedBase(filepath.Join(dir, key+".tar.gz"), filepath.Join(dir, key+".json"), b.Packages); ok {
		return BaseDebian
	}
	why := ""
	if os.Geteuid() != 0 {
		why = "building it needs root"
	} else if _, err := findTool("debootstrap"); err != nil {
		why = "building it needs debootstrap"
	} else if _, err := debianMirror(opts.Base.Mirror, release); err != nil {
		why = "no Debian mirror is configured"
	}
	if why == "" {
		return BaseDebian
	}
	fmt.Fprintf(opts.Progress, "the Debian %s base is not cached in %s and %s: using this machine's %s instead (--base host; --base debian to insist)\n",
		b.Name, dir, why, b.Name)
	return BaseHost
}

// packageMain is package.json's "main", when it names a file in dir.
func packageMain(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct {
		Main string `json:"main"`
	}
	if json.Unmarshal(data, &pkg) != nil || pkg.Main == "" {
		return ""
	}
	main := filepath.Clean(filepath.FromSlash(pkg.Main))
	if filepath.IsAbs(main) || strings.HasPrefix(main, "..") {
		return ""
	}
	return filepath.ToSlash(main)
}

// shellImage writes a busybox image that runs a script in the default
// format: the request body on stdin, the response on stdout. The
// busybox layer comes first so every shell function shares that blob.
func shellImage(w io.Writer, opts BuildOptions) (string, error) {
	entry, err := entryFile(opts.Dir, []string{"func.sh", "run.sh"}, ".sh")
	if err != nil {
		return "", err
	}
	if err := needHost("a shell image (busybox is this machine's)", opts.Platform); err != nil {
		return "", err
	}
	bb, err := BusyboxFiles()
	if err != nil {
		return "", err
	}
	fn, err := functionFiles(opts.Dir)
	if err != nil {
		return "", err
	}
	// The script starts through run.awk, which renames the FN_HEADER_*
	// variables a shell would drop; see images/shell/run.awk.
	cfg := Config{
		Entrypoint: []string{"/bin/busybox", "awk", "-f", "/" + fdkDir + "/run.awk", "/" + functionDir + "/" + entry},
		Env:        withDefaultPath(opts.Env),
		WorkingDir: "/" + functionDir,
	}
	base := append(baseFiles(), bb...)
	base = append(base, File{Path: fdkDir + "/run.awk", Mode: 0o644, Data: shellfdk.Launcher()})
	fmt.Fprintf(opts.Progress, "writing image %s\n", displayRef(opts.Ref))
	dgst, err := WriteArchive(w, opts.Ref, cfg, base, fn)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(opts.Progress, "image %s %s\n", ResolveRef(opts.Ref, dgst), dgst)
	return dgst, nil
}

// BusyboxFiles is a busybox userland: the build machine's static busybox
// (Debian package busybox-static) at /bin/busybox and a symlink to it for
// every applet, at the path busybox itself lists for it. A dynamically
// linked busybox is refused: the image has no C library for it.
func BusyboxFiles() ([]File, error) {
	path, err := findBusybox()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(data); err != nil {
		return nil, fmt.Errorf("%s: %w; install the Debian package busybox-static", path, err)
	}
	out, err := exec.Command(path, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", path, err)
	}
	files := []File{{Path: "bin/busybox", Mode: 0o755, Data: data}}
	seen := map[string]bool{"bin/busybox": true}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	for _, a := range applets {
		a = strings.Trim(a, "/")
		dir := filepath.Dir(a)
		if seen[a] || !slices.Contains([]string{"bin", "sbin", "usr/bin", "usr/sbin"}, dir) {
			continue
		}
		seen[a] = true
		files = append(files, File{Path: a, Symlink: "/bin/busybox"})
	}
	if !seen["bin/sh"] {
		return nil, fmt.Errorf("%s has no sh applet", path)
	}
	return files, nil
}

func findBusybox() (string, error) {
	if p := os.Getenv("KILN_BUSYBOX"); p != "" {
		return p, nil
	}
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		return p, nil
	}
	return "", errors.New("busybox not found: install the Debian package busybox-static (or set KILN_BUSYBOX)")
}

// checkStatic refuses an ELF binary that asks for a program interpreter,
// that is, one that needs a dynamic loader and libraries.
func checkStatic(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not an ELF binary: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}
