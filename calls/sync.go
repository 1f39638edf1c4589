package calls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// NewCallID returns a fresh call id; api sets it as Fn-Call-Id before the
// call runs, so even a refused call's answer carries one.
func (s *Service) NewCallID() string { return s.store.NewID() }

// Call runs one synchronous call of t and returns the function's answer.
// req.CallID must be set; the deadline is the fn's timeout from now, and
// ctx (the client's request) cancels the call early if the client goes.
// The call's record, log and metrics are kept whatever the outcome. An
// answer with a Stream is still running: the caller must read it to its
// end or Close it, and the record is written then.
func (s *Service) Call(ctx context.Context, t *Target, req *protocol.Request) (*protocol.Response, error) {
	if err := s.accept(); err != nil {
		return nil, err
	}
	if t.policyErr != nil {
		s.release()
		return nil, t.policyErr
	}
	if !s.conc.enter(t.Fn.ID, t.Fn.MaxConcurrency) {
		s.release()
		s.mx.ObserveRejected(t.App.Name, t.Fn.Name)
		return nil, tooManyCalls(t.Fn)
	}
	start := time.Now()
	deadline := start.Add(fnTimeout(t.Fn))
	ctx, cancel := context.WithDeadline(ctx, deadline)
	req.Deadline = deadline

	c := &syncCall{s: s, t: t, id: req.CallID, start: start, cancel: cancel,
		logs: s.newCallLog(t, req.CallID)}
	c.rec = &store.Call{ID: req.CallID, FnID: t.Fn.ID, AppID: t.App.ID, Status: store.CallRunning, CreatedAt: start, StartedAt: &start}
	c.recKey = s.records.start(c.rec)
	resp, err := s.execute(ctx, t, req, c.logs)
	if err == nil && resp.Stream != nil {
		c.stream = resp.Stream
		resp.Stream = c
		return resp, nil
	}
	return resp, c.finish(err)
}

// syncCall is one sync call's bookkeeping, finished when its answer is
// complete: at once, or at the end of a streamed body.
type syncCall struct {
	s      *Service
	t      *Target
	id     string
	start  time.Time
	rec    *store.Call
	recKey string
	logs   *callLog
	cancel context.CancelFunc

	// A streamed answer: what the client has been sent of it.
	stream    io.ReadCloser
	firstByte time.Duration
	bytes     int64
	once      sync.Once
	err       error
}

// finish records the call's outcome and lets go of it; err is its
// failure, nil for success. It returns the error the client gets.
func (c *syncCall) finish(err error) error {
	c.once.Do(func() {
		s, t := c.s, c.t
		end := time.Now()
		c.rec.CompletedAt = &end
		c.rec.Status = store.CallSuccess
		if errors.Is(err, context.Canceled) && !errors.Is(err, errClientGone) {
			// Only the client's request cancels a sync call.
			err = fmt.Errorf("%w (%v)", errClientGone, err)
		}
		if err != nil {
			err = callError(t.Fn, err)
			c.rec.Status, c.rec.Error = callStatus(err), err.Error()
		}
		s.records.put(c.recKey, c.rec, c.logs)
		s.mx.ObserveCall(t.App.Name, t.Fn.Name, c.rec.Status, end.Sub(c.start))
		if c.stream != nil {
			s.mx.ObserveStream(t.App.Name, t.Fn.Name, c.firstByte, c.bytes)
		}
		if err != nil {
			// Built only on failure: a logrus entry costs a map per call.
			log := s.log.WithFields(logrus.Fields{"app": t.App.Name, "fn": t.Fn.Name, "call_id": c.id})
			if errors.Is(err, context.Canceled) || errors.Is(err, errClientGone) {
				log.WithError(err).Info("client went away before the call finished")
			} else {
				log.WithError(err).Warn("call failed")
			}
		}
		c.err = err
		c.cancel()
		s.conc.leave(t.Fn.ID, t.Fn.MaxConcurrency)
		s.release()
	})
	return c.err
}

var errClientGone = errors.New("the client went away before the call ended")

