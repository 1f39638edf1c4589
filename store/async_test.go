package store

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/kiln-run/kiln/errdefs"
)

func queuedCall(st *Store, fnID string) *Call {
	return &Call{ID: st.NewID(), FnID: fnID, Request: &CallRequest{Method: "POST", URL: "http://x/", Body: []byte("b")}}
}

func testEnqueueCall(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	a := mkApp(t, st, "a")
	f, g := mkFn(t, st, a.ID, "f"), mkFn(t, st, a.ID, "g")
	lim := QueueLimits{PerFn: 2, Total: 3}

	first := queuedCall(st, f.ID)
	first.Status = CallSuccess // ignored: an enqueued call is queued
	if err := st.EnqueueCall(ctx, first, lim); err != nil {
		t.Fatal(err)
	}
	got := must[*Call](t)(st.GetCall(ctx, f.ID, first.ID))
	if got.Status != CallQueued || got.AppID != a.ID || string(got.Request.Body) != "b" || got.CreatedAt.IsZero() {
		t.Fatalf("stored %+v", got)
	}
	if err := st.EnqueueCall(ctx, queuedCall(st, f.ID), lim); err != nil {
		t.Fatal(err)
	}

	var full *QueueFullError
	err := st.EnqueueCall(ctx, queuedCall(st, f.ID), lim)
	if !errors.As(err, &full) || !errors.Is(err, errdefs.ErrUnavailable) || !full.PerFn || full.Waiting != 2 || full.FnID != f.ID {
		t.Fatalf("third call of f: %v", err)
	}
	if err := st.EnqueueCall(ctx, queuedCall(st, g.ID), lim); err != nil {
		t.Fatal(err)
	}
	err = st.EnqueueCall(ctx, queuedCall(st, g.ID), lim)
	if !errors.As(err, &full) || full.PerFn || full.Waiting != 3 {
		t.Fatalf("fourth call in all: %v", err)
	}

	// A call that leaves the queue frees its place.
	if _, err := st.UpdateCall(ctx, f.ID, first.ID, func(c *Call) error { c.Status = CallRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.EnqueueCall(ctx, queuedCall(st, f.ID), lim); err != nil {
		t.Fatalf("after one left the queue: %v", err)
	}
	total, perFn, err := st.CountQueued(ctx)
	if err != nil || total != 3 || perFn[f.ID] != 2 || perFn[g.ID] != 1 {
		t.Fatalf("CountQueued = %d %v %v", total, perFn, err)
	}

	// Deleting a fn takes its queued calls out of the count.
	if err := st.DeleteFn(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if total, _, _ := st.CountQueued(ctx); total != 2 {
		t.Fatalf("after deleting g, %d queued", total)
	}

	wantErr(t, st.EnqueueCall(ctx, queuedCall(st, g.ID), lim), errdefs.ErrNotFound, g.ID)
	wantErr(t, st.EnqueueCall(ctx, &Call{ID: st.NewID(), FnID: f.ID}, lim), errdefs.ErrInvalid, "request")
	wantErr(t, st.EnqueueCall(ctx, &Call{ID: "", FnID: f.ID, Request: &CallRequest{}}, lim), errdefs.ErrInvalid, "call id")
	dup := queuedCall(st, f.ID)
	dup.ID = first.ID
	wantErr(t, st.EnqueueCall(ctx, dup, QueueLimits{}), errdefs.ErrConflict, first.ID)
}

func testEnqueueCallTrigger(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	a := mkApp(t, st, "a")
	f, g := mkFn(t, st, a.ID, "f"), mkFn(t, st, a.ID, "g")
	trig := must[*Trigger](t)(st.CreateTrigger(ctx, &Trigger{AppID: a.ID, FnID: f.ID, Name: "tick", Type: TriggerCron, Source: "@every 1s"}))

	if err := st.EnqueueCall(ctx, queuedCall(st, f.ID), QueueLimits{TriggerID: trig.ID}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, st.EnqueueCall(ctx, queuedCall(st, g.ID), QueueLimits{TriggerID: trig.ID}), errdefs.ErrNotFound, "no longer calls")
	if err := st.DeleteTrigger(ctx, trig.ID); err != nil {
		t.Fatal(err)
	}
	c := queuedCall(st, f.ID)
	wantErr(t, st.EnqueueCall(ctx, c, QueueLimits{TriggerID: trig.ID}), errdefs.ErrNotFound, trig.ID)
	if _, err := st.GetCall(ctx, f.ID, c.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a fire of a deleted trigger was stored: %v", err)
	}
}

// TestEnqueueCallConcurrent: the bound holds however many enqueue at once.
func testEnqueueCallConcurrent(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	f := mkFn(t, st, mkApp(t, st, "a").ID, "f")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, full int
	)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.EnqueueCall(ctx, queuedCall(st, f.ID), QueueLimits{PerFn: 15})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, errdefs.ErrUnavailable):
				full++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok != 15 || full != 25 {
		t.Fatalf("%d stored, %d refused; want 15 and 25", ok, full)
	}
}
