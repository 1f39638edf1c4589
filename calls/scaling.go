package calls

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// concurrency counts each fn's calls running or waiting, for its
// max_concurrency: a call past it is refused at once (429), not queued,
// so a flood on one fn costs others nothing.
type concurrency struct {
	m sync.Map // fn id -> *atomic.Int64
}

func (c *concurrency) enter(fnID string, max int) bool {
	if max <= 0 {
		return true
	}
	v, _ := c.m.LoadOrStore(fnID, new(atomic.Int64))
	n := v.(*atomic.Int64)
	if n.Add(1) > int64(max) {
		n.Add(-1)
		return false
	}
	return true
}

func (c *concurrency) leave(fnID string, max int) {
	if max <= 0 {
		return
	}
	if v, ok := c.m.Load(fnID); ok {
		v.(*atomic.Int64).Add(-1)
	}
}

func tooManyCalls(fn *store.Fn) error {
	return errdefs.Errorf(errdefs.ErrTooManyRequests, "fn %q is at its max_concurrency of %d calls", fn.Name, fn.MaxConcurrency)
}

// poolSpec is how the pool knows t's containers: the key (spec key plus
// image digest: a re-tagged image changes no record, so the Target's key
// cannot know of it) and the fn's limits. It is made once per Target and
// image, not per call: a Spec holds a closure and a key string.
func (t *Target) poolSpec(s *Service, imageID string) pool.Spec[Instance] {
	if c := t.pspec.Load(); c != nil && c.imageID == imageID {
		return c.spec
	}
	spec := t.spec
	ps := pool.Spec[Instance]{
		Key:          t.key + "|" + imageID,
		Group:        t.Fn.ID,
		App:          t.App.Name,
		Fn:           t.Fn.Name,
		MemoryMB:     t.Fn.Memory,
		IdleTimeout:  secondsOr(t.Fn.IdleTimeout, store.DefaultIdleTimeout),
		MaxInstances: t.Fn.MaxInstances,
		MaxRequests:  t.Fn.MaxRequests,
		Launch: func(ctx context.Context) (Instance, error) {
			return s.rt.StartHot(ctx, spec)
		},
	}
	t.pspec.Store(&cachedSpec{imageID: imageID, spec: ps})
	return ps
}

type cachedSpec struct {
	imageID string
	spec    pool.Spec[Instance]
}

// warm keeps t's min_warm containers for its current pool key, or clears
// a min-warm it had. It is cheap when nothing changed, so execute calls it
// whenever the key it meets is not the one kept warm (a re-tagged image).
func (s *Service) warm(t *Target, spec pool.Spec[Instance]) error {
	prev, had := s.warmKeys.Load(t.Fn.ID)
	n := t.Fn.MinWarm
	if !protocol.Hot(t.Fn.Format) {
		n = 0
	}
	if had && prev == spec.Key && s.warmN(t.Fn.ID) == n {
		return nil
	}
	if n == 0 && !had {
		return nil
	}
	if err := s.pool.SetMinWarm(spec, n); err != nil {
		if errors.Is(err, pool.ErrNoCapacity) {
			return errdefs.Errorf(errdefs.ErrConflict, "fn %q: min_warm %d cannot be kept: %v", t.Fn.Name, n, err)
		}
		return err
	}
	if n == 0 {
		s.warmKeys.Delete(t.Fn.ID)
		s.warmCounts.Delete(t.Fn.ID)
		return nil
	}
	s.warmKeys.Store(t.Fn.ID, spec.Key)
	s.warmCounts.Store(t.Fn.ID, n)
	// Its containers now exist without a call: Refresh must know them.
	s.noteKey(t)
	return nil
}

func secondsOr(s, def int) time.Duration {
	if s <= 0 {
		s = def
	}
	return time.Duration(s) * time.Second
}

func (s *Service) warmN(fnID string) int {
	if v, ok := s.warmCounts.Load(fnID); ok {
		return v.(int)
	}
	return 0
}

// Deploy brings fnID's containers in line with its record after a create
// or an update: stale ones retire (see Refresh) and its min_warm ones are
// launched. A min_warm that the node's memory cannot hold beside the other
// fns' is an errdefs.ErrConflict that says how much is needed; the caller
// then undoes the change.
func (s *Service) Deploy(ctx context.Context, fnID string) error {
	if _, err := s.targets.fn(ctx, fnID); err != nil {
		return err
	}
	return s.refresh(ctx, fnID)
}

// warmAll starts the min_warm containers of every fn, as after a restart.
// A fn that does not fit is logged and left cold: it fitted when it was
// deployed, and another fn's reservation is not taken away for it.
func (s *Service) warmAll(ctx context.Context) error {
	opts := store.ListOptions{PerPage: store.MaxPerPage}
	for {
		fns, next, err := s.store.ListFns(ctx, opts)
		if err != nil {
			return fmt.Errorf("list fns to keep warm: %w", err)
		}
		for _, fn := range fns {
			if fn.MinWarm == 0 {
				continue
			}
			if err := s.Deploy(ctx, fn.ID); err != nil {
				s.log.WithError(err).WithField("fn", fn.Name).Warn("min_warm containers not started")
			}
		}
		if next == "" {
			return nil
		}
		opts.Cursor = next
	}
}
