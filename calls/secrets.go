package calls

import (
	"context"
	"fmt"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/store"
)

// Secrets are an app's, sealed in the store with kilnd's key; the value
// is never returned, logged or put in a container's env. A fn names the
// secrets it gets, and they appear in its containers as files under
// /run/secrets. Changing one refreshes the containers of the fns that
// name it (their spec, and so their key, includes the values).

// MaxSecretSize bounds one secret's value.
const MaxSecretSize = 64 << 10

func sealedWhere(appID, name string) string { return appID + "/" + name }

// PutSecret creates or replaces an app's secret.
func (s *Service) PutSecret(ctx context.Context, appID, name string, value []byte) (*store.Secret, error) {
	if s.cfg.Secrets == nil {
		return nil, errdefs.Errorf(errdefs.ErrUnavailable, "this kilnd has no secrets key")
	}
	if len(value) > MaxSecretSize {
		return nil, fmt.Errorf("%w secret value: %d bytes, at most %d", errdefs.ErrInvalid, len(value), MaxSecretSize)
	}
	sec, err := s.store.PutSecret(ctx, appID, name, s.cfg.Secrets.Seal(value, sealedWhere(appID, name)))
	if err != nil {
		return nil, err
	}
	sec.Sealed = nil
	s.RefreshApp(ctx, appID)
	return sec, nil
}

// ListSecrets lists an app's secrets, without their values.
func (s *Service) ListSecrets(ctx context.Context, appID string) ([]*store.Secret, error) {
	return s.store.ListSecrets(ctx, appID)
}

// DeleteSecret deletes a secret no fn names.
func (s *Service) DeleteSecret(ctx context.Context, appID, name string) error {
	return s.store.DeleteSecret(ctx, appID, name)
}

// openSecrets reads and opens the secrets fn names, for its spec.
func (r *resolver) openSecrets(ctx context.Context, fn *store.Fn) ([]executor.Secret, error) {
	if len(fn.Secrets) == 0 {
		return nil, nil
	}
	if r.box == nil {
		return nil, errdefs.Errorf(errdefs.ErrUnavailable, "fn %q has secrets, but this kilnd has no secrets key", fn.Name)
	}
	out := make([]executor.Secret, 0, len(fn.Secrets))
	for _, name := range fn.Secrets {
		sec, err := r.store.GetSecret(ctx, fn.AppID, name)
		if err != nil {
			return nil, fmt.Errorf("fn %q: %w", fn.Name, err)
		}
		value, err := r.box.Open(sec.Sealed, sealedWhere(fn.AppID, name))
		if err != nil {
			return nil, fmt.Errorf("fn %q: secret %q: %w", fn.Name, name, err)
		}
		out = append(out, executor.Secret{Name: name, Value: value})
	}
	return out, nil
}
