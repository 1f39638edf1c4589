package store

import "context"

// Trigger types.
const (
	TriggerHTTP = "http"
	TriggerCron = "cron"
)

// CreateTrigger stores a new trigger with a fresh id and timestamps; the
// argument is not modified. An empty type means http. The app and fn must
// exist and the fn must belong to the app. Within an app, names are unique
// and so are the sources of http triggers (errdefs.ErrConflict); cron
// triggers may share a schedule.
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
	if err := s.resourceChanged(s.b.createTrigger(ctx, t)); err != nil {
		return nil, err
	}
	return roundTrip(t)
}

// GetTrigger returns the trigger with id, or errdefs.ErrNotFound.
func (s *Store) GetTrigger(ctx context.Context, id string) (*Trigger, error) {
	return s.b.getTrigger(ctx, id)
}

// GetTriggerBySource finds an app's http trigger for a path. It runs on
// every trigger call, so it is a single index lookup.
func (s *Store) GetTriggerBySource(ctx context.Context, appID, source string) (*Trigger, error) {
	return s.b.getTriggerBySource(ctx, appID, source)
}

// ListTriggers returns one page of triggers in creation order, filtered by
// opts.AppID, opts.FnID and opts.Name, and the next page's cursor.
func (s *Store) ListTriggers(ctx context.Context, opts ListOptions) ([]*Trigger, string, error) {
	return s.b.listTriggers(ctx, opts)
}

// ListTriggersByType returns every trigger of a type, in creation order;
// the cron engine loads its schedule with it.
func (s *Store) ListTriggersByType(ctx context.Context, typ string) ([]*Trigger, error) {
	return s.b.listTriggersByType(ctx, typ)
}

// UpdateTrigger applies fn to the stored trigger and saves the result in
// one transaction, keeping the indexes in step; an error from fn aborts
// and is returned as is. The id, app and creation time cannot be changed.
// A new fn must belong to the same app; uniqueness rules are those of
// CreateTrigger.
func (s *Store) UpdateTrigger(ctx context.Context, id string, fn func(*Trigger) error) (*Trigger, error) {
	out, err := s.b.updateTrigger(ctx, id, func(old *Trigger) (*Trigger, error) {
		t, err := roundTrip(old)
		if err != nil {
			return nil, err
		}
		if err := fn(t); err != nil {
			return nil, err
		}
		t.ID, t.AppID, t.CreatedAt = old.ID, old.AppID, old.CreatedAt
		if t.Type == "" {
			t.Type = TriggerHTTP
		}
		if err := checkName("trigger", t.Name); err != nil {
			return nil, err
		}
		t.UpdatedAt = s.timestamp()
		return t, nil
	})
	if err := s.resourceChanged(err); err != nil {
		return nil, err
	}
	return roundTrip(out)
}

// DeleteTrigger deletes a trigger.
func (s *Store) DeleteTrigger(ctx context.Context, id string) error {
	return s.resourceChanged(s.b.deleteTrigger(ctx, id))
}
