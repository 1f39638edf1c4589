package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// DefaultPath is the PATH a function image gets unless env sets one; the
// image has no shell, but runtimes and exec lookups still expect it set.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BuildGo compiles the main package in pkgDir into a static linux binary
// for the host architecture and returns its bytes. Compiler output is part
// of the returned error; progress gets a line when the build starts and one
// when it ends.
func BuildGo(ctx context.Context, pkgDir string, progress io.Writer) ([]byte, error) {
	return BuildGoFor(ctx, pkgDir, HostPlatform(), progress)
}

// BuildGoFor is BuildGo cross-compiling for plat: Go needs nothing of the
// target machine, so any linux platform the toolchain knows is built here.
func BuildGoFor(ctx context.Context, pkgDir string, plat Platform, progress io.Writer) ([]byte, error) {
	if progress == nil {
		progress = io.Discard
	}
	abs, err := filepath.Abs(pkgDir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", pkgDir)
	}
	goBin, err := goTool()
	if err != nil {
		return nil, err
	}

	out, err := os.MkdirTemp("", "kiln-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	bin := filepath.Join(out, "function")

	fmt.Fprintf(progress, "building Go package %s for %s\n", abs, plat)
	start := time.Now()
	// -buildvcs=false: VCS stamping fails on trees with unreadable or foreign
	// .git dirs and would make the binary differ between otherwise equal trees.
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w", "-o", bin, ".")
	cmd.Dir = abs
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), plat.goEnv()...)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("go build in %s: %w", abs, err)
		}
		return nil, fmt.Errorf("go build in %s: %w\n%s", abs, err, msg)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "built %s (%.1f MB) in %s\n", filepath.Base(abs),
		float64(len(data))/(1<<20), time.Since(start).Round(100*time.Millisecond))
	return data, nil
}

// goTool finds the go command: PATH first, then $GOROOT, then the default
// install location, since daemons and sudo often run with a PATH that
// lacks it.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	var roots []string
	if r := os.Getenv("GOROOT"); r != "" {
		roots = append(roots, r)
	}
	roots = append(roots, "/usr/local/go")
	for _, r := range roots {
		p := filepath.Join(r, "bin", "go")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("go toolchain not found: put go on PATH or set GOROOT")
}

// baseFiles are the minimum a static binary on an empty base needs: user
// and group databases so uid lookups of root and nobody succeed, and a
// world-writable /tmp.
func baseFiles() []File {
	return []File{
		{Path: "etc", Dir: true, Mode: 0o755},
		{Path: "etc/passwd", Mode: 0o644, Data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte(
			"root:x:0:\n" +
				"nobody:x:65534:\n")},
		{Path: "tmp", Dir: true, Mode: fs.ModeSticky | 0o777},
	}
}

// GoFunctionImage builds the Go main package in pkgDir and writes an image
// archive named ref to w: the binary at /function as the entrypoint, over a
// base layer of /etc/passwd, /etc/group and /tmp. The base is its own layer
// so every Go function shares that blob. env is appended to DefaultPath
// (an entry starting "PATH=" replaces it). It returns the manifest digest.
func GoFunctionImage(ctx context.Context, w io.Writer, pkgDir, ref string, env []string, progress io.Writer) (string, error) {
	return goFunctionImage(ctx, w, pkgDir, ref, env, HostPlatform(), progress)
}

func goFunctionImage(ctx context.Context, w io.Writer, pkgDir, ref string, env []string, plat Platform, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	// Checked before compiling, so a bad name fails in milliseconds.
	if _, err := refTag(ref); err != nil {
		return "", err
	}
	bin, err := BuildGoFor(ctx, pkgDir, plat, progress)
	if err != nil {
		return "", err
	}
	cfg := Config{
		Entrypoint: []string{"/function"},
		Env:        withDefaultPath(env),
		Platform:   plat,
	}
	fmt.Fprintf(progress, "writing image %s\n", displayRef(ref))
	dgst, err := WriteArchive(w, ref, cfg,
		baseFiles(),
		[]File{{Path: "function", Mode: 0o755, Data: bin}},
	)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "image %s %s\n", ResolveRef(ref, dgst), dgst)
	return dgst, nil
}

func withDefaultPath(env []string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "PATH=") {
			return append([]string(nil), env...)
		}
	}
	return append([]string{DefaultPath}, env...)
}
