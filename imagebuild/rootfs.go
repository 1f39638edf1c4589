package imagebuild

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultRelease is the Debian release the python and node bases are
// built from.
const DefaultRelease = "bookworm"

// baseRecipe changes whenever the way a base is built changes, so caches
// built by an older kiln are rebuilt rather than trusted.
const baseRecipe = 1

// DebianBase describes a base rootfs kiln builds with debootstrap.
type DebianBase struct {
	// Name keys the cache together with the release and architecture.
	Name string
	// Packages are installed with apt-get on top of the minbase variant.
	Packages []string
}

// BaseOptions says where a base comes from and where it is kept.
type BaseOptions struct {
	// CacheDir holds built bases; see DefaultCacheDir.
	CacheDir string
	// Release is the Debian release; DefaultRelease when empty.
	Release string
	// Mirror is the Debian archive URL; when empty it is taken from
	// KILN_DEBIAN_MIRROR or the build machine's apt sources.
	Mirror string
	// Progress gets a line per stage and a heartbeat while a stage runs.
	Progress io.Writer
	// Source is one of BaseSources(); empty means BaseAuto.
	Source string
}

// CachedBase is a built base layer and what it was built from.
type CachedBase struct {
	Path      string    `json:"-"`
	Digest    string    `json:"digest"`
	DiffID    string    `json:"diff_id"`
	Size      int64     `json:"size"`
	Release   string    `json:"release"`
	Arch      string    `json:"arch"`
	Packages  []string  `json:"packages"`
	Mirror    string    `json:"mirror"`
	Recipe    int       `json:"recipe"`
	BuiltAt   time.Time `json:"built_at"`
	BuildSecs float64   `json:"build_seconds"`

	// mem holds the layer of a base that could not be cached on disk.
	mem *[]byte
}

// Layer returns the base as a layer to write into an image.
func (b CachedBase) Layer() BlobLayer {
	if b.mem != nil {
		return MemoryLayer(Layer{Blob: *b.mem, Digest: b.Digest, DiffID: b.DiffID})
	}
	return FileLayer(b.Path, b.Digest, b.DiffID, b.Size)
}

// DefaultCacheDir is where built bases are kept unless told otherwise;
// see CacheDirFrom.
func DefaultCacheDir() string { return CacheDirFrom(os.Getenv) }

// CacheDirFrom picks the base cache from an environment: $KILN_CACHE_DIR,
// else build-cache in $KILN_DATA_DIR (kilnd's data dir, when this machine
// runs kilnd from the environment), else $XDG_CACHE_HOME/kiln, else
// ~/.cache/kiln.
func CacheDirFrom(getenv func(string) string) string {
	if d := getenv("KILN_CACHE_DIR"); d != "" {
		return d
	}
	if d := getenv("KILN_DATA_DIR"); d != "" {
		return filepath.Join(d, "build-cache")
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "kiln")
	}
	if home := getenv("HOME"); home != "" {
		return filepath.Join(home, ".cache", "kiln")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".cache", "kiln")
	}
	return filepath.Join(os.TempDir(), "kiln-cache")
}

