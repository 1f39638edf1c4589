package calls

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// TestResolverSeesEveryChange: the cache answers repeated lookups, and
// any change to an app, fn or trigger is visible to the next lookup.
func TestResolverSeesEveryChange(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app, _ := st.CreateApp(ctx, &store.App{Name: "a"})
	fn1, _ := st.CreateFn(ctx, &store.Fn{Name: "one", AppID: app.ID, Image: "img", Format: "json", Memory: 64, Timeout: 5, IdleTimeout: 5})
	fn2, _ := st.CreateFn(ctx, &store.Fn{Name: "two", AppID: app.ID, Image: "img", Format: "json", Memory: 64, Timeout: 5, IdleTimeout: 5})
	trig, err := st.CreateTrigger(ctx, &store.Trigger{Name: "t", AppID: app.ID, FnID: fn1.ID, Type: "http", Source: "/t"})
	if err != nil {
		t.Fatal(err)
	}
	r := newResolver(st, false, nil)
	for i := 0; i < 2; i++ {
		if tg, err := r.trigger(ctx, "a", "/t"); err != nil || tg.Fn.ID != fn1.ID {
			t.Fatalf("lookup %d: %v %v", i, tg, err)
		}
	}
	if _, err := st.UpdateTrigger(ctx, trig.ID, func(t *store.Trigger) error { t.FnID = fn2.ID; return nil }); err != nil {
		t.Fatal(err)
	}
	if tg, err := r.trigger(ctx, "a", "/t"); err != nil || tg.Fn.ID != fn2.ID {
		t.Fatalf("after the trigger moved: %v %v", tg, err)
	}
	if _, err := st.UpdateFn(ctx, fn2.ID, func(f *store.Fn) error { f.Memory = 256; return nil }); err != nil {
		t.Fatal(err)
	}
	if tg, _ := r.fn(ctx, fn2.ID); tg.Fn.Memory != 256 {
		t.Fatalf("fn update not seen: memory %d", tg.Fn.Memory)
	}
	if err := st.DeleteFn(ctx, fn2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.fn(ctx, fn2.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted fn still resolves: %v", err)
	}
	if _, err := r.trigger(ctx, "a", "/t"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("trigger of a deleted fn still resolves: %v", err)
	}
}
