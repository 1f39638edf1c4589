package store

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-run/kiln/errdefs"
)

// Secret is what the store keeps of an app's secret: the value sealed by
// the caller (the store never sees it in the clear) and when it changed.
type Secret struct {
	Name      string    `json:"name"`
	AppID     string    `json:"app_id"`
	Sealed    []byte    `json:"sealed,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func secretNotFound(appID, name string) error {
	return fmt.Errorf("secret %q of app %q %w", name, appID, errdefs.ErrNotFound)
}

// PutSecret creates or replaces a secret of an app. It counts as a
// resource change (the generation moves): a fn's containers see its
// secrets, so they are then refreshed.
func (s *Store) PutSecret(ctx context.Context, appID, name string, sealed []byte) (*Secret, error) {
	if err := checkName("secret", name); err != nil {
		return nil, err
	}
	var out *Secret
	err := s.updateResources(ctx, func(tx *bolt.Tx) error {
		if _, err := getApp(tx, appID); err != nil {
			return err
		}
		b := tx.Bucket(bktSecrets)
		k := key(appID, name)
		now := s.timestamp()
		sec, err := getJSON[Secret](b, k)
		if err != nil {
			return err
		}
		if sec == nil {
			sec = &Secret{Name: name, AppID: appID, CreatedAt: now}
		}
		sec.Sealed, sec.UpdatedAt = sealed, now
		out = sec
		return putJSON(b, k, sec)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetSecret returns a secret with its sealed value.
func (s *Store) GetSecret(ctx context.Context, appID, name string) (*Secret, error) {
	var out *Secret
	err := s.view(ctx, func(tx *bolt.Tx) error {
		sec, err := getJSON[Secret](tx.Bucket(bktSecrets), key(appID, name))
		if err == nil && sec == nil {
			err = secretNotFound(appID, name)
		}
		out = sec
		return err
	})
	return out, err
}

// ListSecrets lists an app's secrets by name, without their values.
func (s *Store) ListSecrets(ctx context.Context, appID string) ([]*Secret, error) {
	var out []*Secret
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if _, err := getApp(tx, appID); err != nil {
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

// DeleteSecret deletes a secret no fn of its app names (errdefs.ErrConflict
// naming them otherwise: a fn would not start without it).
func (s *Store) DeleteSecret(ctx context.Context, appID, name string) error {
	return s.updateResources(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bktSecrets)
		k := key(appID, name)
		if b.Get(k) == nil {
			return secretNotFound(appID, name)
		}
		var users []string
		for _, fnID := range childIDs(tx.Bucket(bktAppFns), prefix(appID)) {
			fn, err := getFn(tx, fnID)
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
			return fmt.Errorf("%w: secret %q is used by fn %v; remove it from them first", errdefs.ErrConflict, name, users)
		}
		return b.Delete(k)
	})
}

// checkSecrets refuses a fn naming a secret its app does not have.
func checkSecrets(tx *bolt.Tx, fn *Fn) error {
	b := tx.Bucket(bktSecrets)
	for _, n := range fn.Secrets {
		if b.Get(key(fn.AppID, n)) == nil {
			return fmt.Errorf("%w fn secrets: app %q has no secret %q", errdefs.ErrInvalid, fn.AppID, n)
		}
	}
	return nil
}

// deleteAppSecrets removes every secret of an app being deleted.
func deleteAppSecrets(tx *bolt.Tx, appID string) error {
	b := tx.Bucket(bktSecrets)
	pfx := prefix(appID)
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
