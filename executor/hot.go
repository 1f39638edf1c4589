package executor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// Hot is a warm container that answers one call at a time over its stdio.
// Its stdout has one long-lived bufio.Reader: bytes read ahead stay there
// for the next frame, and anything left after a frame is caught.
//
// Every call ends by its deadline whatever the function does: the write
// of the request carries the deadline, and the deadline, the process
// exiting and stdout closing each break the instance, which closes stdin
// and so interrupts a write in progress. A broken instance never serves
// again.
type Hot struct {
	c      hotContainer
	codec  protocol.Codec
	stdout *bufio.Reader
	grace  time.Duration
	// streamer is codec's streaming side, when it has one (http): a
	// chunked response is then handed to the caller as it arrives.
	streamer protocol.Streamer
	// streaming is set while a caller reads a streamed body from stdout;
	// the watcher waits for it, and a failure must end it at once.
	streaming atomic.Bool

	// The stdout watcher is stdout's only reader: it blocks in Peek, and
	// when bytes arrive during a call it reads the frame and sends it on
	// results. Bytes (or EOF) that arrive while no call is in flight break
	// the instance at once, so garbage never waits for the next call.
	results chan frameResult
	inCall  atomic.Bool
	// midFrame: the watcher has bytes of a response it has not finished
	// reading, so a failure now is "in the middle of its response".
	midFrame atomic.Bool
	current  atomic.Pointer[callSink]

	done     chan struct{}
	failOnce sync.Once
	failErr  error

	closeOnce sync.Once
	wg        sync.WaitGroup
}

// hotContainer is what a Hot needs of the container under it: box
// implements it with containerd, the unit tests with pipes.
type hotContainer interface {
	stdinPipe() deadlineWriter
	stdoutPipe() io.Reader
	stderrPipe() io.Reader
	// onExit runs f with the exit code once the process has exited, at
	// once if it has. f must not block: it runs on the exit watcher.
	onExit(f func(code uint32))
	// exitCode waits up to d for the exit and returns its code.
	exitCode(d time.Duration) (uint32, bool)
	// exitError words an exit code, naming memory for an OOM kill.
	exitError(code uint32) error
	// closeStdin interrupts a write in progress; later writes fail.
	closeStdin()
	// destroy stops the process (SIGKILL after grace) and removes it.
	destroy(grace time.Duration)
	// kill sends SIGKILL without waiting: the process's stdout then ends,
	// which is what unblocks a read of a streamed body.
	kill()
	logger() *logrus.Entry
}

// deadlineWriter is stdin: a write that a deadline or Close interrupts.
type deadlineWriter interface {
	io.Writer
	SetWriteDeadline(t time.Time) error
}

type callSink struct {
	id   string
	logs io.Writer
}

// StartHot creates and starts a hot container for f: one that speaks
// f's format over stdio, or, for http-stream, over its socket.
func (r *Runtime) StartHot(ctx context.Context, f *Function) (Instance, error) {
	if f.Format == protocol.HTTPStream {
		return r.startSocketHot(ctx, f)
	}
	codec, err := protocol.New(f.Format, protocol.Limits{MaxBody: r.cfg.MaxBody, MaxStream: r.cfg.MaxStream})
	if err != nil {
		return nil, fmt.Errorf("fn %q: %v: %w", f.FnName, err, errdefs.ErrInvalid)
	}
	b, err := r.create(ctx, f, "hot", extras{})
	if err != nil {
		return nil, err
	}
	return newHot(b, codec, r.cfg.StopGrace), nil
}

func newHot(c hotContainer, codec protocol.Codec, grace time.Duration) *Hot {
	h := &Hot{
		c:     c,
		codec: codec,
		grace: grace,
		// Bodies larger than the buffer are read straight into their own
		// slice, so it only needs to hold frame heads; every hot container
		// keeps one.
		stdout: bufio.NewReaderSize(c.stdoutPipe(), 16<<10),
		// One slot: the watcher never blocks on a caller that gave up.
		results: make(chan frameResult, 1),
		done:    make(chan struct{}),
	}
	h.streamer, _ = codec.(protocol.Streamer)
	h.wg.Add(2)
	go h.watchStdout()
	go func() {
		defer h.wg.Done()
		pumpStderr(c.stderrPipe(), c.logger(), h.sink)
	}()
	// The exit is noticed here even if stdout stays open (a child of the
	// function may hold it); fail is idempotent, so a double run is fine.
	c.onExit(func(code uint32) {
		// Not exitError: telling an OOM kill apart waits for an event,
		// and this runs on the exit watcher. A call in flight gets the
		// full wording from callError.
		h.fail(fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, code))
	})
	return h
}

// Done is closed when the instance can no longer serve.
func (h *Hot) Done() <-chan struct{} { return h.done }

