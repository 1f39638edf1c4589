package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
type stdio struct {
	set    *cio.FIFOSet
	stdin  *os.File
	stdout io.ReadCloser
	stderr io.ReadCloser

	closeOnce sync.Once
	closeErr  error
}

var _ cio.IO = (*stdio)(nil)

func openStdio(dir, id string) (_ *stdio, retErr error) {
	set, err := cio.NewFIFOSetInDir(dir, id, false)
	if err != nil {
		return nil, fmt.Errorf("fifos for %q: %w", id, err)
	}
	s := &stdio{set: set}
	defer func() {
		if retErr != nil {
			_ = s.Close()
		}
	}()
	if err := syscall.Mkfifo(set.Stdin, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("stdin fifo for %q: %w", id, err)
	}
	if s.stdin, err = os.OpenFile(set.Stdin, os.O_RDWR|syscall.O_NONBLOCK, 0); err != nil {
		return nil, fmt.Errorf("open stdin fifo for %q: %w", id, err)
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

// Config is the FIFO paths the shim opens.
func (s *stdio) Config() cio.Config { return s.set.Config }

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
