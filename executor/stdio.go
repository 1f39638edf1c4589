package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/containerd/cio"
	"github.com/containerd/fifo"
)

// stdio is kiln's end of a container's three FIFOs; it is the cio.IO the
// task is created with.
//
// containerd's DirectIO opens every FIFO in blocking mode, which Go cannot
// interrupt: a write to a function that exited, or never reads, blocks
// until the shim's read end goes away, and Close does not help (the fd is
// only released once the write returns). That is how one call outlived
// its deadline by an hour. Stdin here is opened non-blocking, so Go's
// poller owns it: a write takes a deadline and Close interrupts it.
// It is opened read-write, which never fails for want of a reader and
// never sees EPIPE; the deadline and the exit notification bound it.
//
// Stdout and stderr stay on the fifo package's blocking reads: a
// non-blocking read end would report EOF before the shim opens its write
// end. Their reads end when the shim closes the write end, which it does
// when the process exits or the task is deleted.
//
// With direct stdio (Config.InitPath) the FIFOs are not the shim's: they
// sit in a dir of their own that is bind-mounted into the container, where
// kiln-init opens them as the function's stdio; the task itself gets
// none. Nothing else changes for kiln's ends.
type stdio struct {
	set *cio.FIFOSet
	// directDir is the dir mounted into the container with direct stdio;
	// empty otherwise.
	directDir string
	// stdinHold is a read end of stdin kiln keeps with direct stdio. A
	// FIFO's buffer is dropped when its last fd closes: a cold call's body,
	// written and closed before kiln-init opened the FIFO, would be lost.
	stdinHold *os.File
	stdin     *os.File
	stdout    io.ReadCloser
	stderr    io.ReadCloser

	closeOnce sync.Once
	closeErr  error
}

var _ cio.IO = (*stdio)(nil)

// openStdio makes and opens a container's FIFOs: in dir, for the shim to
// copy, or, when directDir is set, there for kiln-init to open.
func openStdio(dir, id, directDir string) (_ *stdio, retErr error) {
	var set *cio.FIFOSet
	direct := directDir != ""
	if direct {
		var err error
		if set, err = directFIFOSet(directDir); err != nil {
			return nil, err
		}
	} else {
		var err error
		if set, err = cio.NewFIFOSetInDir(dir, id, false); err != nil {
			return nil, fmt.Errorf("fifos for %q: %w", id, err)
		}
	}
	s := &stdio{set: set, directDir: directDir}
	var err error
	defer func() {
		if retErr != nil {
			_ = s.Close()
		}
	}()
	if !direct {
		if err := syscall.Mkfifo(set.Stdin, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("stdin fifo for %q: %w", id, err)
		}
	}
	if s.stdin, err = os.OpenFile(set.Stdin, os.O_RDWR|syscall.O_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("open stdin fifo for %q: %w", id, err)
	}
	if direct {
		if s.stdinHold, err = os.OpenFile(set.Stdin, os.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return nil, fmt.Errorf("open stdin fifo for %q: %w", id, err)
		}
	}
	// The FIFOs outlive the call that created the container, so they open
	// on a context of their own.
	if s.stdout, err = fifo.OpenFifo(context.Background(), set.Stdout, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		return nil, fmt.Errorf("open stdout fifo for %q: %w", id, err)
	}
	if s.stderr, err = fifo.OpenFifo(context.Background(), set.Stderr, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		return nil, fmt.Errorf("open stderr fifo for %q: %w", id, err)
	}
	return s, nil
}

// Config is the FIFO paths the shim opens: none with direct stdio, where
// the process gets /dev/null from the shim until kiln-init replaces it.
func (s *stdio) Config() cio.Config {
	if s.directDir != "" {
		return cio.Config{}
	}
	return s.set.Config
}

// directFIFOSet makes root holding FIFOs named stdin, stdout and stderr
// that the container's user can open: root is bind-mounted into that
// container alone, and the FIFO dir it sits in (0700) keeps everyone else
// on the host out.
func directFIFOSet(root string) (*cio.FIFOSet, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("fifo dir: %w", err)
	}
	cleanup := func() error { return os.RemoveAll(root) }
	cfg := cio.Config{Stdin: filepath.Join(root, "stdin"), Stdout: filepath.Join(root, "stdout"), Stderr: filepath.Join(root, "stderr")}
	for _, p := range []string{cfg.Stdin, cfg.Stdout, cfg.Stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
			_ = cleanup()
			return nil, fmt.Errorf("fifo %s: %w", p, err)
		}
		// Mkfifo's mode is cut by the umask; the function may run as any
		// user.
		if err := os.Chmod(p, 0o666); err != nil {
			_ = cleanup()
			return nil, err
		}
	}
	if err := os.Chmod(root, 0o755); err != nil {
		_ = cleanup()
		return nil, err
	}
	return cio.NewFIFOSet(cfg, cleanup), nil
}

// Cancel and Wait are no-ops: kiln copies nothing in the background, its
// readers are the hot instance's own goroutines.
func (s *stdio) Cancel() {}
func (s *stdio) Wait()   {}

// closeStdin interrupts a write in progress and makes later ones fail.
// For a cold run it is also half of delivering EOF (the shim holds the
// other write end until CloseIO).
func (s *stdio) closeStdin() {
	if s.stdin != nil {
		_ = s.stdin.Close()
	}
}

// Close closes kiln's ends and removes the FIFO dir. Idempotent: the task
// closes it on Delete and kiln does again when it lets go of the box.
func (s *stdio) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		s.closeStdin()
		if s.stdinHold != nil {
			_ = s.stdinHold.Close()
		}
		for _, c := range []io.Closer{s.stdout, s.stderr} {
			if c != nil {
				if err := c.Close(); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if err := s.set.Close(); err != nil {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
