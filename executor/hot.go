package executor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// Hot is a warm container that answers one call at a time over its stdio.
// Its stdout has one long-lived bufio.Reader: bytes read ahead stay there
// for the next frame, and anything left after a frame is caught.
type Hot struct {
	box    *box
	codec  protocol.Codec
	stdout *bufio.Reader

	// The stdout watcher is stdout's only reader: it blocks in Peek, and
	// when bytes arrive during a call it reads the frame and sends it on
	// results. Bytes (or EOF) that arrive while no call is in flight break
	// the instance at once, so garbage never waits for the next call.
	results chan frameResult
	inCall  atomic.Bool
	current atomic.Pointer[callSink]

	done     chan struct{}
	failOnce sync.Once
	failErr  error

	closeOnce sync.Once
	wg        sync.WaitGroup
}

type callSink struct {
	id   string
	logs io.Writer
}

// StartHot creates and starts a hot container for f.
func (r *Runtime) StartHot(ctx context.Context, f *Function) (*Hot, error) {
	codec, err := protocol.New(f.Format, protocol.Limits{MaxBody: r.cfg.MaxBody})
	if err != nil {
		return nil, fmt.Errorf("fn %q: %v: %w", f.FnName, err, errdefs.ErrInvalid)
	}
	b, err := r.create(ctx, f, "hot", nil)
	if err != nil {
		return nil, err
	}
	h := &Hot{
		box:   b,
		codec: codec,
		// Bodies larger than the buffer are read straight into their own
		// slice, so it only needs to hold frame heads; every hot container
		// keeps one.
		stdout: bufio.NewReaderSize(b.dio.Stdout, 16<<10),
		// One slot: the watcher never blocks on a caller that gave up.
		results: make(chan frameResult, 1),
		done:    make(chan struct{}),
	}
	h.wg.Add(2)
	go h.watchStdout()
	go func() {
		defer h.wg.Done()
		pumpStderr(b.dio.Stderr, b.log, h.sink)
	}()
	// The exit is noticed here even if stdout stays open (a child of the
	// function may hold it); fail is idempotent, so a double run is fine.
	b.notifyExit(func() {
		h.fail(fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, b.exitStatus.ExitCode()))
	})
	return h, nil
}

// Done is closed when the instance can no longer serve.
func (h *Hot) Done() <-chan struct{} { return h.done }

// Close stops and removes the container. Idempotent.
func (h *Hot) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		grace := h.box.r.cfg.StopGrace
		select {
		case <-h.done:
			// A broken instance gets no grace: it is out of step already.
			grace = 0
		default:
		}
		h.fail(fmt.Errorf("container closed: %w", errdefs.ErrUnavailable))
		h.box.destroy(grace)
		h.wg.Wait()
	})
	return nil
}

func (h *Hot) sink() *callSink { return h.current.Load() }

// fail marks the instance broken (first reason wins) and closes its stdio
// so every blocked read or write returns.
func (h *Hot) fail(err error) {
	h.failOnce.Do(func() {
		h.failErr = err
		close(h.done)
		h.box.closeStdio()
	})
}

func (h *Hot) watchStdout() {
	defer h.wg.Done()
	for {
		_, err := h.stdout.Peek(1)
		if !h.inCall.Load() {
			if err == nil {
				h.fail(fmt.Errorf("%w: %w: output while no call was in flight", errdefs.ErrFunction, protocol.ErrProtocol))
			} else {
				h.fail(fmt.Errorf("%w: stdout closed: %v", errdefs.ErrFunction, err))
			}
			return
		}
		if err != nil {
			h.results <- frameResult{err: fmt.Errorf("stdout closed before a response: %w", err), eof: true}
			return
		}
		// The watcher reads the frame itself: handing the reader to the
		// calling goroutine and back would cost two more wake-ups per call.
		resp, err := h.codec.ReadResponse(h.stdout)
		if err == nil {
			if n := h.stdout.Buffered(); n > 0 {
				err = fmt.Errorf("%w: %d bytes after the response frame", protocol.ErrProtocol, n)
			}
		}
		// Cleared before the answer goes out: from here on, any byte on
		// stdout is output while no call is in flight.
		h.inCall.Store(false)
		h.results <- frameResult{resp: resp, err: err}
		if err != nil {
			return
		}
	}
}

// frameResult is what the watcher read for the call in flight.
type frameResult struct {
	resp *protocol.Response
	err  error
	// eof: stdout ended before the frame began.
	eof bool
}

// Call sends req and reads exactly one response frame. On any error the
// instance is broken (Done is closed) and must be discarded.
func (h *Hot) Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	select {
	case <-h.done:
		return nil, h.failErr
	default:
	}
	if !h.inCall.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("container %q is already serving a call", h.box.id)
	}
	// The sink stays set after the call: stderr a function wrote just
	// before its response may be read a moment after it, and still
	// belongs to this call. The next call replaces it.
	h.current.Store(&callSink{id: req.CallID, logs: logs})
	stop := context.AfterFunc(ctx, func() { h.fail(callAborted(ctx)) })
	defer stop()

	if err := h.codec.WriteRequest(h.box.dio.Stdin, req); err != nil {
		h.fail(fmt.Errorf("%w: write request: %v", errdefs.ErrFunction, err))
		return nil, h.callError(ctx)
	}
	var res frameResult
	select {
	case res = <-h.results:
	case <-h.done:
		// The deadline, a crash or a close; the watcher may still have
		// delivered a whole frame just before.
		select {
		case res = <-h.results:
		default:
			return nil, h.callError(ctx)
		}
	}
	if res.eof {
		h.fail(fmt.Errorf("%w: %v", errdefs.ErrFunction, res.err))
		return nil, h.callError(ctx)
	}
	if err := res.err; err != nil {
		h.fail(fmt.Errorf("%w: %w", errdefs.ErrFunction, err))
		if ctx.Err() == nil && errors.Is(err, protocol.ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
			// A bad frame from a live process: say what was wrong with it.
			return nil, h.failErr
		}
		err = h.callError(ctx)
		if errors.Is(err, errdefs.ErrFunction) && !errors.Is(err, protocol.ErrProtocol) {
			err = fmt.Errorf("%w, in the middle of its response", err)
		}
		return nil, err
	}
	// A whole, clean frame is this call's answer even if the instance
	// broke a moment later (say, the deadline hit just now).
	return res.resp, nil
}

// callError explains why a call failed: its own deadline or cancellation
// first, then a crash with its exit code, then whatever broke the stream.
func (h *Hot) callError(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return callAborted(ctx)
	}
	// A crash shows up as EOF on stdout a moment before the exit status;
	// give the status a moment so the error can name the exit code.
	if code, ok := h.box.exitCode(500 * time.Millisecond); ok {
		return h.box.r.exitError(h.box, code)
	}
	return h.failErr
}

func callAborted(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: no response before the deadline", errdefs.ErrTimeout)
	}
	return fmt.Errorf("call cancelled: %w", ctx.Err())
}

// exitError words a function's exit, naming memory when the kernel
// killed it for exceeding its limit.
func (r *Runtime) exitError(b *box, code uint32) error {
	// Only a SIGKILL (137) can be an OOM kill; other codes need no wait.
	if code == 137 && r.oomKilled(b.id) {
		return fmt.Errorf("%w: killed for exceeding its memory limit (exit code %d)", errdefs.ErrFunction, code)
	}
	return fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, code)
}
