package store

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kiln-run/kiln/errdefs"

	bolt "go.etcd.io/bbolt"
)

func appNotFound(id string) error { return fmt.Errorf("app %q %w", id, errdefs.ErrNotFound) }

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
	err = s.updateResources(ctx, func(tx *bolt.Tx) error {
		names := tx.Bucket(bktAppNames)
		if names.Get([]byte(app.Name)) != nil {
			return fmt.Errorf("%w: app named %q already exists", errdefs.ErrConflict, app.Name)
		}
		if err := names.Put([]byte(app.Name), []byte(app.ID)); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bktApps), []byte(app.ID), app)
	})
	if err != nil {
		return nil, err
	}
	return roundTrip(app)
}

func getApp(tx *bolt.Tx, id string) (*App, error) {
	app, err := getJSON[App](tx.Bucket(bktApps), []byte(id))
	if err == nil && app == nil {
		err = appNotFound(id)
	}
	return app, err
}

// GetApp returns the app with id, or errdefs.ErrNotFound.
func (s *Store) GetApp(ctx context.Context, id string) (*App, error) {
	var app *App
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		app, err = getApp(tx, id)
		return err
	})
	return app, err
}

// GetAppByName resolves an app by its unique name; trigger routes use it
// on every call, so it is an index lookup.
func (s *Store) GetAppByName(ctx context.Context, name string) (*App, error) {
	var app *App
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bktAppNames).Get([]byte(name))
		if id == nil {
			return fmt.Errorf("app named %q %w", name, errdefs.ErrNotFound)
		}
		app, err = getApp(tx, string(id))
		return err
	})
	return app, err
}

// ListApps returns one page of apps in creation order and the cursor of
// the next page ("" on the last). opts.Name selects the app of that name.
func (s *Store) ListApps(ctx context.Context, opts ListOptions) ([]*App, string, error) {
	var (
		apps []*App
		next string
	)
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		if opts.Name != "" {
			apps = []*App{}
			if id := tx.Bucket(bktAppNames).Get([]byte(opts.Name)); id != nil {
				app, err := getApp(tx, string(id))
				if err != nil {
					return err
				}
				apps = append(apps, app)
			}
			return nil
		}
		apps, next, err = page(tx.Bucket(bktApps), nil, opts, false, func(k, v []byte) (*App, error) {
			return decode[App](v)
		})
		return err
	})
	return apps, next, err
}

// UpdateApp applies fn to the stored app and saves the result, all in one
// transaction so concurrent updates cannot lose each other's changes. An
// error from fn aborts the update and is returned as is. The id and
// creation time cannot be changed; a rename to a taken name is errdefs.ErrConflict.
func (s *Store) UpdateApp(ctx context.Context, id string, fn func(*App) error) (*App, error) {
	var out *App
	err := s.updateResources(ctx, func(tx *bolt.Tx) error {
		old, err := getApp(tx, id)
		if err != nil {
			return err
		}
		app, err := roundTrip(old)
		if err != nil {
			return err
		}
		if err := fn(app); err != nil {
			return err
		}
		app.ID, app.CreatedAt = old.ID, old.CreatedAt
		if err := checkName("app", app.Name); err != nil {
			return err
		}
		app.UpdatedAt = s.timestamp()
		if app.Name != old.Name {
			names := tx.Bucket(bktAppNames)
			if names.Get([]byte(app.Name)) != nil {
				return fmt.Errorf("%w: app named %q already exists", errdefs.ErrConflict, app.Name)
			}
			if err := names.Delete([]byte(old.Name)); err != nil {
				return err
			}
			if err := names.Put([]byte(app.Name), []byte(app.ID)); err != nil {
				return err
			}
		}
		out = app
		return putJSON(tx.Bucket(bktApps), []byte(app.ID), app)
	})
	if err != nil {
		return nil, err
	}
	return roundTrip(out)
}

// DeleteApp deletes an app with its fns, their triggers and call records,
// and returns the ids of the deleted fns so their containers can be
// drained.
func (s *Store) DeleteApp(ctx context.Context, id string) ([]string, error) {
	var fnIDs []string
	err := s.updateResources(ctx, func(tx *bolt.Tx) error {
		app, err := getApp(tx, id)
		if err != nil {
			return err
		}
		fnIDs = childIDs(tx.Bucket(bktAppFns), prefix(id))
		for _, fnID := range fnIDs {
			if err := deleteFn(tx, fnID); err != nil {
				return err
			}
		}
		if err := deleteAppSecrets(tx, id); err != nil {
			return err
		}
		// Every trigger points at one of the app's fns, so deleting the
		// fns removed them all; the app's index prefix is now empty.
		if err := tx.Bucket(bktAppNames).Delete([]byte(app.Name)); err != nil {
			return err
		}
		return tx.Bucket(bktApps).Delete([]byte(id))
	})
	if err != nil {
		return nil, err
	}
	return fnIDs, nil
}

// childIDs lists the ids under pfx in an index of "parent \0 child" keys.
// It collects before the caller deletes: deleting under a live bolt cursor
// skips entries.
func childIDs(b *bolt.Bucket, pfx []byte) []string {
	var ids []string
	c := b.Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		ids = append(ids, lastPart(k))
	}
	return ids
}
