package executor

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/containerd/containerd"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// RunCold serves one call of a `default` format fn: a fresh container per
// call, the body on stdin then EOF, stdout until exit is the response.
func (r *Runtime) RunCold(ctx context.Context, f *Function, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	start := time.Now()
	b, err := r.create(ctx, f, "cold", extras{env: protocol.DefaultEnv(req)})
	if err != nil {
		return nil, err
	}
	if r.onColdStart != nil {
		r.onColdStart(f.AppName, f.FnName, time.Since(start))
	}
	sink := &callSink{id: req.CallID, logs: logs}
	stderrDone := make(chan struct{})
	stdinDone := make(chan error, 1)
	// Removing the container closes its FIFOs, which ends both stdio
	// goroutines; they are waited for so none outlives the call.
	defer func() {
		b.destroy(0)
		<-stderrDone
		<-stdinDone
	}()
	go func() {
		defer close(stderrDone)
		pumpStderr(b.io.stderr, b.log, func() *callSink { return sink })
	}()
	// At the deadline the process is killed: its stdout then ends, which
	// is what the read below waits for. Closing stdin frees the writer.
	stop := context.AfterFunc(ctx, func() {
		b.closeStdin()
		b.killNow()
	})
	defer stop()

	// The body goes in from its own goroutine: a function may write
	// output before it has read all its input, and both pipes are bounded.
	go func() {
		deadline, _ := ctx.Deadline()
		_ = b.io.stdin.SetWriteDeadline(deadline)
		_, err := b.io.stdin.Write(req.Body)
		// Closing our end is EOF for the function only with direct stdio;
		// otherwise the shim holds a write end of its own until told to
		// close it.
		b.closeStdin()
		if b.io.directDir == "" {
			if cerr := b.task.CloseIO(r.ctx(context.WithoutCancel(ctx)), containerd.WithStdinCloser); cerr != nil && err == nil {
				err = cerr
			}
		}
		stdinDone <- err
	}()

	out, readErr := io.ReadAll(io.LimitReader(b.io.stdout, r.cfg.MaxBody+1))
	if ctx.Err() != nil {
		return nil, callAborted(ctx)
	}
	if int64(len(out)) > r.cfg.MaxBody {
		return nil, fmt.Errorf("%w: %w: response over %d bytes", errdefs.ErrFunction, protocol.ErrBodyTooLarge, r.cfg.MaxBody)
	}
	if readErr != nil {
		return nil, fmt.Errorf("%w: read stdout: %v", errdefs.ErrFunction, readErr)
	}
	select {
	case <-b.exited:
	case <-ctx.Done():
		return nil, callAborted(ctx)
	}
	// A body the function never read would keep the writer blocked.
	b.closeStdin()
	// The shim closes stderr once the process is gone and its output is
	// copied, so the log is complete; it is not waited for long.
	select {
	case <-stderrDone:
	case <-time.After(time.Second):
	}
	if code := b.exitStatus.ExitCode(); code != 0 {
		return nil, b.exitError(code)
	}
	return &protocol.Response{Status: http.StatusOK, Header: http.Header{}, Body: out}, nil
}