// Base returns the cached base layer, building it first when the cache
// has none: debootstrap's minbase variant of the release, the packages
// installed in a chroot, documentation and package lists trimmed, the
// tree stored as one gzip layer. Building takes minutes and needs root
// and the network to the Debian mirror; a cached base needs neither.
// Concurrent builders of one base wait for each other through a lock
// file, so a base is built once.
func (b DebianBase) Base(ctx context.Context, opts BaseOptions) (CachedBase, error) {
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	release := opts.Release
	if release == "" {
		release = DefaultRelease
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir()
	}
	key := fmt.Sprintf("%s-%s-%s", b.Name, release, runtime.GOARCH)
	dir := filepath.Join(opts.CacheDir, "bases")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return CachedBase{}, fmt.Errorf("base cache %s: %w", dir, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, key+".lock"), func() {
		fmt.Fprintf(progress, "waiting for another build of the %s base to finish\n", key)
	})
	if err != nil {
		return CachedBase{}, err
	}
	defer unlock()
	// Work dirs and partial tarballs of a build that was killed outright
	// (no defer ran) are only found here, under the lock.
	old, _ := filepath.Glob(filepath.Join(dir, "build-"+key+"-*"))
	for _, o := range old {
		removeBuildDir(o, progress)
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, key+".tar.gz.tmp-*"))
	for _, t := range tmps {
		os.Remove(t)
	}

	layerPath := filepath.Join(dir, key+".tar.gz")
	metaPath := filepath.Join(dir, key+".json")
	if c, ok := readCachedBase(layerPath, metaPath, b.Packages); ok {
		fmt.Fprintf(progress, "using cached %s base %s (%s, built %s)\n", key, shortDigest(c.Digest),
			fmtSize(c.Size), c.BuiltAt.Local().Format("2006-01-02 15:04"))
		return c, nil
	}

	mirror, err := debianMirror(opts.Mirror, release)
	if err != nil {
		return CachedBase{}, err
	}
	if os.Geteuid() != 0 {
		return CachedBase{}, fmt.Errorf("the %s base is not cached in %s yet and building it needs root "+
			"(debootstrap and chroot): run this build once as root, or point --cache-dir at a cache built by root", key, dir)
	}
	debootstrap, err := findTool("debootstrap")
	if err != nil {
		return CachedBase{}, fmt.Errorf("building the %s base needs debootstrap (Debian package debootstrap): %w", key, err)
	}

	start := time.Now()
	fmt.Fprintf(progress, "building the %s base once (debootstrap %s from %s, then apt-get install %s); this takes minutes, later builds reuse it from %s\n",
		key, release, mirror, strings.Join(b.Packages, " "), dir)
	work, err := os.MkdirTemp(dir, "build-"+key+"-")
	if err != nil {
		return CachedBase{}, err
	}
	root := filepath.Join(work, "rootfs")
	defer removeBuildDir(work, progress)
	logPath := filepath.Join(dir, key+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return CachedBase{}, err
	}
	defer logf.Close()
	run := &stageRunner{log: logf, logPath: logPath, progress: progress}

	if err := run.do(ctx, "debootstrap", debootstrap, "--variant=minbase", release, root, mirror); err != nil {
		return CachedBase{}, err
	}
	// debootstrap mounts /proc and /sys in the target and does not always
	// take them down again; nothing of the host may end up in the layer.
	if err := unmountUnder(root); err != nil {
		return CachedBase{}, err
	}
	if err := prepareChroot(root); err != nil {
		return CachedBase{}, err
	}
	aptEnv := []string{DefaultPath,
		"DEBIAN_FRONTEND=noninteractive", "LANG=C.UTF-8", "HOME=/root"}
	chroot, err := findTool("chroot")
	if err != nil {
		return CachedBase{}, err
	}
	for _, step := range [][]string{
		{"apt-get", "update", "-q"},
		append([]string{"apt-get", "install", "-y", "-q", "--no-install-recommends"}, b.Packages...),
		{"apt-get", "clean"},
	} {
		args := append([]string{root, "/usr/bin/env", "-i"}, aptEnv...)
		args = append(args, step...)
		if err := run.do(ctx, strings.Join(step[:2], " "), chroot, args...); err != nil {
			return CachedBase{}, err
		}
	}
	if err := unmountUnder(root); err != nil {
		return CachedBase{}, err
	}
	if err := trimRootfs(root); err != nil {
		return CachedBase{}, fmt.Errorf("trimming the %s base: %w", key, err)
	}

	fmt.Fprintf(progress, "writing the %s base layer\n", key)
	tmp, err := os.CreateTemp(dir, key+".tar.gz.tmp-")
	if err != nil {
		return CachedBase{}, err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	dgst, diffID, size, err := TarDirLayer(bw, root, "dev", "proc", "sys", "run", "tmp")
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		// Readable by all, so a cache root built can serve other users' builds.
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return CachedBase{}, fmt.Errorf("writing the %s base layer: %w", key, err)
	}
	c := CachedBase{Path: layerPath, Digest: dgst, DiffID: diffID, Size: size, Release: release,
		Arch: runtime.GOARCH, Packages: b.Packages, Mirror: mirror, Recipe: baseRecipe,
		BuiltAt: time.Now().UTC(), BuildSecs: time.Since(start).Seconds()}
	meta, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return CachedBase{}, err
	}
	// The layer is renamed into place before its metadata is written, so
	// metadata on disk always describes a complete layer.
	if err := os.Rename(tmp.Name(), layerPath); err != nil {
		return CachedBase{}, err
	}
	if err := writeFileAtomic(metaPath, append(meta, '\n')); err != nil {
		return CachedBase{}, err
	}
	fmt.Fprintf(progress, "built the %s base %s (%s) in %s\n", key, shortDigest(dgst), fmtSize(size),
		time.Since(start).Round(time.Second))
	return c, nil
}

