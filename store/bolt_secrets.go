package store

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

func (b *boltStore) putSecret(ctx context.Context, in *Secret) (*Secret, error) {
	var out *Secret
	err := b.update(ctx, func(tx *bolt.Tx) error {
		if _, err := loadApp(tx, in.AppID); err != nil {
			return err
		}
		bkt := tx.Bucket(bktSecrets)
		k := key(in.AppID, in.Name)
		old, err := getJSON[Secret](bkt, k)
		if err != nil {
			return err
		}
		sec := *in
		if old != nil {
			sec.CreatedAt = old.CreatedAt
		}
		out = &sec
		return putJSON(bkt, k, &sec)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (b *boltStore) getSecret(ctx context.Context, appID, name string) (*Secret, error) {
	var out *Secret
	err := b.view(ctx, func(tx *bolt.Tx) error {
		sec, err := getJSON[Secret](tx.Bucket(bktSecrets), key(appID, name))
		if err == nil && sec == nil {
			err = secretNotFound(appID, name)
		}
		out = sec
		return err
	})
	return out, err
}

func (b *boltStore) listSecrets(ctx context.Context, appID string) ([]*Secret, error) {
	var out []*Secret
	err := b.view(ctx, func(tx *bolt.Tx) error {
		if _, err := loadApp(tx, appID); err != nil {
			return err
		}
		pfx := prefix(appID)
		c := tx.Bucket(bktSecrets).Cursor()
		for k, v := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
			sec, err := decode[Secret](v)
			if err != nil {
				return err
			}
			sec.Sealed = nil
			out = append(out, sec)
		}
		return nil
	})
	return out, err
}

func (b *boltStore) deleteSecret(ctx context.Context, appID, name string) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		bkt := tx.Bucket(bktSecrets)
		k := key(appID, name)
		if bkt.Get(k) == nil {
			return secretNotFound(appID, name)
		}
		var users []string
		for _, fnID := range childIDs(tx.Bucket(bktAppFns), prefix(appID)) {
			fn, err := loadFn(tx, fnID)
			if err != nil {
				return err
			}
			for _, n := range fn.Secrets {
				if n == name {
					users = append(users, fmt.Sprintf("%q", fn.Name))
				}
			}
		}
		if len(users) > 0 {
			return secretInUse(name, users)
		}
		return bkt.Delete(k)
	})
}

// checkSecrets refuses a fn naming a secret its app does not have.
func checkSecrets(tx *bolt.Tx, fn *Fn) error {
	b := tx.Bucket(bktSecrets)
	for _, n := range fn.Secrets {
		if b.Get(key(fn.AppID, n)) == nil {
			return missingSecret(fn.AppID, n)
		}
	}
	return nil
}

// removeAppSecrets removes every secret of an app being deleted.
func removeAppSecrets(tx *bolt.Tx, appID string) error {
	b := tx.Bucket(bktSecrets)
	pfx := prefix(appID)
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
