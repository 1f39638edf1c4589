package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kiln-run/kiln/store"
)

// resolver maps invoke and trigger routes to their app and fn without a
// store transaction per call: hot calls take tens of microseconds and
// three bbolt reads with JSON decoding would be a good share of that.
// Entries hold for one store generation; any change to an app, fn or
// trigger empties the cache. Cached records are shared: read-only.
type resolver struct {
	store *store.Store

	mu        sync.RWMutex
	gen       uint64
	byFn      map[string]resolved
	byTrigger map[triggerKey]resolved
}

type resolved struct {
	app *store.App
	fn  *store.Fn
}

type triggerKey struct{ app, source string }

func newResolver(st *store.Store) *resolver {
	return &resolver{store: st, byFn: map[string]resolved{}, byTrigger: map[triggerKey]resolved{}}
}

// cached returns the cached entry if the store has not changed since it
// was cached; the generation read before the store is what new entries
// are tagged with.
func (r *resolver) cached(get func() (resolved, bool)) (resolved, bool, uint64) {
	gen := r.store.Generation()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.gen != gen {
		return resolved{}, false, gen
	}
	v, ok := get()
	return v, ok, gen
}

func (r *resolver) remember(gen uint64, put func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		if gen < r.gen {
			return // a slower reader with an older view: drop it
		}
		r.gen = gen
		clear(r.byFn)
		clear(r.byTrigger)
	}
	put()
}

// fn resolves POST /invoke/{fn_id}.
func (r *resolver) fn(ctx context.Context, fnID string) (*store.App, *store.Fn, error) {
	v, ok, gen := r.cached(func() (resolved, bool) { v, ok := r.byFn[fnID]; return v, ok })
	if ok {
		return v.app, v.fn, nil
	}
	fn, err := r.store.GetFn(ctx, fnID)
	if err != nil {
		return nil, nil, fnLookupError(fnID, err)
	}
	app, err := r.store.GetApp(ctx, fn.AppID)
	if err != nil {
		return nil, nil, fmt.Errorf("app %q of fn %q: %w", fn.AppID, fnID, err)
	}
	r.remember(gen, func() { r.byFn[fnID] = resolved{app, fn} })
	return app, fn, nil
}

// trigger resolves /t/{app}/{source}.
func (r *resolver) trigger(ctx context.Context, appName, source string) (*store.App, *store.Fn, error) {
	k := triggerKey{appName, source}
	v, ok, gen := r.cached(func() (resolved, bool) { v, ok := r.byTrigger[k]; return v, ok })
	if ok {
		return v.app, v.fn, nil
	}
	app, err := r.store.GetAppByName(ctx, appName)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("app %q: %w", appName, store.ErrNotFound)
		}
		return nil, nil, err
	}
	trig, err := r.store.GetTriggerBySource(ctx, app.ID, source)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("no trigger %q in app %q: %w", source, appName, store.ErrNotFound)
		}
		return nil, nil, err
	}
	fn, err := r.store.GetFn(ctx, trig.FnID)
	if err != nil {
		return nil, nil, fnLookupError(trig.FnID, err)
	}
	r.remember(gen, func() { r.byTrigger[k] = resolved{app, fn} })
	return app, fn, nil
}
