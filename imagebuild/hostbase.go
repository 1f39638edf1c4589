package imagebuild

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Where a python or node base comes from.
const (
	// BaseAuto takes the Debian base when it is cached or can be built
	// (root, debootstrap, a mirror) and the host base otherwise.
	BaseAuto = "auto"
	// BaseDebian is a debootstrapped Debian release (needs root once).
	BaseDebian = "debian"
	// BaseHost is made of this machine's own interpreter, its shared
	// libraries and its standard library: no root, no network, seconds.
	BaseHost = "host"
)

// BaseSources lists the base sources, for help texts and validation.
func BaseSources() []string { return []string{BaseAuto, BaseDebian, BaseHost} }

// hostRecipe changes whenever the way a host base is collected changes.
const hostRecipe = 1

// hostInterpreter is an interpreter of this machine to build a base from.
type hostInterpreter struct {
	name string
	// env overrides the search, e.g. KILN_PYTHON.
	env        string
	candidates []string
	// trees are directories (beyond the binary and its libraries) the
	// interpreter reads at run time; asked of the interpreter itself.
	trees func(ctx context.Context, bin string) ([]string, error)
	// skip names directories of those trees a function does not need.
	skip []string
}

var (
	hostPython = hostInterpreter{
		name: "python", env: "KILN_PYTHON",
		candidates: []string{"/usr/bin/python3", "/usr/local/bin/python3", "python3"},
		trees:      pythonTrees,
		// Third-party packages stay out (vendor them into the function),
		// and so do the test suite, GUI toolkits and bundled wheels.
		skip: []string{"site-packages", "dist-packages", "test", "idlelib", "tkinter",
			"turtledemo", "ensurepip", "lib2to3", "config-3*"},
	}
	hostNode = hostInterpreter{
		name: "node", env: "KILN_NODE",
		candidates: []string{"/usr/bin/node", "/usr/local/bin/node", "node", "nodejs"},
		trees:      func(context.Context, string) ([]string, error) { return nil, nil },
	}
)

// find returns the interpreter's path as found and as resolved.
func (h hostInterpreter) find(getenv func(string) string) (string, error) {
	cands := h.candidates
	if p := getenv(h.env); p != "" {
		cands = []string{p}
	}
	for _, c := range cands {
		p := c
		if !strings.Contains(c, "/") {
			lp, err := exec.LookPath(c)
			if err != nil {
				continue
			}
			p = lp
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s interpreter on this machine (looked for %s; set %s): install it, or use --base debian",
		h.name, strings.Join(cands, ", "), h.env)
}

// pythonTrees asks the interpreter where its standard library and its
// extension modules are: they are found relative to the binary, so the
// image keeps them at the same paths.
func pythonTrees(ctx context.Context, bin string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-I", "-S", "-c",
		"import sysconfig\nprint(sysconfig.get_path('stdlib'))\nprint(sysconfig.get_config_var('DESTSHARED') or '')").Output()
	if err != nil {
		return nil, fmt.Errorf("asking %s for its standard library: %w", bin, err)
	}
	var dirs []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" && filepath.IsAbs(l) {
			dirs = append(dirs, filepath.Clean(l))
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%s named no standard library", bin)
	}
	return dirs, nil
}

