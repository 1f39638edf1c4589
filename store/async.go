package store

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kiln-run/kiln/errdefs"

	bolt "go.etcd.io/bbolt"
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

// EnqueueCall stores c as a queued call if the queue bounds allow it,
// all in one write transaction, so the bounds hold exactly however many
// clients enqueue at once and however calls leave the queue (run, or
// deleted with their fn). It counts by walking the queued entries of
// the status index: cheap next to the fsync of the commit, and it needs
// no counter that every other writer would have to keep in step. The
// caller chooses c.ID as for CreateCall; a zero CreatedAt means now and
// an empty AppID is the fn's. c is not modified.
func (s *Store) EnqueueCall(ctx context.Context, c *Call, lim QueueLimits) error {
	if err := checkCallID(c.ID); err != nil {
		return err
	}
	if c.Request == nil {
		return fmt.Errorf("%w call %q: a queued call needs its request", errdefs.ErrInvalid, c.ID)
	}
	rec := c.stored()
	rec.Status = CallQueued
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.timestamp()
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		fn, err := getFn(tx, c.FnID)
		if err != nil {
			return err
		}
		if lim.TriggerID != "" {
			t, err := getTrigger(tx, lim.TriggerID)
			if err != nil {
				return err
			}
			if t.FnID != fn.ID {
				return fmt.Errorf("trigger %q no longer calls fn %q: %w", t.ID, fn.ID, errdefs.ErrNotFound)
			}
		}
		if lim.PerFn > 0 || lim.Total > 0 {
			total, mine := countQueued(tx, fn.ID, lim.Total)
			if lim.Total > 0 && total >= lim.Total {
				return &QueueFullError{FnID: fn.ID, Waiting: total}
			}
			if lim.PerFn > 0 && mine >= lim.PerFn {
				return &QueueFullError{FnID: fn.ID, Waiting: mine, PerFn: true}
			}
		}
		return insertCall(tx, fn, rec)
	})
}

// countQueued counts all queued calls and those of fnID. Once total
// reaches stopAt (when > 0) the answer is decided, so it stops there and
// the fn's count may be short.
func countQueued(tx *bolt.Tx, fnID string, stopAt int) (total, mine int) {
	pfx := prefix(CallQueued)
	suffix := []byte(sep + fnID)
	c := tx.Bucket(bktCallStatuses).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		total++
		if bytes.HasSuffix(k, suffix) {
			mine++
		}
		if stopAt > 0 && total >= stopAt {
			break
		}
	}
	return total, mine
}

// CountQueued returns how many calls are queued, in all and per fn.
func (s *Store) CountQueued(ctx context.Context) (int, map[string]int, error) {
	perFn := map[string]int{}
	total := 0
	err := s.view(ctx, func(tx *bolt.Tx) error {
		pfx := prefix(CallQueued)
		c := tx.Bucket(bktCallStatuses).Cursor()
		for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
			total++
			perFn[lastPart(k)]++
		}
		return nil
	})
	return total, perFn, err
}
