package store

import (
	"context"
	"fmt"

	"github.com/kiln-run/kiln/errdefs"

	bolt "go.etcd.io/bbolt"
)

// Trigger types.
const (
	TriggerHTTP = "http"
	TriggerCron = "cron"
)

func triggerNotFound(id string) error { return fmt.Errorf("trigger %q %w", id, errdefs.ErrNotFound) }

// CreateTrigger stores a new trigger with a fresh id and timestamps; the
// argument is not modified. An empty type means http. The app and fn must
// exist and the fn must belong to the app. Within an app, names are unique
// and so are the sources of http triggers (errdefs.ErrConflict); cron triggers may
// share a schedule.
func (s *Store) CreateTrigger(ctx context.Context, in *Trigger) (*Trigger, error) {
	if err := checkName("trigger", in.Name); err != nil {
		return nil, err
	}
	t, err := roundTrip(in)
	if err != nil {
		return nil, err
	}
	if t.Type == "" {
		t.Type = TriggerHTTP
	}
	t.ID = s.NewID()
	t.CreatedAt = s.timestamp()
	t.UpdatedAt = t.CreatedAt
	err = s.updateResources(ctx, func(tx *bolt.Tx) error {
		if _, err := getApp(tx, t.AppID); err != nil {
			return err
		}
		if err := checkTriggerFn(tx, t); err != nil {
			return err
		}
		if err := addTriggerIndexes(tx, t); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bktTriggers), []byte(t.ID), t)
	})
	if err != nil {
		return nil, err
	}
	return roundTrip(t)
}

func checkTriggerFn(tx *bolt.Tx, t *Trigger) error {
	fn, err := getFn(tx, t.FnID)
	if err != nil {
		return err
	}
	if fn.AppID != t.AppID {
		return fmt.Errorf("%w trigger fn_id: fn %q belongs to app %q, not %q", errdefs.ErrInvalid, fn.ID, fn.AppID, t.AppID)
	}
	return nil
}

// addTriggerIndexes checks the uniqueness rules and writes every index
// entry of t; removeTriggerIndexes undoes it. Updates remove the old
// entries first, so a trigger never conflicts with itself.
func addTriggerIndexes(tx *bolt.Tx, t *Trigger) error {
	names := tx.Bucket(bktTrigNames)
	if names.Get(key(t.AppID, t.Name)) != nil {
		return fmt.Errorf("%w: trigger named %q in app %q already exists", errdefs.ErrConflict, t.Name, t.AppID)
	}
	if err := names.Put(key(t.AppID, t.Name), []byte(t.ID)); err != nil {
		return err
	}
	if t.Type == TriggerHTTP {
		sources := tx.Bucket(bktTrigSources)
		if sources.Get(key(t.AppID, t.Source)) != nil {
			return fmt.Errorf("%w: http trigger with source %q in app %q already exists", errdefs.ErrConflict, t.Source, t.AppID)
		}
		if err := sources.Put(key(t.AppID, t.Source), []byte(t.ID)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bktAppTriggers).Put(key(t.AppID, t.ID), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bktFnTriggers).Put(key(t.FnID, t.ID), nil); err != nil {
		return err
	}
	return tx.Bucket(bktTrigTypes).Put(key(t.Type, t.ID), nil)
}

func removeTriggerIndexes(tx *bolt.Tx, t *Trigger) error {
	dels := []struct {
		bucket []byte
		key    []byte
	}{
		{bktTrigNames, key(t.AppID, t.Name)},
		{bktAppTriggers, key(t.AppID, t.ID)},
		{bktFnTriggers, key(t.FnID, t.ID)},
		{bktTrigTypes, key(t.Type, t.ID)},
	}
	if t.Type == TriggerHTTP {
		dels = append(dels, struct {
			bucket []byte
			key    []byte
		}{bktTrigSources, key(t.AppID, t.Source)})
	}
	for _, d := range dels {
		if err := tx.Bucket(d.bucket).Delete(d.key); err != nil {
			return err
		}
	}
	return nil
}

func getTrigger(tx *bolt.Tx, id string) (*Trigger, error) {
	t, err := getJSON[Trigger](tx.Bucket(bktTriggers), []byte(id))
	if err == nil && t == nil {
		err = triggerNotFound(id)
	}
	return t, err
}

// GetTrigger returns the trigger with id, or errdefs.ErrNotFound.
func (s *Store) GetTrigger(ctx context.Context, id string) (*Trigger, error) {
	var t *Trigger
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		t, err = getTrigger(tx, id)
		return err
	})
	return t, err
}

