package store

import (
	"context"
	"time"
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

// PutSecret creates or replaces a secret of an app. It counts as a
// resource change (the generation moves): a fn's containers see its
// secrets, so they are then refreshed.
func (s *Store) PutSecret(ctx context.Context, appID, name string, sealed []byte) (*Secret, error) {
	if err := checkName("secret", name); err != nil {
		return nil, err
	}
	now := s.timestamp()
	sec := &Secret{Name: name, AppID: appID, Sealed: sealed, CreatedAt: now, UpdatedAt: now}
	out, err := s.b.putSecret(ctx, sec)
	if err := s.resourceChanged(err); err != nil {
		return nil, err
	}
	return out, nil
}

// GetSecret returns a secret with its sealed value.
func (s *Store) GetSecret(ctx context.Context, appID, name string) (*Secret, error) {
	return s.b.getSecret(ctx, appID, name)
}

// ListSecrets lists an app's secrets by name, without their values.
func (s *Store) ListSecrets(ctx context.Context, appID string) ([]*Secret, error) {
	return s.b.listSecrets(ctx, appID)
}

// DeleteSecret deletes a secret no fn of its app names (errdefs.ErrConflict
// naming them otherwise: a fn would not start without it).
func (s *Store) DeleteSecret(ctx context.Context, appID, name string) error {
	return s.resourceChanged(s.b.deleteSecret(ctx, appID, name))
}
