package store

import "context"

// CreateApp stores a new app with a fresh id and timestamps; the argument
// is not modified. A taken name is errdefs.ErrConflict.
func (s *Store) CreateApp(ctx context.Context, in *App) (*App, error) {
	if err := checkName("app", in.Name); err != nil {
		return nil, err
	}
	app, err := roundTrip(in)
	if err != nil {
		return nil, err
	}
	app.ID = s.NewID()
	app.CreatedAt = s.timestamp()
	app.UpdatedAt = app.CreatedAt
	if err := s.resourceChanged(s.b.createApp(ctx, app)); err != nil {
		return nil, err
	}
	return roundTrip(app)
}

// GetApp returns the app with id, or errdefs.ErrNotFound.
func (s *Store) GetApp(ctx context.Context, id string) (*App, error) { return s.b.getApp(ctx, id) }

// GetAppByName resolves an app by its unique name; trigger routes use it
// on every call, so it is an index lookup.
func (s *Store) GetAppByName(ctx context.Context, name string) (*App, error) {
	return s.b.getAppByName(ctx, name)
}

// ListApps returns one page of apps in creation order and the cursor of
// the next page ("" on the last). opts.Name selects the app of that name.
func (s *Store) ListApps(ctx context.Context, opts ListOptions) ([]*App, string, error) {
	return s.b.listApps(ctx, opts)
}

// UpdateApp applies fn to the stored app and saves the result, all in one
// transaction so concurrent updates cannot lose each other's changes. An
// error from fn aborts the update and is returned as is. The id and
// creation time cannot be changed; a rename to a taken name is
// errdefs.ErrConflict.
func (s *Store) UpdateApp(ctx context.Context, id string, fn func(*App) error) (*App, error) {
	out, err := s.b.updateApp(ctx, id, func(old *App) (*App, error) {
		app, err := roundTrip(old)
		if err != nil {
			return nil, err
		}
		if err := fn(app); err != nil {
			return nil, err
		}
		app.ID, app.CreatedAt = old.ID, old.CreatedAt
		if err := checkName("app", app.Name); err != nil {
			return nil, err
		}
		app.UpdatedAt = s.timestamp()
		return app, nil
	})
	if err := s.resourceChanged(err); err != nil {
		return nil, err
	}
	return roundTrip(out)
}

// DeleteApp deletes an app with its fns, their triggers and call records,
// and its secrets, and returns the ids of the deleted fns (in creation
// order) so their containers can be drained.
func (s *Store) DeleteApp(ctx context.Context, id string) ([]string, error) {
	fnIDs, err := s.b.deleteApp(ctx, id)
	if err := s.resourceChanged(err); err != nil {
		return nil, err
	}
	return fnIDs, nil
}