// Err says why the instance can no longer serve; nil while it can. It
// never blocks: the pool asks with its lock held.
func (h *Hot) Err() error {
	select {
	case <-h.done:
	default:
		return nil
	}
	// A crash often shows as stdout closing a moment before its exit
	// status arrives; once the status is in, it is the better reason.
	if errors.Is(h.failErr, errStdoutClosed) {
		if code, ok := h.c.exitCode(0); ok {
			return fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, code)
		}
	}
	return h.failErr
}

// errStdoutClosed marks an instance broken by its stdout ending, which
// is most often its process exiting.
var errStdoutClosed = errors.New("stdout closed")

// Close stops and removes the container. Idempotent.
func (h *Hot) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		grace := h.grace
		select {
		case <-h.done:
			// A broken instance gets no grace: it is out of step already.
			grace = 0
		default:
		}
		h.fail(fmt.Errorf("container closed: %w", errdefs.ErrUnavailable))
		h.c.destroy(grace)
		h.wg.Wait()
	})
	return nil
}

func (h *Hot) sink() *callSink { return h.current.Load() }

// fail marks the instance broken (first reason wins) and closes stdin, so
// a write in progress returns; a read in progress ends when the container
// is destroyed, and no call waits for it meanwhile.
func (h *Hot) fail(err error) {
	h.failOnce.Do(func() {
		h.failErr = err
		close(h.done)
		h.c.closeStdin()
		if h.streaming.Load() {
			// A caller is blocked reading the body from stdout; only the
			// process's end ends that read.
			h.c.kill()
		}
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
				h.fail(fmt.Errorf("%w: %w: %v", errdefs.ErrFunction, errStdoutClosed, err))
			}
			return
		}
		if err != nil {
			h.results <- frameResult{err: fmt.Errorf("stdout closed before a response: %w", err), eof: true}
			// The process is gone or going: a write of the request may
			// still be blocked, and must not wait for the exit event.
			h.fail(fmt.Errorf("%w: %w before a response: %v", errdefs.ErrFunction, errStdoutClosed, err))
			return
		}
		// The watcher reads the frame itself: handing the reader to the
		// calling goroutine and back would cost two more wake-ups per call.
		// Only a streamed body is the caller's to read.
		h.midFrame.Store(true)
		var (
			resp *protocol.Response
			body io.Reader
		)
		if h.streamer != nil {
			resp, body, err = h.streamer.ReadResponseStream(h.stdout)
		} else {
			resp, err = h.codec.ReadResponse(h.stdout)
		}
		if err == nil && body != nil {
			s := &hotStream{h: h, body: body, done: make(chan struct{})}
			h.streaming.Store(true)
			resp.Stream = s
			h.results <- frameResult{resp: resp, stream: s}
			// The caller owns stdout until its stream ends (and then has
			// cleared inCall itself), or the instance breaks.
			select {
			case <-s.done:
			case <-h.done:
				return
			}
			if h.Err() != nil {
				return
			}
			continue
		}
		if err == nil {
			if n := h.stdout.Buffered(); n > 0 {
				err = fmt.Errorf("%w: %d bytes after the response frame", protocol.ErrProtocol, n)
			}
		}
		// Cleared before the answer goes out: from here on, any byte on
		// stdout is output while no call is in flight.
		h.inCall.Store(false)
		if err == nil {
			h.midFrame.Store(false)
		}
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
	// stream, when set, is resp.Stream: the body still to be read.
	stream *hotStream
}

// Call sends req and reads exactly one response frame. On any error the
// instance is broken (Done is closed) and must be discarded.
func (h *Hot) Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	select {
	case <-h.done:
		// Most often it died since it was handed out: name the exit.
		return nil, h.callError(ctx)
	default:
	}
	if !h.inCall.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("instance is already serving a call")
	}
	// The sink stays set after the call: stderr a function wrote just
	// before its response may be read a moment after it, and still
	// belongs to this call. The next call replaces it.
	h.current.Store(&callSink{id: req.CallID, logs: logs})
	stop := context.AfterFunc(ctx, func() { h.fail(callAborted(ctx)) })
	// A streamed answer keeps the deadline watch until its body ends.
	streamed := false
	defer func() {
		if !streamed {
			stop()
		}
	}()

	stdin := h.c.stdinPipe()
	deadline, _ := ctx.Deadline() // zero: no deadline
	_ = stdin.SetWriteDeadline(deadline)
	if err := h.codec.WriteRequest(stdin, req); err != nil {
		var src *protocol.BodyError
		if errors.As(err, &src) {
			// The client's body failed (too large, or the client left)
			// half way into the frame: the function is out of step.
			h.fail(fmt.Errorf("%w: the request body could not be read: %v", errdefs.ErrUnavailable, src.Err))
			return nil, bodyError(src)
		}
		// The write's deadline is the call's, and either its timer or the
		// context's (which closes stdin) may fire first.
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err := errdefs.Errorf(errdefs.ErrTimeout, "the function did not read its request before the deadline")
			h.fail(err)
			return nil, err
		}
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
		return nil, h.callError(ctx)
	}
	if res.stream != nil {
		streamed = true
		res.stream.ctx, res.stream.stop = ctx, stop
	}
	// A whole, clean frame is this call's answer even if the instance
	// broke a moment later (say, the deadline hit just now).
	return res.resp, nil
}