// GetTriggerBySource finds an app's http trigger for a path. It runs on
// every trigger call, so it is a single index lookup.
func (s *Store) GetTriggerBySource(ctx context.Context, appID, source string) (*Trigger, error) {
	var t *Trigger
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bktTrigSources).Get(key(appID, source))
		if id == nil {
			return fmt.Errorf("http trigger with source %q in app %q %w", source, appID, errdefs.ErrNotFound)
		}
		t, err = getTrigger(tx, string(id))
		return err
	})
	return t, err
}

// ListTriggers returns one page of triggers in creation order, filtered by
// opts.AppID, opts.FnID and opts.Name, and the next page's cursor.
func (s *Store) ListTriggers(ctx context.Context, opts ListOptions) ([]*Trigger, string, error) {
	var (
		ts   []*Trigger
		next string
	)
	match := func(t *Trigger) *Trigger {
		if (opts.AppID != "" && t.AppID != opts.AppID) ||
			(opts.FnID != "" && t.FnID != opts.FnID) ||
			(opts.Name != "" && t.Name != opts.Name) {
			return nil
		}
		return t
	}
	byIndex := func(tx *bolt.Tx) func(k, _ []byte) (*Trigger, error) {
		return func(k, _ []byte) (*Trigger, error) {
			t, err := getTrigger(tx, lastPart(k))
			if err != nil {
				return nil, err
			}
			return match(t), nil
		}
	}
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		switch {
		case opts.AppID != "" && opts.Name != "":
			ts = []*Trigger{}
			if id := tx.Bucket(bktTrigNames).Get(key(opts.AppID, opts.Name)); id != nil {
				t, err := getTrigger(tx, string(id))
				if err != nil {
					return err
				}
				if t = match(t); t != nil {
					ts = append(ts, t)
				}
			}
			return nil
		case opts.FnID != "":
			ts, next, err = page(tx.Bucket(bktFnTriggers), prefix(opts.FnID), opts, false, byIndex(tx))
		case opts.AppID != "":
			ts, next, err = page(tx.Bucket(bktAppTriggers), prefix(opts.AppID), opts, false, byIndex(tx))
		default:
			ts, next, err = page(tx.Bucket(bktTriggers), nil, opts, false, func(_, v []byte) (*Trigger, error) {
				t, err := decode[Trigger](v)
				if err != nil {
					return nil, err
				}
				return match(t), nil
			})
		}
		return err
	})
	return ts, next, err
}

// ListTriggersByType returns every trigger of a type, in creation order;
// the cron engine loads its schedule with it.
func (s *Store) ListTriggersByType(ctx context.Context, typ string) ([]*Trigger, error) {
	var ts []*Trigger
	err := s.view(ctx, func(tx *bolt.Tx) error {
		ts = []*Trigger{}
		for _, id := range childIDs(tx.Bucket(bktTrigTypes), prefix(typ)) {
			t, err := getTrigger(tx, id)
			if err != nil {
				return err
			}
			ts = append(ts, t)
		}
		return nil
	})
	return ts, err
}

// UpdateTrigger applies fn to the stored trigger and saves the result in
// one transaction, keeping the indexes in step; an error from fn aborts
// and is returned as is. The id, app and creation time cannot be changed.
// A new fn must belong to the same app; uniqueness rules are those of
// CreateTrigger.
func (s *Store) UpdateTrigger(ctx context.Context, id string, fn func(*Trigger) error) (*Trigger, error) {
	var out *Trigger
	err := s.updateResources(ctx, func(tx *bolt.Tx) error {
		old, err := getTrigger(tx, id)
		if err != nil {
			return err
		}
		t, err := roundTrip(old)
		if err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return err
		}
		t.ID, t.AppID, t.CreatedAt = old.ID, old.AppID, old.CreatedAt
		if t.Type == "" {
			t.Type = TriggerHTTP
		}
		if err := checkName("trigger", t.Name); err != nil {
			return err
		}
		if t.FnID != old.FnID {
			if err := checkTriggerFn(tx, t); err != nil {
				return err
			}
		}
		t.UpdatedAt = s.timestamp()
		if err := removeTriggerIndexes(tx, old); err != nil {
			return err
		}
		if err := addTriggerIndexes(tx, t); err != nil {
			return err
		}
		out = t
		return putJSON(tx.Bucket(bktTriggers), []byte(t.ID), t)
	})
	if err != nil {
		return nil, err
	}
	return roundTrip(out)
}

// DeleteTrigger deletes a trigger.
func (s *Store) DeleteTrigger(ctx context.Context, id string) error {
	return s.updateResources(ctx, func(tx *bolt.Tx) error { return deleteTrigger(tx, id) })
}

func deleteTrigger(tx *bolt.Tx, id string) error {
	t, err := getTrigger(tx, id)
	if err != nil {
		return err
	}
	if err := removeTriggerIndexes(tx, t); err != nil {
		return err
	}
	return tx.Bucket(bktTriggers).Delete([]byte(id))
}