// hostBase returns the base of h for plat from the cache, collecting it
// first when the interpreter changed since. The entrypoint's interpreter
// path is returned with it, since it is this machine's, not Debian's.
func hostBase(ctx context.Context, h hostInterpreter, plat Platform, opts BaseOptions) (CachedBase, string, error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if err := needHost("a "+h.name+" image with --base host", plat); err != nil {
		return CachedBase{}, "", err
	}
	found, err := h.find(os.Getenv)
	if err != nil {
		return CachedBase{}, "", err
	}
	bin, err := filepath.EvalSymlinks(found)
	if err != nil {
		return CachedBase{}, "", err
	}
	bin, _ = filepath.Abs(bin)
	fi, err := os.Stat(bin)
	if err != nil {
		return CachedBase{}, "", err
	}
	// The key changes when the interpreter is upgraded; a change to its
	// libraries alone (a libc security update) is caught by the recipe
	// only, which is why the cached base says when it was collected.
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%d\x00%d\x00%d", bin, fi.Size(), fi.ModTime().UnixNano(), hostRecipe)))
	key := fmt.Sprintf("host-%s-%s-%s", h.name, plat.Arch, hex.EncodeToString(sum[:6]))

	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir()
	}
	dir := filepath.Join(opts.CacheDir, "bases")
	layerPath := filepath.Join(dir, key+".tar.gz")
	metaPath := filepath.Join(dir, key+".json")
	if c, ok := readCachedBase(layerPath, metaPath, []string{bin}); ok && c.Recipe == baseRecipe {
		fmt.Fprintf(progress, "using cached %s base %s from this machine's %s (%s)\n", h.name, shortDigest(c.Digest), bin, fmtSize(c.Size))
		return c, bin, nil
	}

	start := time.Now()
	fmt.Fprintf(progress, "collecting the %s base from this machine: %s, its libraries", h.name, bin)
	trees, err := h.trees(ctx, bin)
	if err != nil {
		fmt.Fprintln(progress)
		return CachedBase{}, "", err
	}
	if len(trees) > 0 {
		fmt.Fprintf(progress, " and %s", strings.Join(trees, ", "))
	}
	fmt.Fprintln(progress)
	col := newCollector(plat.elfMachine())
	if err := col.addELF(bin, true); err != nil {
		return CachedBase{}, "", err
	}
	if found != bin {
		// Keep the name people know (/usr/bin/python3) working too.
		if _, err := col.addPath(found); err != nil {
			return CachedBase{}, "", err
		}
	}
	for _, t := range trees {
		if err := col.addTree(t, h.skip, progress); err != nil {
			return CachedBase{}, "", err
		}
	}
	// With the cache the loader finds libraries kept outside the default
	// directories (ld.so.conf's), as it does on this machine.
	if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
		if _, err := col.addPath("/etc/ld.so.cache"); err != nil {
			return CachedBase{}, "", err
		}
	}
	files := baseFiles()
	have := map[string]bool{}
	for _, f := range files {
		have[f.Path] = true
	}
	for _, f := range col.list() {
		if f.Path = strings.TrimPrefix(f.Path, "/"); !have[f.Path] {
			files = append(files, f)
		}
	}
	layer, err := newLayer(files, gzip.DefaultCompression)
	if err != nil {
		return CachedBase{}, "", fmt.Errorf("the %s base: %w", h.name, err)
	}
	c := CachedBase{Digest: layer.Digest, DiffID: layer.DiffID, Size: int64(len(layer.Blob)),
		Arch: plat.Arch, Packages: []string{bin}, Mirror: "host", Recipe: baseRecipe,
		BuiltAt: time.Now().UTC(), BuildSecs: time.Since(start).Seconds()}
	fmt.Fprintf(progress, "collected the %s base %s (%d files, %s) in %s\n", h.name, shortDigest(c.Digest),
		len(files), fmtSize(c.Size), time.Since(start).Round(10*time.Millisecond))
	// A cache that cannot be written only costs the next build the same
	// seconds again; the layer is served from memory then.
	if err := saveHostBase(dir, layerPath, metaPath, layer.Blob, c); err != nil {
		fmt.Fprintf(progress, "not caching the %s base: %v\n", h.name, err)
		blob := layer.Blob
		c.mem = &blob
		return c, bin, nil
	}
	c.Path = layerPath
	return c, bin, nil
}

func saveHostBase(dir, layerPath, metaPath string, blob []byte, c CachedBase) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(layerPath, blob); err != nil {
		return err
	}
	meta, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(metaPath, append(meta, '\n'))
}

// collector gathers files of this machine into a layer at the same paths,
// recording every symlink on the way so paths resolve in the image as
// they do here.
type collector struct {
	machine elf.Machine
	files   map[string]File // by clean absolute path
	elfDone map[string]bool
	// libDirs is where the dynamic loader looks after RPATH/RUNPATH.
	libDirs []string
}

func newCollector(m elf.Machine) *collector {
	return &collector{machine: m, files: map[string]File{}, elfDone: map[string]bool{}, libDirs: loaderDirs()}
}

func (c *collector) list() []File {
	out := make([]File, 0, len(c.files))
	for _, f := range c.files {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// addPath adds the file at p and the symlinks leading to it, and returns
// its resolved path. Intermediate directories come from NewLayer.
func (c *collector) addPath(p string) (string, error) {
	real, err := c.resolve(p, 0)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		c.dir(real, fi.Mode())
		return real, nil
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", real)
	}
	if _, ok := c.files[real]; !ok {
		data, err := os.ReadFile(real)
		if err != nil {
			return "", err
		}
		c.files[real] = File{Path: real, Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), Data: data}
	}
	return real, nil
}

func (c *collector) dir(p string, mode fs.FileMode) {
	if _, ok := c.files[p]; !ok && p != "/" {
		c.files[p] = File{Path: p, Dir: true, Mode: mode & fs.ModePerm}
	}
}

// resolve walks p component by component, recording each symlink met
// (including those in directory names, as /lib -> usr/lib on merged-/usr
// systems) and returns the path with none left.
func (c *collector) resolve(p string, depth int) (string, error) {
	if depth > 40 {
		return "", fmt.Errorf("%s: too many levels of symbolic links", p)
	}
	p = filepath.Clean(p)
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s: not an absolute path", p)
	}
	cur := "/"
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, part := range parts {
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if fi.IsDir() && i < len(parts)-1 {
				c.dir(next, fi.Mode())
			}
			cur = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			return "", err
		}
		if _, ok := c.files[next]; !ok {
			c.files[next] = File{Path: next, Symlink: target}
		}
		abs := target
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(cur, target)
		}
		resolved, err := c.resolve(abs, depth+1)
		if err != nil {
			return "", err
		}
		cur = resolved
	}
	return cur, nil
}

