package calls

import (
	"context"
	"errors"
	"fmt"
	"io"
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
// The call's record, log and metrics are kept whatever the outcome.
func (s *Service) Call(ctx context.Context, t *Target, req *protocol.Request) (*protocol.Response, error) {
	done, err := s.accept()
	if err != nil {
		return nil, err
	}
	defer done()
	if t.policyErr != nil {
		return nil, t.policyErr
	}
	start := time.Now()
	deadline := start.Add(fnTimeout(t.Fn))
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req.Deadline = deadline

	rec := &store.Call{ID: req.CallID, FnID: t.Fn.ID, AppID: t.App.ID, Status: store.CallRunning, CreatedAt: start, StartedAt: &start}
	logs := &callLog{max: s.cfg.CallLogCap}
	s.records.start(rec)
	resp, err := s.execute(ctx, t, req, logs)
	end := time.Now()
	rec.CompletedAt = &end
	rec.Status = store.CallSuccess
	if err != nil {
		err = callError(t.Fn, err)
		rec.Status, rec.Error = callStatus(err), err.Error()
	}
	s.records.put(rec, logs)
	s.mx.ObserveCall(t.App.Name, t.Fn.Name, rec.Status, end.Sub(start))
	if err != nil {
		// Built only on failure: a logrus entry costs a map per call.
		log := s.log.WithFields(logrus.Fields{"app": t.App.Name, "fn": t.Fn.Name, "call_id": req.CallID})
		if errors.Is(err, context.Canceled) {
			log.WithError(err).Info("client went away before the call finished")
		} else {
			log.WithError(err).Warn("call failed")
		}
		return nil, err
	}
	return resp, nil
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
	spec := t.spec
	lease, err := s.pool.Acquire(ctx, pool.Spec[Instance]{
		// The digest joins the key here: a re-tagged image changes no
		// record, so the Target's key cannot know of it.
		Key:         t.key + "|" + imageID,
		Group:       t.Fn.ID,
		App:         t.App.Name,
		Fn:          t.Fn.Name,
		MemoryMB:    t.Fn.Memory,
		IdleTimeout: time.Duration(t.Fn.IdleTimeout) * time.Second,
		Launch: func(ctx context.Context) (Instance, error) {
			return s.rt.StartHot(ctx, spec)
		},
	})
	if err != nil {
		return nil, poolError(err)
	}
	s.keys.Store(t.Fn.ID, t.key)
	resp, err := lease.Instance().Call(ctx, req, logs)
	if err != nil {
		// Whatever failed, the container's stream may be out of step
		// with kiln: it never serves again.
		lease.Discard()
		return nil, err
	}
	lease.Release()
	return resp, nil
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
