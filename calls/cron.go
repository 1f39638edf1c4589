package calls

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// Cron triggers.
//
// A trigger of type cron fires its fn as a detached call on a schedule:
// its source is a standard 5-field expression (minute hour day-of-month
// month day-of-week, in kilnd's local time unless prefixed with
// CRON_TZ=<zone>), a descriptor such as @hourly, or @every <duration>.
// A fire goes through the same durable queue as a detached invoke, so
// once stored it is run at least once, and a full queue drops the fire
// (logged) rather than piling up. Fires missed while kilnd was down are
// not replayed: after a start each schedule resumes from the next time
// it matches, so an outage never turns into a burst of catch-up calls.

// cronBodyAnnotation is the trigger annotation whose string value is the
// body of every call the trigger fires.
const cronBodyAnnotation = "kiln.io/cron-body"

// ValidateCronSchedule checks a cron trigger's source the way the engine
// will read it, so a schedule that could never fire fails at create time.
// Its errors wrap errdefs.ErrInvalid and name the field.
func ValidateCronSchedule(src string) error {
	_, err := parseCronSchedule(src)
	return err
}

func invalidSource(format string, args ...any) error {
	return fmt.Errorf("%w trigger source: %s", errdefs.ErrInvalid, fmt.Sprintf(format, args...))
}

func parseCronSchedule(src string) (sched cron.Schedule, err error) {
	const help = "a 5-field cron expression (minute hour day-of-month month day-of-week), a descriptor such as @hourly, or @every <duration>"
	spec := strings.TrimSpace(src)
	if spec == "" {
		return nil, invalidSource("required: %s", help)
	}
	body := spec
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		// The parser slices up to the first space after the zone and
		// panics when there is none.
		i := strings.Index(spec, " ")
		if i < 0 {
			return nil, invalidSource("%q: a time zone prefix must be followed by a schedule", src)
		}
		body = strings.TrimSpace(spec[i:])
	}
	if rest, ok := strings.CutPrefix(body, "@every "); ok {
		// The parser would silently round these up or down.
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		switch {
		case err != nil:
			return nil, invalidSource("%q: %v", src, err)
		case d < time.Second:
			return nil, invalidSource("%q: the interval must be at least 1s", src)
		case d%time.Second != 0:
			return nil, invalidSource("%q: the interval must be whole seconds", src)
		}
	}
	defer func() {
		// Anyone who may create triggers controls this string; a parser
		// bug must not take kilnd down.
		if r := recover(); r != nil {
			sched, err = nil, invalidSource("%q is not %s", src, help)
		}
	}()
	sched, err = cron.ParseStandard(spec)
	if err != nil {
		return nil, invalidSource("%q is not %s: %v", src, help, err)
	}
	// The parser gives up looking after five years and answers zero.
	if sched.Next(time.Now()).IsZero() {
		return nil, invalidSource("%q never fires", src)
	}
	return sched, nil
}

// The cron lease: one node fires cron triggers. Its TTL is several passes
// of the engine (pollEvery), so a live holder never loses it to a slow
// pass, and a dead one is replaced within the TTL.
const (
	cronLease    = "cron"
	cronLeaseTTL = 5 * pollEvery
)

// cronEntry is one trigger in the engine's schedule.
type cronEntry struct {
	trig  *store.Trigger
	sched cron.Schedule
	next  time.Time
}

// runCron fires cron triggers. One goroutine sleeps until the earliest
// next fire, or until the next re-read of the triggers: the resource
// handlers do not tell the engine about changes, so it compares the
// store's cron triggers with its own copy every pollEvery. A deleted
// trigger also cannot fire in between: the fire's call is only stored
// while the trigger exists, checked in the same transaction.
//
// In a cluster every node runs the engine, but only the holder of the
// cron lease fires: it renews the lease at every pass, well inside its
// TTL, and another node takes over within a TTL of its death. Nodes that
// do not hold it keep their schedules moving, so one that takes over does
// not fire what it missed. A fire's call id comes from the trigger and
// the tick, so a tick fired twice around a take-over is stored once.
func (s *Service) runCron() {
	a := &s.async
	defer a.wg.Done()
	entries := map[string]*cronEntry{}
	var loadErr, leaseErr repeatLog
	var nextLoad time.Time
	leading := false
	var leasedAt time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(nextLoad) {
			err := s.syncCron(context.Background(), entries, now)
			loadErr.report(s.log, "load cron triggers", err)
			nextLoad = now.Add(pollEvery)
		}
		due := dueEntries(entries, now)
		if len(due) > 0 || now.Sub(leasedAt) >= pollEvery {
			leasedAt = now
			held, err := s.store.AcquireLease(context.Background(), cronLease, s.nodeID, cronLeaseTTL)
			leaseErr.report(s.log, "hold the cron lease", err)
			if held != leading {
				s.log.WithField("leading", held).Info("cron lease changed hands")
			}
			leading = held && err == nil
		}
		for _, e := range due {
			if leading {
				s.fireCron(context.Background(), e.trig, e.next)
			}
			// From now, not from the missed time: a fire delayed (by a
			// slow store, a suspended host) is not followed by a burst.
			e.next = e.sched.Next(now)
		}
		wait := nextLoad.Sub(now)
		for _, e := range entries {
			if e.sched == nil || e.next.IsZero() {
				continue
			}
			if d := e.next.Sub(now); d < wait {
				wait = d
			}
		}
		timer.Reset(max(wait, 0))
	}
}