// addELF adds an ELF file and, recursively, the program interpreter and
// libraries it needs, found the way the dynamic loader finds them. A
// library that cannot be found fails the build when required (the
// interpreter itself) and drops the file otherwise (an extension module
// for a library this machine lacks), since the module could not load here
// either.
func (c *collector) addELF(p string, required bool) error {
	if c.elfDone[p] {
		return nil
	}
	need, err := c.elfNeeds(p, map[string]bool{})
	if err != nil {
		if required {
			return err
		}
		return errSkip{err}
	}
	for _, n := range append(need, p) {
		if _, err := c.addPath(n); err != nil {
			return err
		}
		c.elfDone[n] = true
	}
	return nil
}

type errSkip struct{ error }

// elfNeeds lists the files p needs to run: its interpreter and libraries,
// transitively, by the path they are found at.
func (c *collector) elfNeeds(p string, seen map[string]bool) ([]string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if c.machine != elf.EM_NONE && f.Machine != c.machine {
		return nil, fmt.Errorf("%s is for %s, not %s", p, f.Machine, c.machine)
	}
	var out []string
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(prog.Open())
		if err != nil {
			return nil, fmt.Errorf("%s: reading its interpreter: %w", p, err)
		}
		out = append(out, string(bytes.TrimRight(b, "\x00")))
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	rpath, _ := f.DynString(elf.DT_RPATH)
	origin := filepath.Dir(p)
	var dirs []string
	expand := func(list []string) {
		for _, e := range list {
			for _, d := range strings.Split(e, ":") {
				if d == "" {
					continue
				}
				d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", origin), "$ORIGIN", origin)
				dirs = append(dirs, d)
			}
		}
	}
	if len(runpath) == 0 {
		expand(rpath)
	}
	expand(runpath)
	dirs = append(dirs, c.libDirs...)
	for _, lib := range libs {
		found := ""
		if strings.Contains(lib, "/") {
			found = lib
		} else {
			for _, d := range dirs {
				cand := filepath.Join(d, lib)
				if c.matches(cand) {
					found = cand
					break
				}
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s needs %s, which is not in %s", p, lib, strings.Join(dirs, ":"))
		}
		if seen[found] || c.elfDone[found] {
			continue
		}
		seen[found] = true
		out = append(out, found)
		more, err := c.elfNeeds(found, seen)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}
	return out, nil
}

// matches reports whether path is an ELF file of the collector's machine:
// a 32-bit libc in a multilib directory must not satisfy a 64-bit binary.
func (c *collector) matches(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return c.machine == elf.EM_NONE || f.Machine == c.machine
}

// addTree adds a directory tree, leaving out directories named in skip
// (globs, matched at any depth) and compiled bytecode of other
// optimization levels; ELF files bring their libraries.
func (c *collector) addTree(root string, skip []string, progress io.Writer) error {
	root, err := c.addPath(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var dropped []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		name := d.Name()
		if d.IsDir() {
			for _, s := range skip {
				if ok, _ := path.Match(s, name); ok {
					return filepath.SkipDir
				}
			}
			c.dir(p, 0o755)
			return nil
		}
		if strings.Contains(name, ".opt-") && strings.HasSuffix(name, ".pyc") {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if _, err := c.addPath(p); err != nil {
				// A link to what this machine does not have (Debian's
				// sitecustomize.py pointing into /etc) is left out.
				dropped = append(dropped, p)
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if strings.HasSuffix(name, ".so") || strings.Contains(name, ".so.") {
			if err := c.addELF(p, false); err != nil {
				var skip errSkip
				if errors.As(err, &skip) {
					dropped = append(dropped, p)
					return nil
				}
				return err
			}
			return nil
		}
		_, err = c.addPath(p)
		return err
	})
	if len(dropped) > 0 {
		fmt.Fprintf(progress, "  left out %d file(s) whose libraries this machine lacks, e.g. %s\n", len(dropped), dropped[0])
	}
	return err
}

// loaderDirs is where glibc's loader looks for libraries without an
// RPATH: the directories of /etc/ld.so.conf (and its includes), then the
// defaults for the multiarch triplets Debian uses.
func loaderDirs() []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		d = filepath.Clean(d)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	var readConf func(file string, depth int)
	readConf = func(file string, depth int) {
		if depth > 5 {
			return
		}
		f, err := os.Open(file)
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = strings.TrimSpace(line[:i])
			}
			if line == "" {
				continue
			}
			if rest, ok := strings.CutPrefix(line, "include "); ok {
				matches, _ := filepath.Glob(strings.TrimSpace(rest))
				sort.Strings(matches)
				for _, m := range matches {
					readConf(m, depth+1)
				}
				continue
			}
			if filepath.IsAbs(line) {
				add(line)
			}
		}
	}
	readConf("/etc/ld.so.conf", 0)
	for _, t := range []string{"x86_64-linux-gnu", "aarch64-linux-gnu", "arm-linux-gnueabihf", "i386-linux-gnu",
		"powerpc64le-linux-gnu", "s390x-linux-gnu", "riscv64-linux-gnu"} {
		add("/lib/" + t)
		add("/usr/lib/" + t)
	}
	for _, d := range []string{"/lib64", "/usr/lib64", "/lib", "/usr/lib"} {
		add(d)
	}
	return dirs
}
