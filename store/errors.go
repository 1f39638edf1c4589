package store

import (
	"fmt"

	"github.com/kiln-run/kiln/errdefs"
)

// The errors both backends return, made in one place so a caller (and
// the api's messages) cannot tell which backend is in use.

func appNotFound(id string) error { return fmt.Errorf("app %q %w", id, errdefs.ErrNotFound) }

func appNameNotFound(name string) error {
	return fmt.Errorf("app named %q %w", name, errdefs.ErrNotFound)
}

func appNameTaken(name string) error {
	return fmt.Errorf("%w: app named %q already exists", errdefs.ErrConflict, name)
}

func fnNotFound(id string) error { return fmt.Errorf("fn %q %w", id, errdefs.ErrNotFound) }

func fnNameNotFound(appID, name string) error {
	return fmt.Errorf("fn named %q in app %q %w", name, appID, errdefs.ErrNotFound)
}

func fnNameTaken(appID, name string) error {
	return fmt.Errorf("%w: fn named %q in app %q already exists", errdefs.ErrConflict, name, appID)
}

func fnOfOtherApp(fnID, fnApp, appID string) error {
	return fmt.Errorf("%w trigger fn_id: fn %q belongs to app %q, not %q", errdefs.ErrInvalid, fnID, fnApp, appID)
}

func missingSecret(appID, name string) error {
	return fmt.Errorf("%w fn secrets: app %q has no secret %q", errdefs.ErrInvalid, appID, name)
}

func triggerNotFound(id string) error { return fmt.Errorf("trigger %q %w", id, errdefs.ErrNotFound) }

func triggerNameTaken(appID, name string) error {
	return fmt.Errorf("%w: trigger named %q in app %q already exists", errdefs.ErrConflict, name, appID)
}

func triggerSourceTaken(appID, source string) error {
	return fmt.Errorf("%w: http trigger with source %q in app %q already exists", errdefs.ErrConflict, source, appID)
}

func triggerSourceNotFound(appID, source string) error {
	return fmt.Errorf("http trigger with source %q in app %q %w", source, appID, errdefs.ErrNotFound)
}

func triggerMoved(triggerID, fnID string) error {
	return fmt.Errorf("trigger %q no longer calls fn %q: %w", triggerID, fnID, errdefs.ErrNotFound)
}

func callNotFound(fnID, callID string) error {
	return fmt.Errorf("call %q of fn %q %w", callID, fnID, errdefs.ErrNotFound)
}

func callTaken(fnID, callID string) error {
	return fmt.Errorf("%w: call %q of fn %q already exists", errdefs.ErrConflict, callID, fnID)
}

func badStatus(status string) error {
	return fmt.Errorf("%w call status %q", errdefs.ErrInvalid, status)
}

func secretNotFound(appID, name string) error {
	return fmt.Errorf("secret %q of app %q %w", name, appID, errdefs.ErrNotFound)
}

// secretInUse names the fns (quoted) that still name the secret.
func secretInUse(name string, users []string) error {
	return fmt.Errorf("%w: secret %q is used by fn %v; remove it from them first", errdefs.ErrConflict, name, users)
}
