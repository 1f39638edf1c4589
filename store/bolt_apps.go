package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

func (b *boltStore) createApp(ctx context.Context, app *App) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		names := tx.Bucket(bktAppNames)
		if names.Get([]byte(app.Name)) != nil {
			return appNameTaken(app.Name)
		}
		if err := names.Put([]byte(app.Name), []byte(app.ID)); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bktApps), []byte(app.ID), app)
	})
}

func loadApp(tx *bolt.Tx, id string) (*App, error) {
	app, err := getJSON[App](tx.Bucket(bktApps), []byte(id))
	if err == nil && app == nil {
		err = appNotFound(id)
	}
	return app, err
}

func (b *boltStore) getApp(ctx context.Context, id string) (*App, error) {
	var app *App
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		app, err = loadApp(tx, id)
		return err
	})
	return app, err
}

func (b *boltStore) getAppByName(ctx context.Context, name string) (*App, error) {
	var app *App
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bktAppNames).Get([]byte(name))
		if id == nil {
			return appNameNotFound(name)
		}
		app, err = loadApp(tx, string(id))
		return err
	})
	return app, err
}

func (b *boltStore) listApps(ctx context.Context, opts ListOptions) ([]*App, string, error) {
	var (
		apps []*App
		next string
	)
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		if opts.Name != "" {
			apps = []*App{}
			if id := tx.Bucket(bktAppNames).Get([]byte(opts.Name)); id != nil {
				app, err := loadApp(tx, string(id))
				if err != nil {
					return err
				}
				apps = append(apps, app)
			}
			return nil
		}
		apps, next, err = boltPage(tx.Bucket(bktApps), nil, opts, false, func(k, v []byte) (*App, error) {
			return decode[App](v)
		})
		return err
	})
	return apps, next, err
}

func (b *boltStore) updateApp(ctx context.Context, id string, apply func(*App) (*App, error)) (*App, error) {
	var out *App
	err := b.update(ctx, func(tx *bolt.Tx) error {
		old, err := loadApp(tx, id)
		if err != nil {
			return err
		}
		app, err := apply(old)
		if err != nil {
			return err
		}
		if app.Name != old.Name {
			names := tx.Bucket(bktAppNames)
			if names.Get([]byte(app.Name)) != nil {
				return appNameTaken(app.Name)
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
	return out, err
}

func (b *boltStore) deleteApp(ctx context.Context, id string) ([]string, error) {
	var fnIDs []string
	err := b.update(ctx, func(tx *bolt.Tx) error {
		app, err := loadApp(tx, id)
		if err != nil {
			return err
		}
		fnIDs = childIDs(tx.Bucket(bktAppFns), prefix(id))
		for _, fnID := range fnIDs {
			if err := removeFn(tx, fnID); err != nil {
				return err
			}
		}
		if err := removeAppSecrets(tx, id); err != nil {
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
