package calls

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/seal"
	"github.com/kiln-run/kiln/store"
)

// Target is a resolved fn: its records and the container spec built from
// them. Targets are shared between calls: read-only.
type Target struct {
	App *store.App
	Fn  *store.Fn
	// spec is what the fn's containers see; key names it (see specKey).
	spec *executor.Function
	key  string
	// policyErr refuses every call of a fn the sandbox policy forbids.
	policyErr error
	// pspec is the pool spec last made for it (see poolSpec).
	pspec atomic.Pointer[cachedSpec]
}

// resolver maps invoke and trigger routes to their Target without a store
// transaction per call: hot calls take tens of microseconds, and the
// three to four bbolt reads with JSON decoding a resolution takes would
// be a good share of that. Entries hold for one store generation: any
// change to an app, fn or trigger empties the cache, so a changed trigger
// path or app config reaches the next call's spec, and so its key.
type resolver struct {
	store            *store.Store
	allowHostNetwork bool
	box              *seal.Box

	mu        sync.RWMutex
	gen       uint64
	byFn      map[string]*Target
	byTrigger map[triggerKey]*Target
}

type triggerKey struct{ app, source string }

func newResolver(st *store.Store, allowHostNetwork bool, box *seal.Box) *resolver {
	return &resolver{store: st, allowHostNetwork: allowHostNetwork, box: box,
		byFn: map[string]*Target{}, byTrigger: map[triggerKey]*Target{}}
}

// cached returns the cached entry if the store has not changed since it
// was cached; the generation read before the store is what new entries
// are tagged with.
func (r *resolver) cached(get func() (*Target, bool)) (*Target, bool, uint64) {
	gen := r.store.Generation()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.gen != gen {
		return nil, false, gen
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

// ByFn resolves a fn by id (POST /invoke/{fn_id}).
func (s *Service) ByFn(ctx context.Context, fnID string) (*Target, error) {
	return s.targets.fn(ctx, fnID)
}

// ByTrigger resolves an http trigger (/t/{app}/{source}).
func (s *Service) ByTrigger(ctx context.Context, appName, source string) (*Target, error) {
	return s.targets.trigger(ctx, appName, source)
}

func (r *resolver) fn(ctx context.Context, fnID string) (*Target, error) {
	t, ok, gen := r.cached(func() (*Target, bool) { t, ok := r.byFn[fnID]; return t, ok })
	if ok {
		return t, nil
	}
	fn, err := r.store.GetFn(ctx, fnID)
	if err != nil {
		return nil, fnLookupError(fnID, err)
	}
	t, err = r.build(ctx, fn)
	if err != nil {
		return nil, err
	}
	r.remember(gen, func() { r.byFn[fnID] = t })
	return t, nil
}

func (r *resolver) trigger(ctx context.Context, appName, source string) (*Target, error) {
	k := triggerKey{appName, source}
	t, ok, gen := r.cached(func() (*Target, bool) { t, ok := r.byTrigger[k]; return t, ok })
	if ok {
		return t, nil
	}
	app, err := r.store.GetAppByName(ctx, appName)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("app %q %w", appName, errdefs.ErrNotFound)
		}
		return nil, err
	}
	trig, err := r.store.GetTriggerBySource(ctx, app.ID, source)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("trigger %q in app %q %w", source, appName, errdefs.ErrNotFound)
		}
		return nil, err
	}
	fn, err := r.store.GetFn(ctx, trig.FnID)
	if err != nil {
		return nil, fnLookupError(trig.FnID, err)
	}
	t, err = r.build(ctx, fn)
	if err != nil {
		return nil, err
	}
	r.remember(gen, func() { r.byTrigger[k] = t })
	return t, nil
}

// build reads what else a fn's containers depend on (its app, its http
// trigger's path) and makes the Target.
func (r *resolver) build(ctx context.Context, fn *store.Fn) (*Target, error) {
	app, err := r.store.GetApp(ctx, fn.AppID)
	if err != nil {
		return nil, fmt.Errorf("app %q of fn %q: %w", fn.AppID, fn.ID, err)
	}
	trigs, _, err := r.store.ListTriggers(ctx, store.ListOptions{FnID: fn.ID, PerPage: store.MaxPerPage})
	if err != nil {
		return nil, fmt.Errorf("triggers of fn %q: %w", fn.ID, err)
	}
	secrets, err := r.openSecrets(ctx, fn)
	if err != nil {
		return nil, err
	}
	spec := functionSpec(app, fn, trigs)
	spec.Secrets = secrets
	return &Target{App: app, Fn: fn, spec: spec, key: specKey(spec, fn), policyErr: r.policy(spec)}, nil
}

// policy refuses host networking unless the operator allowed it: a fn on
// the node's network can reach kilnd and everything else there.
func (r *resolver) policy(f *executor.Function) error {
	if f.HostNetwork && !r.allowHostNetwork {
		return fmt.Errorf("%w: fn %q asks for host networking (%s), which this kilnd does not allow (--allow-host-network)",
			errdefs.ErrInvalid, f.FnName, AnnotationNetwork)
	}
	return nil
}

func fnLookupError(fnID string, err error) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("fn %q %w", fnID, errdefs.ErrNotFound)
	}
	return err
}
