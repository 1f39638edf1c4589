package calls

import (
	"context"
	"fmt"

	"github.com/kiln-run/kiln/store"
)

// Refresh retires the warm containers of each fn whose spec key changed
// (see specKey): idle ones close now, busy ones when their call ends, and
// the next call gets a fresh container. api calls it after any change to
// a fn, its app or its triggers; a change that alters nothing a container
// sees (an annotation, a trigger's name) keeps them. Without Refresh the
// next call would still get a fresh container, as its key is new; Refresh
// only frees the old ones' memory at once.
func (s *Service) Refresh(ctx context.Context, fnIDs ...string) {
	for _, id := range fnIDs {
		if err := s.refresh(ctx, id); err != nil {
			s.log.WithError(err).WithField("fn_id", id).Warn("min_warm containers not kept after a change")
		}
	}
}

// refresh retires id's stale containers and keeps its min_warm ones for
// what it is now; the error is the min_warm's.
func (s *Service) refresh(ctx context.Context, id string) error {
	t, err := s.targets.fn(ctx, id)
	if old, ok := s.keys.Load(id); ok && (err != nil || t.key != old) {
		// Deleted, changed, or unreadable: retiring is the safe side.
		// Draining also ends the old key's min_warm.
		s.keys.Delete(id)
		s.warmKeys.Delete(id)
		s.warmCounts.Delete(id)
		s.pool.Drain(id)
	}
	if err != nil || (t.Fn.MinWarm == 0 && s.warmN(id) == 0) {
		return nil
	}
	imageID, err := s.rt.ImageID(ctx, t.Fn.Image)
	if err != nil {
		return fmt.Errorf("fn %q: min_warm needs its image: %w", t.Fn.Name, err)
	}
	return s.warm(t, t.poolSpec(s, imageID))
}

// RefreshApp refreshes every fn of an app. The change is already saved,
// so a store failure is only logged: the containers are then replaced at
// the next call, whose key is new.
func (s *Service) RefreshApp(ctx context.Context, appID string) {
	opts := store.ListOptions{AppID: appID, PerPage: store.MaxPerPage}
	for {
		fns, next, err := s.store.ListFns(ctx, opts)
		if err != nil {
			s.log.WithError(err).WithField("app_id", appID).Warn("list fns to refresh after an app change")
			return
		}
		for _, fn := range fns {
			s.Refresh(ctx, fn.ID)
		}
		if next == "" {
			return
		}
		opts.Cursor = next
	}
}

// noteKey records the pool key t's containers run under, for refresh. A
// store into sync.Map allocates even when the value is the same, and the
// key changes only when the fn does: every call comes through here.
func (s *Service) noteKey(t *Target) {
	if old, ok := s.keys.Load(t.Fn.ID); !ok || old != t.key {
		s.keys.Store(t.Fn.ID, t.key)
	}
}
