package store

import "context"

// CreateFn stores a new fn with a fresh id and timestamps; the argument is
// not modified. Its app must exist (errdefs.ErrNotFound naming the app),
// the secrets it names must be the app's (errdefs.ErrInvalid) and its name
// must be free within the app (errdefs.ErrConflict).
func (s *Store) CreateFn(ctx context.Context, in *Fn) (*Fn, error) {
	if err := checkName("fn", in.Name); err != nil {
		return nil, err
	}
	fn, err := roundTrip(in)
	if err != nil {
		return nil, err
	}
	fn.ID = s.NewID()
	fn.CreatedAt = s.timestamp()
	fn.UpdatedAt = fn.CreatedAt
	if err := s.resourceChanged(s.b.createFn(ctx, fn)); err != nil {
		return nil, err
	}
	return roundTrip(fn)
}

// GetFn returns the fn with id, or errdefs.ErrNotFound.
func (s *Store) GetFn(ctx context.Context, id string) (*Fn, error) { return s.b.getFn(ctx, id) }

// GetFnByName resolves a fn by its name within an app.
func (s *Store) GetFnByName(ctx context.Context, appID, name string) (*Fn, error) {
	return s.b.getFnByName(ctx, appID, name)
}

// ListFns returns one page of fns in creation order, filtered by
// opts.AppID and opts.Name, and the next page's cursor ("" on the last).
func (s *Store) ListFns(ctx context.Context, opts ListOptions) ([]*Fn, string, error) {
	return s.b.listFns(ctx, opts)
}

// UpdateFn applies fn to the stored fn and saves the result in one
// transaction; an error from fn aborts and is returned as is. The id, app
// and creation time cannot be changed; the secrets named must be the
// app's; a rename to a name taken in the app is errdefs.ErrConflict.
func (s *Store) UpdateFn(ctx context.Context, id string, fn func(*Fn) error) (*Fn, error) {
	out, err := s.b.updateFn(ctx, id, func(old *Fn) (*Fn, error) {
		f, err := roundTrip(old)
		if err != nil {
			return nil, err
		}
		if err := fn(f); err != nil {
			return nil, err
		}
		f.ID, f.AppID, f.CreatedAt = old.ID, old.AppID, old.CreatedAt
		if err := checkName("fn", f.Name); err != nil {
			return nil, err
		}
		f.UpdatedAt = s.timestamp()
		return f, nil
	})
	if err := s.resourceChanged(err); err != nil {
		return nil, err
	}
	return roundTrip(out)
}

// DeleteFn deletes a fn with its triggers and call records.
func (s *Store) DeleteFn(ctx context.Context, id string) error {
	return s.resourceChanged(s.b.deleteFn(ctx, id))
}