// readCachedBase trusts a cached base whose metadata matches what would be
// built now and whose layer has the recorded size; the digest itself is
// checked when the layer is copied into an image.
func readCachedBase(layerPath, metaPath string, packages []string) (CachedBase, bool) {
	data, err := os.ReadFile(metaPath)
	if err != nil {
		return CachedBase{}, false
	}
	var c CachedBase
	if json.Unmarshal(data, &c) != nil || c.Recipe != baseRecipe || strings.Join(c.Packages, " ") != strings.Join(packages, " ") {
		return CachedBase{}, false
	}
	fi, err := os.Stat(layerPath)
	if err != nil || fi.Size() != c.Size {
		return CachedBase{}, false
	}
	c.Path = layerPath
	return c, true
}

// prepareChroot gives the chroot what apt-get needs to reach the mirror
// and keeps package scripts from starting services on the build machine.
func prepareChroot(root string) error {
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		resolv = nil
	}
	target := filepath.Join(root, "etc", "resolv.conf")
	_ = os.Remove(target) // may be a dangling symlink into the host's /run
	if err := os.WriteFile(target, resolv, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "usr", "sbin", "policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755)
}

// trimRootfs removes what a function never reads: documentation (but not
// the copyright files Debian asks to keep), manuals, translations, package
// lists and caches, logs, and the build machine's resolver config.
func trimRootfs(root string) error {
	globs := []string{
		"usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/lintian/*",
		"var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
		"var/log/*", "tmp/*", "var/tmp/*", "root/.cache", "usr/sbin/policy-rc.d",
	}
	for _, g := range globs {
		matches, err := filepath.Glob(filepath.Join(root, g))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	docs, err := filepath.Glob(filepath.Join(root, "usr/share/doc/*"))
	if err != nil {
		return err
	}
	for _, d := range docs {
		entries, err := os.ReadDir(d)
		if err != nil {
			// A symlink to another package's docs.
			continue
		}
		for _, e := range entries {
			if e.Name() != "copyright" {
				if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
					return err
				}
			}
		}
	}
	// The container runtime provides name resolution; an empty file keeps
	// the path present for runtimes that bind-mount over it.
	return os.WriteFile(filepath.Join(root, "etc", "resolv.conf"), nil, 0o644)
}

// stageRunner runs one build command, with its output in the build log and
// a heartbeat on progress so a minutes-long step does not look hung.
type stageRunner struct {
	log      io.Writer
	logPath  string
	progress io.Writer
}

func (s *stageRunner) do(ctx context.Context, what, name string, args ...string) error {
	fmt.Fprintf(s.progress, "  %s...\n", what)
	start := time.Now()
	cmd := exec.CommandContext(ctx, name, args...)
	// Subprocesses see no locale or proxy settings of the user's shell
	// beyond what the build needs.
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	tail := &lastLine{}
	cmd.Stdout = io.MultiWriter(s.log, tail)
	cmd.Stderr = cmd.Stdout
	// debootstrap and chroot run children of their own (dpkg, apt,
	// maintainer scripts): a cancelled build kills the whole process
	// group, or they would keep writing into the rootfs being removed and
	// hold the output pipe open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(s.progress, "  %s: %s so far: %s\n", what, time.Since(start).Round(time.Second), tail.get())
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s failed: %w; last output: %q (full log in %s)", what, err, tail.get(), s.logPath)
	}
	fmt.Fprintf(s.progress, "  %s done in %s\n", what, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// lastLine keeps the last non-empty line written to it.
type lastLine struct {
	mu      sync.Mutex
	partial []byte
	last    string
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := strings.IndexByte(string(l.partial), '\n')
		if i < 0 {
			break
		}
		if line := strings.TrimSpace(string(l.partial[:i])); line != "" {
			l.last = line
		}
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > 4096 {
		l.partial = l.partial[len(l.partial)-4096:]
	}
	return len(p), nil
}

func (l *lastLine) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := strings.TrimSpace(string(l.partial)); s != "" {
		return s
	}
	return l.last
}