// Read passes the streamed body on, counting it.
func (c *syncCall) Read(p []byte) (int, error) {
	n, err := c.stream.Read(p)
	if n > 0 {
		if c.bytes == 0 {
			c.firstByte = time.Since(c.start)
		}
		c.bytes += int64(n)
	}
	switch {
	case err == io.EOF:
		c.finish(nil)
	case err != nil:
		return n, c.finish(err)
	}
	return n, err
}

// Close ends the call; before the stream's end it is the client's doing
// (it went away), and the container, left mid-frame, is discarded.
func (c *syncCall) Close() error {
	_ = c.stream.Close()
	c.finish(errClientGone)
	return nil
}

// fnTimeout is how long one call of fn may take; stored fns always have a
// validated timeout, the fallback only guards records from elsewhere.
func fnTimeout(fn *store.Fn) time.Duration {
	if fn.Timeout <= 0 {
		return store.DefaultTimeout * time.Second
	}
	return time.Duration(fn.Timeout) * time.Second
}

// execute runs one call of t in a hot container or, for the default
// format, a fresh one. Sync and detached calls both come through here.
func (s *Service) execute(ctx context.Context, t *Target, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	if t.Fn.Format == protocol.Default {
		return s.rt.RunCold(ctx, t.spec, req, logs)
	}
	imageID, err := s.rt.ImageID(ctx, t.Fn.Image)
	if err != nil {
		return nil, err
	}
	spec := t.poolSpec(s, imageID)
	if t.Fn.MinWarm > 0 {
		// A new key (a re-tagged image) drains the old one's warm
		// containers: keep the new one's.
		if err := s.warm(t, spec); err != nil {
			s.log.WithError(err).WithField("fn", t.Fn.Name).Warn("min_warm containers not kept")
		}
	}
	lease, err := s.pool.Acquire(ctx, spec)
	if err != nil {
		return nil, poolError(err)
	}
	s.noteKey(t)
	resp, err := lease.Instance().Call(ctx, req, logs)
	if err != nil {
		// Whatever failed, the container's stream may be out of step
		// with kiln: it never serves again.
		lease.Discard()
		return nil, err
	}
	if resp.Stream != nil {
		// The container is busy until its body has been read.
		resp.Stream = &leaseStream{rc: resp.Stream, lease: lease}
		return resp, nil
	}
	lease.Release()
	return resp, nil
}

// leaseStream holds a container's lease while its answer streams: a body
// read to its end gives the container back, anything else discards it.
type leaseStream struct {
	rc    io.ReadCloser
	lease *pool.Lease[Instance]
}

func (l *leaseStream) Read(p []byte) (int, error) {
	n, err := l.rc.Read(p)
	switch {
	case err == io.EOF:
		l.lease.Release()
	case err != nil:
		l.lease.Discard()
	}
	return n, err
}

func (l *leaseStream) Close() error {
	err := l.rc.Close()
	// After an end a second finish is a no-op; before one, the instance
	// broke when its stream was closed, so this discards it.
	l.lease.Discard()
	return err
}

// poolError gives the pool's own sentinels kiln's: a call that found no
// capacity, or met a closing pool, may be retried.
func poolError(err error) error {
	if errors.Is(err, pool.ErrNoCapacity) || errors.Is(err, pool.ErrClosed) {
		return errdefs.Errorf(errdefs.ErrUnavailable, "%w", err)
	}
	return err
}

// callError words the failures whose message or status differ from the
// error as it is: a timeout names the fn's limit, and a missing image is
// kiln's failure (500), not an unknown fn (404).
func callError(fn *store.Fn, err error) error {
	switch {
	case errors.Is(err, errdefs.ErrTimeout):
		return errdefs.Errorf(errdefs.ErrTimeout, "fn %q timed out after %ds: %v", fn.Name, fn.Timeout, err)
	case errors.Is(err, errdefs.ErrNotFound):
		return fmt.Errorf("fn %q cannot start: %v", fn.Name, err)
	}
	return err
}

// callStatus is the record status of a failed call.
func callStatus(err error) string {
	if errors.Is(err, errdefs.ErrTimeout) {
		return store.CallTimeout
	}
	return store.CallError
}