// syncCron brings entries in line with the store's cron triggers. An
// entry keeps its next fire while its source is unchanged, so editing a
// trigger's annotations does not shift its schedule.
func (s *Service) syncCron(ctx context.Context, entries map[string]*cronEntry, now time.Time) error {
	trigs, err := s.store.ListTriggersByType(ctx, store.TriggerCron)
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(trigs))
	for _, t := range trigs {
		seen[t.ID] = true
		e := entries[t.ID]
		if e != nil && e.trig.Source == t.Source {
			// A bad schedule stays unscheduled, reported once.
			e.trig = t
			continue
		}
		log := s.log.WithFields(logrus.Fields{"trigger": t.Name, "trigger_id": t.ID, "schedule": t.Source})
		sched, err := parseCronSchedule(t.Source)
		if err != nil {
			// Only a trigger stored before validation existed gets here.
			log.WithError(err).Warn("cron trigger has a bad schedule; it will not fire")
			entries[t.ID] = &cronEntry{trig: t}
			continue
		}
		entries[t.ID] = &cronEntry{trig: t, sched: sched, next: sched.Next(now)}
		log.WithField("next", entries[t.ID].next).Debug("cron trigger scheduled")
	}
	for id := range entries {
		if !seen[id] {
			delete(entries, id)
		}
	}
	return nil
}

// dueEntries returns the entries due at now, in the order they fell due.
func dueEntries(entries map[string]*cronEntry, now time.Time) []*cronEntry {
	var due []*cronEntry
	for _, e := range entries {
		// A zero next means the schedule matches no time any more.
		if e.sched != nil && !e.next.IsZero() && !e.next.After(now) {
			due = append(due, e)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].next.Equal(due[j].next) {
			return due[i].next.Before(due[j].next)
		}
		return due[i].trig.ID < due[j].trig.ID
	})
	return due
}

// fireCron queues one call of t's fn for its fire due at. The call's id
// is derived from the trigger and that time, so if two nodes fire the
// same tick the second finds it stored and drops its copy.
func (s *Service) fireCron(ctx context.Context, t *store.Trigger, at time.Time) {
	var body []byte
	if v, ok := t.Annotations[cronBodyAnnotation].(string); ok {
		body = []byte(v)
	}
	c := &store.Call{
		ID:    store.DerivedID(at, "cron:"+t.ID),
		FnID:  t.FnID,
		AppID: t.AppID,
		Request: &store.CallRequest{
			Method: http.MethodPost,
			URL:    "cron://" + t.ID,
			Header: map[string][]string{"Fn-Trigger-Id": {t.ID}},
			Body:   body,
		},
	}
	log := s.log.WithFields(logrus.Fields{"trigger": t.Name, "trigger_id": t.ID, "fn_id": t.FnID, "call_id": c.ID})
	err := s.queueCall(ctx, c, t.ID)
	switch {
	case err == nil:
		log.Debug("cron trigger fired")
	case errors.Is(err, errdefs.ErrNotFound):
		log.WithError(err).Debug("cron trigger or its fn is gone; not fired")
	case errors.Is(err, errdefs.ErrConflict):
		log.Debug("cron tick already fired (by another node)")
	case errors.Is(err, errdefs.ErrUnavailable):
		log.WithError(err).Warn("cron fire dropped: the queue is full")
	default:
		log.WithError(fmt.Errorf("store the call: %w", err)).Error("cron fire dropped")
	}
}