// bodyError is what a call answers when the client's own body failed:
// one over the limit is the client's 413; anything else (the client
// went) has nobody to answer.
func bodyError(e *protocol.BodyError) error {
	var tooBig *http.MaxBytesError
	if errors.As(e.Err, &tooBig) {
		return errdefs.Errorf(errdefs.ErrTooLarge, "request body over the %d byte limit", tooBig.Limit)
	}
	return fmt.Errorf("read the request body: %w", e.Err)
}

// hotStream is a streamed response body on a hot container's stdout. The
// caller reads it; at its end (the terminating chunk) the container is
// ready for the next call, and any failure, or a Close before the end,
// breaks the instance: its stdout is no longer at a frame boundary.
type hotStream struct {
	h    *Hot
	body io.Reader
	ctx  context.Context
	stop func() bool
	// done tells the watcher the caller let go of stdout.
	done chan struct{}
	once sync.Once
	err  error
}

func (s *hotStream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.body.Read(p)
	switch {
	case err == io.EOF:
		if extra := s.h.stdout.Buffered(); extra > 0 {
			// Checked here, while this reader still owns stdout; bytes
			// that come later are the watcher's to catch.
			s.end(fmt.Errorf("%w: %w: %d bytes after the response frame", errdefs.ErrFunction, protocol.ErrProtocol, extra))
			return n, s.err
		}
		s.end(nil)
		s.err = io.EOF
	case err != nil:
		s.end(s.failure(err))
	}
	return n, s.err
}

// failure explains an error reading the body: the call's deadline or
// cancellation, the process's exit, or a bad chunk.
func (s *hotStream) failure(err error) error {
	h := s.h
	if errors.Is(err, protocol.ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) && s.ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", errdefs.ErrFunction, err)
		h.fail(err)
		return err
	}
	h.fail(fmt.Errorf("%w: stream cut: %v", errdefs.ErrFunction, err))
	return streamCut(s.ctx, h.callError)
}

// streamCut explains a stream that ended early: the call's deadline or
// cancellation, else what callError finds (an exit, a broken frame).
func streamCut(ctx context.Context, callError func(context.Context) error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errdefs.Errorf(errdefs.ErrTimeout, "the deadline passed in the middle of its streamed response")
	case ctx.Err() != nil:
		return fmt.Errorf("call cancelled in the middle of its streamed response: %w", ctx.Err())
	}
	return callError(ctx)
}

// Close ends the stream; before its end it breaks the instance.
func (s *hotStream) Close() error {
	if s.err == nil {
		s.end(fmt.Errorf("%w: the stream was closed before its end", errdefs.ErrUnavailable))
	}
	return nil
}

// end is the stream's one exit: a clean end frees the container for the
// next call, anything else breaks it; either way the watcher resumes.
func (s *hotStream) end(err error) {
	s.once.Do(func() {
		h := s.h
		if s.stop != nil {
			s.stop()
		}
		if err != nil {
			s.err = err
			h.fail(err)
		} else {
			// Before the watcher looks again: from here on, a byte on
			// stdout is output while no call is in flight.
			h.midFrame.Store(false)
			h.inCall.Store(false)
		}
		h.streaming.Store(false)
		close(s.done)
	})
}

// callError explains why a call failed: its own deadline or cancellation
// first, then a crash with its exit code, then whatever broke the stream.
func (h *Hot) callError(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return callAborted(ctx)
	}
	err := h.failErr
	// A crash shows up as EOF on stdout a moment before the exit status;
	// give the status a moment so the error can name the exit code.
	if code, ok := h.c.exitCode(500 * time.Millisecond); ok {
		err = h.c.exitError(code)
	}
	if h.midFrame.Load() && !errors.Is(err, protocol.ErrProtocol) {
		err = fmt.Errorf("%w, in the middle of its response", err)
	}
	return err
}

func callAborted(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errdefs.Errorf(errdefs.ErrTimeout, "no response before the deadline")
	}
	return fmt.Errorf("call cancelled: %w", ctx.Err())
}

// exitError words a function's exit, naming memory when the kernel
// killed it for exceeding its limit.
func (b *box) exitError(code uint32) error {
	// Only a SIGKILL (137) can be an OOM kill; other codes need no wait.
	if code == 137 && b.r.oomKilled(b.id) {
		return fmt.Errorf("%w: killed for exceeding its memory limit (exit code %d)", errdefs.ErrFunction, code)
	}
	return fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, code)
}
