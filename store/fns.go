package store

import (
	"context"
	"fmt"

	"github.com/kiln-run/kiln/errdefs"

	bolt "go.etcd.io/bbolt"
)

func fnNotFound(id string) error { return fmt.Errorf("fn %q %w", id, errdefs.ErrNotFound) }

// CreateFn stores a new fn with a fresh id and timestamps; the argument is
// not modified. Its app must exist (errdefs.ErrNotFound naming the app) and its
// name must be free within the app (errdefs.ErrConflict).
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
	err = s.updateResources(ctx, func(tx *bolt.Tx) error {
		if _, err := getApp(tx, fn.AppID); err != nil {
			return err
		}
		if err := checkSecrets(tx, fn); err != nil {
			return err
		}
		names := tx.Bucket(bktFnNames)
		nk := key(fn.AppID, fn.Name)
		if names.Get(nk) != nil {
			return fmt.Errorf("%w: fn named %q in app %q already exists", errdefs.ErrConflict, fn.Name, fn.AppID)
		}
		if err := names.Put(nk, []byte(fn.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bktAppFns).Put(key(fn.AppID, fn.ID), nil); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bktFns), []byte(fn.ID), fn)
	})
	if err != nil {
		return nil, err
	}
	return roundTrip(fn)
}

func getFn(tx *bolt.Tx, id string) (*Fn, error) {
	fn, err := getJSON[Fn](tx.Bucket(bktFns), []byte(id))
	if err == nil && fn == nil {
		err = fnNotFound(id)
	}
	return fn, err
}

// GetFn returns the fn with id, or errdefs.ErrNotFound.
func (s *Store) GetFn(ctx context.Context, id string) (*Fn, error) {
	var fn *Fn
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		fn, err = getFn(tx, id)
		return err
	})
	return fn, err
}

// GetFnByName resolves a fn by its name within an app.
func (s *Store) GetFnByName(ctx context.Context, appID, name string) (*Fn, error) {
	var fn *Fn
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bktFnNames).Get(key(appID, name))
		if id == nil {
			return fmt.Errorf("fn named %q in app %q %w", name, appID, errdefs.ErrNotFound)
		}
		fn, err = getFn(tx, string(id))
		return err
	})
	return fn, err
}

// ListFns returns one page of fns in creation order, filtered by
// opts.AppID and opts.Name, and the next page's cursor ("" on the last).
func (s *Store) ListFns(ctx context.Context, opts ListOptions) ([]*Fn, string, error) {
	var (
		fns  []*Fn
		next string
	)
	match := func(fn *Fn) *Fn {
		if opts.Name != "" && fn.Name != opts.Name {
			return nil
		}
		return fn
	}
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		switch {
		case opts.AppID != "" && opts.Name != "":
			fns = []*Fn{}
			if id := tx.Bucket(bktFnNames).Get(key(opts.AppID, opts.Name)); id != nil {
				fn, err := getFn(tx, string(id))
				if err != nil {
					return err
				}
				fns = append(fns, fn)
			}
			return nil
		case opts.AppID != "":
			fns, next, err = page(tx.Bucket(bktAppFns), prefix(opts.AppID), opts, false, func(k, _ []byte) (*Fn, error) {
				return getFn(tx, lastPart(k))
			})
		default:
			fns, next, err = page(tx.Bucket(bktFns), nil, opts, false, func(_, v []byte) (*Fn, error) {
				fn, err := decode[Fn](v)
				if err != nil {
					return nil, err
				}
				return match(fn), nil
			})
		}
		return err
	})
	return fns, next, err
}

// UpdateFn applies fn to the stored fn and saves the result in one
// transaction; an error from fn aborts and is returned as is. The id, app
// and creation time cannot be changed; a rename to a name taken in the app
// is errdefs.ErrConflict.
func (s *Store) UpdateFn(ctx context.Context, id string, fn func(*Fn) error) (*Fn, error) {
	var out *Fn
	err := s.updateResources(ctx, func(tx *bolt.Tx) error {
		old, err := getFn(tx, id)
		if err != nil {
			return err
		}
		f, err := roundTrip(old)
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
		f.ID, f.AppID, f.CreatedAt = old.ID, old.AppID, old.CreatedAt
		if err := checkName("fn", f.Name); err != nil {
			return err
		}
		if err := checkSecrets(tx, f); err != nil {
			return err
		}
		f.UpdatedAt = s.timestamp()
		if f.Name != old.Name {
			names := tx.Bucket(bktFnNames)
			if names.Get(key(f.AppID, f.Name)) != nil {
				return fmt.Errorf("%w: fn named %q in app %q already exists", errdefs.ErrConflict, f.Name, f.AppID)
			}
			if err := names.Delete(key(old.AppID, old.Name)); err != nil {
				return err
			}
			if err := names.Put(key(f.AppID, f.Name), []byte(f.ID)); err != nil {
				return err
			}
		}
		out = f
		return putJSON(tx.Bucket(bktFns), []byte(f.ID), f)
	})
	if err != nil {
		return nil, err
	}
	return roundTrip(out)
}

// DeleteFn deletes a fn with its triggers and call records.
func (s *Store) DeleteFn(ctx context.Context, id string) error {
	return s.updateResources(ctx, func(tx *bolt.Tx) error { return deleteFn(tx, id) })
}

func deleteFn(tx *bolt.Tx, id string) error {
	fn, err := getFn(tx, id)
	if err != nil {
		return err
	}
	for _, trigID := range childIDs(tx.Bucket(bktFnTriggers), prefix(id)) {
		if err := deleteTrigger(tx, trigID); err != nil {
			return err
		}
	}
	if err := deleteFnCalls(tx, id); err != nil {
		return err
	}
	if err := tx.Bucket(bktFnNames).Delete(key(fn.AppID, fn.Name)); err != nil {
		return err
	}
	if err := tx.Bucket(bktAppFns).Delete(key(fn.AppID, fn.ID)); err != nil {
		return err
	}
	return tx.Bucket(bktFns).Delete([]byte(id))
}
