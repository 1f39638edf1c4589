package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

func (b *boltStore) createTrigger(ctx context.Context, t *Trigger) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		if _, err := loadApp(tx, t.AppID); err != nil {
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
}

func checkTriggerFn(tx *bolt.Tx, t *Trigger) error {
	fn, err := loadFn(tx, t.FnID)
	if err != nil {
		return err
	}
	if fn.AppID != t.AppID {
		return fnOfOtherApp(fn.ID, fn.AppID, t.AppID)
	}
	return nil
}

// addTriggerIndexes checks the uniqueness rules and writes every index
// entry of t; removeTriggerIndexes undoes it. Updates remove the old
// entries first, so a trigger never conflicts with itself.
func addTriggerIndexes(tx *bolt.Tx, t *Trigger) error {
	names := tx.Bucket(bktTrigNames)
	if names.Get(key(t.AppID, t.Name)) != nil {
		return triggerNameTaken(t.AppID, t.Name)
	}
	if err := names.Put(key(t.AppID, t.Name), []byte(t.ID)); err != nil {
		return err
	}
	if t.Type == TriggerHTTP {
		sources := tx.Bucket(bktTrigSources)
		if sources.Get(key(t.AppID, t.Source)) != nil {
			return triggerSourceTaken(t.AppID, t.Source)
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

func loadTrigger(tx *bolt.Tx, id string) (*Trigger, error) {
	t, err := getJSON[Trigger](tx.Bucket(bktTriggers), []byte(id))
	if err == nil && t == nil {
		err = triggerNotFound(id)
	}
	return t, err
}

func (b *boltStore) getTrigger(ctx context.Context, id string) (*Trigger, error) {
	var t *Trigger
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		t, err = loadTrigger(tx, id)
		return err
	})
	return t, err
}

func (b *boltStore) getTriggerBySource(ctx context.Context, appID, source string) (*Trigger, error) {
	var t *Trigger
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		id := tx.Bucket(bktTrigSources).Get(key(appID, source))
		if id == nil {
			return triggerSourceNotFound(appID, source)
		}
		t, err = loadTrigger(tx, string(id))
		return err
	})
	return t, err
}

func (b *boltStore) listTriggers(ctx context.Context, opts ListOptions) ([]*Trigger, string, error) {
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
			t, err := loadTrigger(tx, lastPart(k))
			if err != nil {
				return nil, err
			}
			return match(t), nil
		}
	}
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		switch {
		case opts.AppID != "" && opts.Name != "":
			ts = []*Trigger{}
			if id := tx.Bucket(bktTrigNames).Get(key(opts.AppID, opts.Name)); id != nil {
				t, err := loadTrigger(tx, string(id))
				if err != nil {
					return err
				}
				if t = match(t); t != nil {
					ts = append(ts, t)
				}
			}
			return nil
		case opts.FnID != "":
			ts, next, err = boltPage(tx.Bucket(bktFnTriggers), prefix(opts.FnID), opts, false, byIndex(tx))
		case opts.AppID != "":
			ts, next, err = boltPage(tx.Bucket(bktAppTriggers), prefix(opts.AppID), opts, false, byIndex(tx))
		default:
			ts, next, err = boltPage(tx.Bucket(bktTriggers), nil, opts, false, func(_, v []byte) (*Trigger, error) {
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

func (b *boltStore) listTriggersByType(ctx context.Context, typ string) ([]*Trigger, error) {
	var ts []*Trigger
	err := b.view(ctx, func(tx *bolt.Tx) error {
		ts = []*Trigger{}
		for _, id := range childIDs(tx.Bucket(bktTrigTypes), prefix(typ)) {
			t, err := loadTrigger(tx, id)
			if err != nil {
				return err
			}
			ts = append(ts, t)
		}
		return nil
	})
	return ts, err
}

func (b *boltStore) updateTrigger(ctx context.Context, id string, apply func(*Trigger) (*Trigger, error)) (*Trigger, error) {
	var out *Trigger
	err := b.update(ctx, func(tx *bolt.Tx) error {
		old, err := loadTrigger(tx, id)
		if err != nil {
			return err
		}
		t, err := apply(old)
		if err != nil {
			return err
		}
		if t.FnID != old.FnID {
			if err := checkTriggerFn(tx, t); err != nil {
				return err
			}
		}
		if err := removeTriggerIndexes(tx, old); err != nil {
			return err
		}
		if err := addTriggerIndexes(tx, t); err != nil {
			return err
		}
		out = t
		return putJSON(tx.Bucket(bktTriggers), []byte(t.ID), t)
	})
	return out, err
}

func (b *boltStore) deleteTrigger(ctx context.Context, id string) error {
	return b.update(ctx, func(tx *bolt.Tx) error { return removeTrigger(tx, id) })
}

func removeTrigger(tx *bolt.Tx, id string) error {
	t, err := loadTrigger(tx, id)
	if err != nil {
		return err
	}
	if err := removeTriggerIndexes(tx, t); err != nil {
		return err
	}
	return tx.Bucket(bktTriggers).Delete([]byte(id))
}