// unmountUnder lazily unmounts every mount at or below root, deepest
// first. It must succeed before root is archived or removed: removing a
// tree with the host's /proc or /dev mounted inside would reach the host.
func unmountUnder(root string) error {
	abs, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	for range 3 {
		points, err := mountsUnder(abs)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
		for _, p := range points {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	if points, _ := mountsUnder(abs); len(points) > 0 {
		return fmt.Errorf("mounts left under %s: %v", abs, points)
	}
	return nil
}

func mountsUnder(root string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		if p == root || strings.HasPrefix(p, root+"/") {
			out = append(out, p)
		}
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeBuildDir removes a build tree only once nothing is mounted in it.
func removeBuildDir(dir string, progress io.Writer) {
	if err := unmountUnder(dir); err != nil {
		fmt.Fprintf(progress, "warning: leaving %s in place: %v\n", dir, err)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(progress, "warning: removing %s: %v\n", dir, err)
	}
}

// lockFile takes an exclusive flock on path, polling so ctx can cancel the
// wait; waiting is called once if the lock is held by someone else.
func lockFile(ctx context.Context, path string, waiting func()) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func writeFileAtomic(path string, data []byte) error {
	var b [6]byte
	_, _ = rand.Read(b[:])
	tmp := path + ".tmp-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// findTool looks a command up on PATH and then in the sbin directories,
// which a non-login root shell or sudo often leaves off PATH.
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin", name)
}

// debianMirror picks the archive to debootstrap from: the one given, else
// KILN_DEBIAN_MIRROR, else the build machine's apt sources. kiln names no
// mirror of its own; the machine's is the one known to be reachable.
func debianMirror(given, release string) (string, error) {
	if given != "" {
		return given, nil
	}
	if m := os.Getenv("KILN_DEBIAN_MIRROR"); m != "" {
		return m, nil
	}
	var sources []aptSource
	files := []string{"/etc/apt/sources.list"}
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	sort.Strings(more)
	files = append(files, more...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		switch {
		case strings.HasSuffix(f, ".sources"):
			sources = append(sources, parseDeb822Sources(string(data))...)
		case strings.HasSuffix(f, ".list"):
			sources = append(sources, parseOneLineSources(string(data))...)
		}
	}
	if m := pickMirror(sources, release); m != "" {
		return m, nil
	}
	return "", fmt.Errorf("no Debian mirror found in /etc/apt/sources.list or sources.list.d for %s: set KILN_DEBIAN_MIRROR or --debian-mirror", release)
}

// aptSource is one "deb" source: an archive URI and the suites used from it.
type aptSource struct {
	URI    string
	Suites []string
}

func parseOneLineSources(text string) []aptSource {
	var out []aptSource
	for _, line := range strings.Split(text, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		rest := fields[1:]
		if strings.HasPrefix(rest[0], "[") {
			// Options such as [arch=amd64 signed-by=...] run to the "]".
			for len(rest) > 0 && !strings.HasSuffix(rest[0], "]") {
				rest = rest[1:]
			}
			if len(rest) > 0 {
				rest = rest[1:]
			}
		}
		if len(rest) < 2 {
			continue
		}
		out = append(out, aptSource{URI: rest[0], Suites: []string{rest[1]}})
	}
	return out
}

func parseDeb822Sources(text string) []aptSource {
	var out []aptSource
	for _, stanza := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n") {
		fields := map[string]string{}
		last := ""
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "" {
				continue
			}
			if (line[0] == ' ' || line[0] == '\t') && last != "" {
				fields[last] += " " + strings.TrimSpace(line)
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
		if strings.EqualFold(fields["enabled"], "no") || !slices.Contains(strings.Fields(fields["types"]), "deb") {
			continue
		}
		suites := strings.Fields(fields["suites"])
		for _, uri := range strings.Fields(fields["uris"]) {
			out = append(out, aptSource{URI: uri, Suites: suites})
		}
	}
	return out
}

// pickMirror prefers a source that carries the release itself; failing
// that, one carrying any main suite (no "-security" or "-updates"), since
// a Debian mirror for one release serves the others.
func pickMirror(sources []aptSource, release string) string {
	for _, s := range sources {
		if slices.Contains(s.Suites, release) {
			return s.URI
		}
	}
	for _, s := range sources {
		if strings.Contains(s.URI, "security") {
			continue
		}
		for _, suite := range s.Suites {
			if !strings.Contains(suite, "-") && !strings.Contains(suite, "/") {
				return s.URI
			}
		}
	}
	return ""
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func fmtSize(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
}
