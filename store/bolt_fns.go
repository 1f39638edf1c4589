package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

func (b *boltStore) createFn(ctx context.Context, fn *Fn) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		if _, err := loadApp(tx, fn.AppID); err != nil {
			return err
		}
		if err := checkSecrets(tx, fn); err != nil {
			return err
		}
		names := tx.Bucket(bktFnNames)
		nk := key(fn.AppID, fn.Name)
		if names.Get(nk) != nil {
			return fnNameTaken(fn.AppID, fn.Name)
		}
		if err := names.Put(nk, []byte(fn.ID)); err != nil {
			return err
		}
		if err := tx.Bucket(bktAppFns).Put(key(fn.AppID, fn.ID), nil); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bktFns), []byte(fn.ID), fn)
	})
}

func loadFn(tx *bolt.Tx, id string) (*Fn, error) {
	fn, err := getJSON[Fn](tx.Bucket(bktFns), []byte(id))
	if err == nil && fn == nil {
		err = fnNotFound(id)
	}
	return fn, err
}

func (b *boltStore) getFn(ctx context.Context, id string) (*Fn, error) {
	var fn *Fn
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		fn, err = loadFn(tx, id)
		return err
	})
	return fn, err
}

func (b *boltStore) getFnByName(ctx context.Context, appID, name string) (*Fn, error) {
	var fn *Fn
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bktFnNames).Get(key(appID, name))
		if id == nil {
			return fnNameNotFound(appID, name)
		}
		fn, err = loadFn(tx, string(id))
		return err
	})
	return fn, err
}

func (b *boltStore) listFns(ctx context.Context, opts ListOptions) ([]*Fn, string, error) {
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
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		switch {
		case opts.AppID != "" && opts.Name != "":
			fns = []*Fn{}
			if id := tx.Bucket(bktFnNames).Get(key(opts.AppID, opts.Name)); id != nil {
				fn, err := loadFn(tx, string(id))
				if err != nil {
					return err
				}
				fns = append(fns, fn)
			}
			return nil
		case opts.AppID != "":
			fns, next, err = boltPage(tx.Bucket(bktAppFns), prefix(opts.AppID), opts, false, func(k, _ []byte) (*Fn, error) {
				return loadFn(tx, lastPart(k))
			})
		default:
			fns, next, err = boltPage(tx.Bucket(bktFns), nil, opts, false, func(_, v []byte) (*Fn, error) {
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

func (b *boltStore) updateFn(ctx context.Context, id string, apply func(*Fn) (*Fn, error)) (*Fn, error) {
	var out *Fn
	err := b.update(ctx, func(tx *bolt.Tx) error {
		old, err := loadFn(tx, id)
		if err != nil {
			return err
		}
		f, err := apply(old)
		if err != nil {
			return err
		}
		if err := checkSecrets(tx, f); err != nil {
			return err
		}
		if f.Name != old.Name {
			names := tx.Bucket(bktFnNames)
			if names.Get(key(f.AppID, f.Name)) != nil {
				return fnNameTaken(f.AppID, f.Name)
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
	return out, err
}

func (b *boltStore) deleteFn(ctx context.Context, id string) error {
	return b.update(ctx, func(tx *bolt.Tx) error { return removeFn(tx, id) })
}

func removeFn(tx *bolt.Tx, id string) error {
	fn, err := loadFn(tx, id)
	if err != nil {
		return err
	}
	for _, trigID := range childIDs(tx.Bucket(bktFnTriggers), prefix(id)) {
		if err := removeTrigger(tx, trigID); err != nil {
			return err
		}
	}
	if err := removeFnCalls(tx, id); err != nil {
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
