package store

import (
	"context"
	"fmt"

	"github.com/kiln-run/kiln/errdefs"
)

// QueueFullError refuses a detached call because too many wait already;
// it is an errdefs.ErrUnavailable (the caller may retry later), and says
// which bound it hit.
type QueueFullError struct {
	FnID string
	// Waiting is how many calls were queued under the bound that was hit:
	// the fn's when PerFn, all fns' otherwise.
	Waiting int
	PerFn   bool
}

func (e *QueueFullError) Error() string {
	if e.PerFn {
		return fmt.Sprintf("queue for fn %q is full (%d calls waiting)", e.FnID, e.Waiting)
	}
	return fmt.Sprintf("queue is full (%d calls waiting)", e.Waiting)
}

func (e *QueueFullError) Is(target error) bool { return target == errdefs.ErrUnavailable }

// QueueLimits are the checks EnqueueCall makes in the transaction that
// stores the call.
type QueueLimits struct {
	// PerFn and Total bound the queued calls of the call's fn and of all
	// fns; zero means no bound.
	PerFn int
	Total int
	// TriggerID, when set, must name an existing trigger of the call's fn:
	// a cron fire racing its trigger's deletion then stores nothing.
	TriggerID string
}

// full decides the bounds from the counts of queued calls in all
// and of the call's fn, in that order: both backends answer alike.
func (lim QueueLimits) full(fnID string, total, mine int) error {
	if lim.Total > 0 && total >= lim.Total {
		return &QueueFullError{FnID: fnID, Waiting: total}
	}
	if lim.PerFn > 0 && mine >= lim.PerFn {
		return &QueueFullError{FnID: fnID, Waiting: mine, PerFn: true}
	}
	return nil
}

// EnqueueCall stores c as a queued call if the queue bounds allow it,
// all in one transaction that no other enqueue can interleave with, so
// the bounds hold exactly however many clients (or nodes) enqueue at
// once and however calls leave the queue (run, or deleted with their
// fn). The caller chooses c.ID as for CreateCall; a zero CreatedAt means
// now and an empty AppID is the fn's. c is not modified.
func (s *Store) EnqueueCall(ctx context.Context, c *Call, lim QueueLimits) error {
	if err := checkCallID(c.ID); err != nil {
		return err
	}
	if c.Request == nil {
		return fmt.Errorf("%w call %q: a queued call needs its request", errdefs.ErrInvalid, c.ID)
	}
	rec := *c
	rec.Status = CallQueued
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.timestamp()
	}
	return s.b.enqueueCall(ctx, &rec, lim)
}

// CountQueued returns how many calls are queued, in all and per fn.
func (s *Store) CountQueued(ctx context.Context) (int, map[string]int, error) {
	return s.b.countQueued(ctx)
}
