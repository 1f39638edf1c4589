package calls

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

func TestValidateCronSchedule(t *testing.T) {
	for _, tt := range []struct {
		src     string
		problem string // "" when valid
	}{
		{"* * * * *", ""},
		{"*/5 9-17 * * mon-fri", ""},
		{"0 0 1 1 *", ""},
		{"@hourly", ""},
		{"@every 1s", ""},
		{"@every 2m30s", ""},
		{"  @every 10s  ", ""},
		{"CRON_TZ=UTC 30 6 * * *", ""},
		{"", "required"},
		{"   ", "required"},
		{"* * * *", "is not a 5-field cron expression"},
		{"0 * * * * *", "is not a 5-field cron expression"},
		{"61 * * * *", "is not a 5-field cron expression"},
		{"* * * * funday", "is not a 5-field cron expression"},
		{"@often", "is not a 5-field cron expression"},
		{"@every", "is not a 5-field cron expression"},
		{"@every soon", "invalid duration"},
		{"@every 500ms", "at least 1s"},
		{"@every -5s", "at least 1s"},
		{"@every 1500ms", "whole seconds"},
		{"0 0 31 2 *", "never fires"},
		{"TZ=UTC", "time zone prefix"},
		{"CRON_TZ=Nowhere/City * * * * *", "is not a 5-field cron expression"},
	} {
		name := tt.src
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		t.Run(name, func(t *testing.T) {
			err := ValidateCronSchedule(tt.src)
			if tt.problem == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.problem) {
				t.Fatalf("err = %v, want an invalid error mentioning %q", err, tt.problem)
			}
			if !strings.HasPrefix(err.Error(), "invalid trigger source") {
				t.Fatalf("err = %q does not name the field", err)
			}
		})
	}
}

// cronRecorder is a runtime that notes every call it runs and when.
type cronRecorder struct {
	mu    sync.Mutex
	reqs  []*protocol.Request
	times []time.Time
}

func (c *cronRecorder) run(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	c.times = append(c.times, time.Now())
	c.mu.Unlock()
	return echoRun(ctx, req, logs)
}

func (c *cronRecorder) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reqs)
}

func (c *cronRecorder) snapshot() ([]*protocol.Request, []time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*protocol.Request(nil), c.reqs...), append([]time.Time(nil), c.times...)
}

func countCalls(t *testing.T, st *store.Store, fnID string) int {
	t.Helper()
	calls, _, err := st.ListCalls(context.Background(), fnID, store.ListOptions{PerPage: store.MaxPerPage})
	if err != nil {
		t.Fatal(err)
	}
	return len(calls)
}

func TestCronTriggerFires(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	rec := &cronRecorder{}
	startService(t, st, Config{}, rec.run)

	// Created after the start: the engine finds it on its next read of
	// the store.
	trig, err := st.CreateTrigger(context.Background(), &store.Trigger{
		Name: "tick", AppID: fn.AppID, FnID: fn.ID, Type: store.TriggerCron, Source: "@every 1s",
		Annotations: map[string]any{cronBodyAnnotation: "tick body"},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "4 cron fires", func() bool { return rec.count() >= 4 })

	reqs, times := rec.snapshot()
	var gaps []string
	for i := 1; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]).Round(time.Millisecond).String())
	}
	t.Logf("first fire %s after the trigger was created; then every %v", times[0].Sub(trig.CreatedAt).Round(time.Millisecond), gaps)
	for i, req := range reqs {
		if req.Method != "POST" || req.URL != "cron://"+trig.ID || req.Header.Get("Fn-Trigger-Id") != trig.ID || string(req.Body) != "tick body" {
			t.Fatalf("fire %d: %+v", i, req)
		}
		if i > 0 {
			// Generous: the point is "about every second", not precision.
			if gap := times[i].Sub(times[i-1]); gap < 400*time.Millisecond || gap > 2500*time.Millisecond {
				t.Fatalf("fire %d came %s after the previous one", i, gap)
			}
		}
	}
	waitUntil(t, 5*time.Second, "fires to be recorded as successes", func() bool {
		calls, _, _ := st.ListCalls(context.Background(), fn.ID, store.ListOptions{})
		for _, c := range calls {
			if c.Status != store.CallSuccess {
				return false
			}
		}
		return len(calls) >= 4
	})

	if err := st.DeleteTrigger(context.Background(), trig.ID); err != nil {
		t.Fatal(err)
	}
	// Every fire stored before the delete committed is counted here; none
	// may follow it.
	n := countCalls(t, st, fn.ID)
	time.Sleep(2500 * time.Millisecond)
	if after := countCalls(t, st, fn.ID); after != n {
		t.Fatalf("%d calls before, %d 2.5s after deleting the trigger", n, after)
	}
}

func TestCronTriggerChanges(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	slow, err := st.CreateTrigger(ctx, &store.Trigger{AppID: fn.AppID, FnID: fn.ID, Name: "slow", Type: store.TriggerCron, Source: "@every 1h"})
	if err != nil {
		t.Fatal(err)
	}
	// Stored without validation, as by an older kilnd: it must not fire
	// or upset the engine.
	if _, err := st.CreateTrigger(ctx, &store.Trigger{AppID: fn.AppID, FnID: fn.ID, Name: "bad", Type: store.TriggerCron, Source: "TZ=UTC"}); err != nil {
		t.Fatal(err)
	}
	rec := &cronRecorder{}
	svc := startService(t, st, Config{}, rec.run)

	time.Sleep(1500 * time.Millisecond)
	if n := rec.count(); n != 0 {
		t.Fatalf("%d fires of an hourly trigger", n)
	}
	if _, err := st.UpdateTrigger(ctx, slow.ID, func(t *store.Trigger) error { t.Source = "@every 1s"; return nil }); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "fires after the schedule changed", func() bool { return rec.count() >= 2 })
	reqs, _ := rec.snapshot()
	for _, req := range reqs {
		if req.Header.Get("Fn-Trigger-Id") != slow.ID || len(req.Body) != 0 {
			t.Fatalf("fire %+v", req)
		}
	}

	// Stopping the engine stops the fires.
	svc.stopAsyncWait()
	n := rec.count()
	time.Sleep(1500 * time.Millisecond)
	if rec.count() != n {
		t.Fatal("a cron trigger fired after the engine stopped")
	}
}

// TestCronTickFiresOnce: two nodes firing the same trigger's same tick
// store one call: its id comes from the trigger and the tick.
func TestCronTickFiresOnce(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	trig, err := st.CreateTrigger(ctx, &store.Trigger{AppID: fn.AppID, FnID: fn.ID, Name: "tick", Type: store.TriggerCron, Source: "@hourly"})
	if err != nil {
		t.Fatal(err)
	}
	a := startService(t, st, Config{}, echoRun)
	b := startService(t, st, Config{}, echoRun)
	a.stopAsyncWait()
	b.stopAsyncWait()
	tick := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	a.fireCron(ctx, trig, tick)
	b.fireCron(ctx, trig, tick)
	a.fireCron(ctx, trig, tick.Add(time.Hour))
	if n := countCalls(t, st, fn.ID); n != 2 {
		t.Fatalf("%d calls for two ticks fired by two nodes, want 2", n)
	}
}
