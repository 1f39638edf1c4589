package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/errdefs"
)

func testPersistence(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st, reopen := fx.open(t)
	app := must[*App](t)(st.CreateApp(ctx, &App{Name: "a", Config: map[string]string{"K": "v"}, Annotations: map[string]any{"n": 1.5, "s": "x"}}))
	fn := must[*Fn](t)(st.CreateFn(ctx, &Fn{AppID: app.ID, Name: "f", Image: "img", Format: "http", Memory: 256, CPUs: 500, Timeout: 9,
		MaxConcurrency: 3, Config: map[string]string{"A": "b"}}))
	sec := must[*Secret](t)(st.PutSecret(ctx, app.ID, "k", []byte{0, 1, 0xff}))
	tr := mkTrigger(t, st, fn, "t", "/hello")
	call := &Call{ID: NewID(), FnID: fn.ID, Request: &CallRequest{Method: "POST", Body: []byte("hi")}}
	if err := st.CreateCall(ctx, call); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendCallLog(ctx, fn.ID, call.ID, []byte("line\n"), 100); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = reopen(t)
	// Records read back equal those Create returned, field for field.
	if got := must[*App](t)(st.GetAppByName(ctx, "a")); !reflect.DeepEqual(got, app) {
		t.Fatalf("app after reopen = %+v, want %+v", got, app)
	}
	if got := must[*Fn](t)(st.GetFnByName(ctx, app.ID, "f")); !reflect.DeepEqual(got, fn) {
		t.Fatalf("fn after reopen = %+v, want %+v", got, fn)
	}
	if got := must[*Trigger](t)(st.GetTriggerBySource(ctx, app.ID, "/hello")); !reflect.DeepEqual(got, tr) {
		t.Fatalf("trigger after reopen = %+v, want %+v", got, tr)
	}
	if got := must[*Secret](t)(st.GetSecret(ctx, app.ID, "k")); !reflect.DeepEqual(got, sec) {
		t.Fatalf("secret after reopen = %+v, want %+v", got, sec)
	}
	c := must[*Call](t)(st.GetCall(ctx, fn.ID, call.ID))
	if c.Status != CallQueued || c.Request == nil || string(c.Request.Body) != "hi" {
		t.Fatalf("call after reopen = %+v", c)
	}
	if got := must[[]byte](t)(st.GetCallLog(ctx, fn.ID, call.ID)); string(got) != "line\n" {
		t.Fatalf("log after reopen = %q", got)
	}
}

func testApps(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	a := must[*App](t)(st.CreateApp(ctx, &App{Name: "a", Config: map[string]string{"K": "v"}}))
	if a.ID == "" || a.CreatedAt.IsZero() || !a.UpdatedAt.Equal(a.CreatedAt) {
		t.Fatalf("created app = %+v", a)
	}
	b := mkApp(t, st, "b")

	// Returned records are copies: changing one changes nothing stored.
	a.Config["K"] = "changed"
	if got := must[*App](t)(st.GetApp(ctx, a.ID)); got.Config["K"] != "v" {
		t.Fatalf("stored config changed through a returned copy: %v", got.Config)
	}

	tests := []struct {
		name     string
		run      func() error
		want     error
		contains string
	}{
		{"duplicate name", func() error { _, err := st.CreateApp(ctx, &App{Name: "a"}); return err }, errdefs.ErrConflict, `"a"`},
		{"empty name", func() error { _, err := st.CreateApp(ctx, &App{}); return err }, errdefs.ErrInvalid, "name"},
		{"get unknown", func() error { _, err := st.GetApp(ctx, "nope"); return err }, errdefs.ErrNotFound, `app "nope" not found`},
		{"by unknown name", func() error { _, err := st.GetAppByName(ctx, "nope"); return err }, errdefs.ErrNotFound, `"nope"`},
		{"update unknown", func() error {
			_, err := st.UpdateApp(ctx, "nope", func(*App) error { return nil })
			return err
		}, errdefs.ErrNotFound, `"nope"`},
		{"rename onto taken", func() error {
			_, err := st.UpdateApp(ctx, b.ID, func(x *App) error { x.Name = "a"; return nil })
			return err
		}, errdefs.ErrConflict, `"a"`},
		{"callback error aborts", func() error {
			_, err := st.UpdateApp(ctx, b.ID, func(x *App) error { x.Name = "zzz"; return errdefs.ErrInvalid })
			return err
		}, errdefs.ErrInvalid, ""},
		{"delete unknown", func() error { _, err := st.DeleteApp(ctx, "nope"); return err }, errdefs.ErrNotFound, `"nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.run(), tt.want, tt.contains) })
	}
	if _, err := st.GetAppByName(ctx, "zzz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("aborted rename left an index entry: %v", err)
	}

	up := must[*App](t)(st.UpdateApp(ctx, b.ID, func(x *App) error {
		x.Name = "b2"
		x.ID = "forged"
		x.CreatedAt = time.Time{}
		return nil
	}))
	if up.ID != b.ID || !up.CreatedAt.Equal(b.CreatedAt) || !up.UpdatedAt.After(b.UpdatedAt) || up.Name != "b2" {
		t.Fatalf("updated app = %+v, was %+v", up, b)
	}
	if _, err := st.GetAppByName(ctx, "b"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("old name still resolves: %v", err)
	}
	if got := must[*App](t)(st.GetAppByName(ctx, "b2")); got.ID != b.ID {
		t.Fatalf("new name resolves to %q", got.ID)
	}
	// The freed name can be taken again.
	mkApp(t, st, "b")

	must[[]string](t)(st.DeleteApp(ctx, a.ID))
	if _, err := st.GetApp(ctx, a.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted app: %v", err)
	}
	mkApp(t, st, "a")
}

func testFns(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	a1, a2 := mkApp(t, st, "a1"), mkApp(t, st, "a2")
	f := mkFn(t, st, a1.ID, "f")
	mkFn(t, st, a2.ID, "f") // the same name in another app is fine
	g := mkFn(t, st, a1.ID, "g")

	tests := []struct {
		name     string
		run      func() error
		want     error
		contains string
	}{
		{"unknown app", func() error { _, err := st.CreateFn(ctx, &Fn{AppID: "nope", Name: "x"}); return err }, errdefs.ErrNotFound, `app "nope"`},
		{"duplicate in app", func() error { _, err := st.CreateFn(ctx, &Fn{AppID: a1.ID, Name: "f"}); return err }, errdefs.ErrConflict, `"f"`},
		{"empty name", func() error { _, err := st.CreateFn(ctx, &Fn{AppID: a1.ID}); return err }, errdefs.ErrInvalid, ""},
		{"get unknown", func() error { _, err := st.GetFn(ctx, "nope"); return err }, errdefs.ErrNotFound, `fn "nope" not found`},
		{"by unknown name", func() error { _, err := st.GetFnByName(ctx, a1.ID, "zz"); return err }, errdefs.ErrNotFound, `"zz"`},
		{"rename onto taken", func() error {
			_, err := st.UpdateFn(ctx, g.ID, func(x *Fn) error { x.Name = "f"; return nil })
			return err
		}, errdefs.ErrConflict, `"f"`},
		{"delete unknown", func() error { return st.DeleteFn(ctx, "nope") }, errdefs.ErrNotFound, `"nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, tt.run(), tt.want, tt.contains) })
	}

	up := must[*Fn](t)(st.UpdateFn(ctx, g.ID, func(x *Fn) error {
		x.Name, x.AppID, x.Memory = "g2", a2.ID, 256
		return nil
	}))
	if up.AppID != a1.ID || up.Memory != 256 || up.Name != "g2" {
		t.Fatalf("updated fn = %+v", up)
	}
	if got := must[*Fn](t)(st.GetFnByName(ctx, a1.ID, "g2")); got.ID != g.ID {
		t.Fatal("rename not indexed")
	}
	if _, err := st.GetFnByName(ctx, a1.ID, "g"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("old name still resolves: %v", err)
	}
	if err := st.DeleteFn(ctx, f.ID); err != nil {
		t.Fatal(err)
	}
	fns, _, err := st.ListFns(ctx, ListOptions{AppID: a1.ID})
	if err != nil || len(fns) != 1 || fns[0].ID != g.ID {
		t.Fatalf("fns after delete = %v, %v", fns, err)
	}
	mkFn(t, st, a1.ID, "f")
}

func testTriggers(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	a1, a2 := mkApp(t, st, "a1"), mkApp(t, st, "a2")
	f1, f2 := mkFn(t, st, a1.ID, "f1"), mkFn(t, st, a2.ID, "f2")
	tr := mkTrigger(t, st, f1, "t", "/x")
	if tr.Type != TriggerHTTP {
		t.Fatalf("default type = %q", tr.Type)
	}
	mkTrigger(t, st, f2, "t", "/x") // another app: no conflict
	cron := func(name, sched string) error {
		_, err := st.CreateTrigger(ctx, &Trigger{AppID: a1.ID, FnID: f1.ID, Name: name, Type: TriggerCron, Source: sched})
		return err
	}
	if err := cron("c1", "@every 1m"); err != nil {
		t.Fatal(err)
	}
	if err := cron("c2", "@every 1m"); err != nil {
		t.Fatalf("cron triggers sharing a schedule: %v", err)
	}

	tests := []struct {
		name     string
		in       Trigger
		want     error
		contains string
	}{
		{"duplicate source", Trigger{AppID: a1.ID, FnID: f1.ID, Name: "t2", Source: "/x"}, errdefs.ErrConflict, `"/x"`},
		{"duplicate name", Trigger{AppID: a1.ID, FnID: f1.ID, Name: "t", Source: "/y"}, errdefs.ErrConflict, `"t"`},
		{"unknown app", Trigger{AppID: "nope", FnID: f1.ID, Name: "t3", Source: "/z"}, errdefs.ErrNotFound, `app "nope"`},
		{"unknown fn", Trigger{AppID: a1.ID, FnID: "nope", Name: "t3", Source: "/z"}, errdefs.ErrNotFound, `fn "nope"`},
		{"fn of another app", Trigger{AppID: a1.ID, FnID: f2.ID, Name: "t3", Source: "/z"}, errdefs.ErrInvalid, "fn_id"},
		{"cron name taken", Trigger{AppID: a1.ID, FnID: f1.ID, Name: "c1", Type: TriggerCron, Source: "x"}, errdefs.ErrConflict, `"c1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.CreateTrigger(ctx, &tt.in)
			wantErr(t, err, tt.want, tt.contains)
		})
	}

	bySource := func(src string) error {
		got, err := st.GetTriggerBySource(ctx, a1.ID, src)
		if err == nil && got.ID != tr.ID {
			t.Fatalf("source %q resolves to %q", src, got.ID)
		}
		return err
	}
	if err := bySource("/x"); err != nil {
		t.Fatal(err)
	}
	must[*Trigger](t)(st.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.Source = "/moved"; return nil }))
	wantErr(t, bySource("/x"), errdefs.ErrNotFound, `"/x"`)
	if err := bySource("/moved"); err != nil {
		t.Fatal(err)
	}
	must[*Trigger](t)(st.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.Name = "renamed"; return nil }))
	if err := bySource("/moved"); err != nil {
		t.Fatalf("rename lost the source index: %v", err)
	}
	// A failed update leaves the indexes as they were.
	mkTrigger(t, st, f1, "other", "/other")
	_, err := st.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.Source = "/other"; return nil })
	wantErr(t, err, errdefs.ErrConflict, "/other")
	if err := bySource("/moved"); err != nil {
		t.Fatalf("failed update lost the source index: %v", err)
	}
	_, err = st.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.FnID = f2.ID; return nil })
	wantErr(t, err, errdefs.ErrInvalid, "fn_id")
	// Becoming a cron trigger leaves the http source index.
	must[*Trigger](t)(st.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.Type = TriggerCron; return nil }))
	wantErr(t, bySource("/moved"), errdefs.ErrNotFound, "")
	if crons := must[[]*Trigger](t)(st.ListTriggersByType(ctx, TriggerCron)); len(crons) != 3 {
		t.Fatalf("cron triggers = %d, want 3", len(crons))
	}
	must[*Trigger](t)(st.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.Type = TriggerHTTP; return nil }))
	if err := bySource("/moved"); err != nil {
		t.Fatal(err)
	}
	if crons := must[[]*Trigger](t)(st.ListTriggersByType(ctx, TriggerCron)); len(crons) != 2 {
		t.Fatalf("cron triggers = %d, want 2", len(crons))
	}
	if err := st.DeleteTrigger(ctx, tr.ID); err != nil {
		t.Fatal(err)
	}
	wantErr(t, bySource("/moved"), errdefs.ErrNotFound, "")
	wantErr(t, st.DeleteTrigger(ctx, tr.ID), errdefs.ErrNotFound, tr.ID)
	_, err = st.GetTrigger(ctx, tr.ID)
	wantErr(t, err, errdefs.ErrNotFound, `trigger "`+tr.ID+`" not found`)
	mkTrigger(t, st, f1, "t", "/x") // name and source are free again
}

func testCascadeDelete(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	keep := mkApp(t, st, "keep")
	kf := mkFn(t, st, keep.ID, "kf")
	kt := mkTrigger(t, st, kf, "kt", "/k")
	if err := st.CreateCall(ctx, &Call{ID: NewID(), FnID: kf.ID}); err != nil {
		t.Fatal(err)
	}

	app := mkApp(t, st, "gone")
	f1, f2 := mkFn(t, st, app.ID, "f1"), mkFn(t, st, app.ID, "f2")
	mkTrigger(t, st, f1, "t1", "/1")
	mkTrigger(t, st, f2, "t2", "/2")
	for _, f := range []*Fn{f1, f2} {
		id := NewID()
		if err := st.CreateCall(ctx, &Call{ID: id, FnID: f.ID}); err != nil {
			t.Fatal(err)
		}
		if err := st.AppendCallLog(ctx, f.ID, id, []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}

	// Deleting a fn takes its triggers and calls.
	f3 := mkFn(t, st, app.ID, "f3")
	t3 := mkTrigger(t, st, f3, "t3", "/3")
	c3 := NewID()
	if err := st.CreateCall(ctx, &Call{ID: c3, FnID: f3.ID}); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteFn(ctx, f3.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetTrigger(ctx, t3.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("trigger of deleted fn: %v", err)
	}
	if _, err := st.GetCall(ctx, f3.ID, c3); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("call of deleted fn: %v", err)
	}

	ids := must[[]string](t)(st.DeleteApp(ctx, app.ID))
	if len(ids) != 2 || !(ids[0] == f1.ID && ids[1] == f2.ID) {
		t.Fatalf("deleted fn ids = %v, want [%s %s]", ids, f1.ID, f2.ID)
	}
	for _, id := range ids {
		if _, err := st.GetFn(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("fn %s survived: %v", id, err)
		}
	}
	if ts := must[[]*Trigger](t)(st.ListTriggersByType(ctx, TriggerHTTP)); len(ts) != 1 || ts[0].ID != kt.ID {
		t.Fatalf("http triggers after cascade = %v", ts)
	}
	if _, err := st.GetTriggerBySource(ctx, app.ID, "/1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("source index survived: %v", err)
	}
	queued := must[[]*Call](t)(st.ListCallsByStatus(ctx, CallQueued, 0))
	if len(queued) != 1 || queued[0].FnID != kf.ID {
		t.Fatalf("queued calls after cascade = %v", queued)
	}
	if ts, _, _ := st.ListTriggers(ctx, ListOptions{AppID: app.ID}); len(ts) != 0 {
		t.Fatalf("triggers listed for deleted app: %v", ts)
	}
	if fns, _, _ := st.ListFns(ctx, ListOptions{AppID: app.ID}); len(fns) != 0 {
		t.Fatalf("fns listed for deleted app: %v", fns)
	}
	// Everything can be recreated under the old names.
	app = mkApp(t, st, "gone")
	mkTrigger(t, st, mkFn(t, st, app.ID, "f1"), "t1", "/1")
}

func testPagination(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	var apps []*App
	for i := 0; i < 7; i++ {
		apps = append(apps, mkApp(t, st, fmt.Sprintf("app%d", i)))
	}
	var fnIDs, a1FnIDs []string
	for i := 0; i < 5; i++ {
		f := mkFn(t, st, apps[1].ID, fmt.Sprintf("f%d", i))
		a1FnIDs = append(a1FnIDs, f.ID)
		fnIDs = append(fnIDs, f.ID)
		g := mkFn(t, st, apps[2].ID, fmt.Sprintf("f%d", i))
		fnIDs = append(fnIDs, g.ID)
		mkTrigger(t, st, f, fmt.Sprintf("t%d", i), fmt.Sprintf("/p%d", i))
		mkTrigger(t, st, f, fmt.Sprintf("u%d", i), fmt.Sprintf("/q%d", i))
	}
	appIDs := make([]string, len(apps))
	for i, a := range apps {
		appIDs[i] = a.ID
	}

	type lister func(ListOptions) ([]string, string, error)
	ids := func(list func(ListOptions) (any, string, error)) lister {
		return func(o ListOptions) ([]string, string, error) {
			items, next, err := list(o)
			var out []string
			switch v := items.(type) {
			case []*App:
				for _, x := range v {
					out = append(out, x.ID)
				}
			case []*Fn:
				for _, x := range v {
					out = append(out, x.ID)
				}
			case []*Trigger:
				for _, x := range v {
					out = append(out, x.Name)
				}
			}
			return out, next, err
		}
	}
	listApps := ids(func(o ListOptions) (any, string, error) { return st.ListApps(ctx, o) })
	listFns := ids(func(o ListOptions) (any, string, error) { return st.ListFns(ctx, o) })
	listTriggers := ids(func(o ListOptions) (any, string, error) { return st.ListTriggers(ctx, o) })

	tests := []struct {
		name  string
		list  lister
		opts  ListOptions
		pages []int
		want  []string
	}{
		{"apps by 3", listApps, ListOptions{PerPage: 3}, []int{3, 3, 1}, appIDs},
		{"apps exact pages", listApps, ListOptions{PerPage: 7}, []int{7}, appIDs},
		{"apps default page", listApps, ListOptions{}, []int{7}, appIDs},
		{"app by name", listApps, ListOptions{Name: "app3"}, []int{1}, appIDs[3:4]},
		{"app by unknown name", listApps, ListOptions{Name: "nope"}, []int{0}, nil},
		{"all fns by 4", listFns, ListOptions{PerPage: 4}, []int{4, 4, 2}, fnIDs},
		{"fns of app by 2", listFns, ListOptions{AppID: apps[1].ID, PerPage: 2}, []int{2, 2, 1}, a1FnIDs},
		{"fns named f3", listFns, ListOptions{Name: "f3", PerPage: 1}, []int{1, 1}, fnIDs[6:8]},
		{"fn of app by name", listFns, ListOptions{AppID: apps[2].ID, Name: "f0"}, []int{1}, fnIDs[1:2]},
		{"fns of empty app", listFns, ListOptions{AppID: apps[0].ID}, []int{0}, nil},
		{"triggers of fn", listTriggers, ListOptions{FnID: a1FnIDs[2], PerPage: 1}, []int{1, 1}, []string{"t2", "u2"}},
		{"triggers of app by 4", listTriggers, ListOptions{AppID: apps[1].ID, PerPage: 4}, []int{4, 4, 2},
			[]string{"t0", "u0", "t1", "u1", "t2", "u2", "t3", "u3", "t4", "u4"}},
		{"trigger of app by name", listTriggers, ListOptions{AppID: apps[1].ID, Name: "u3"}, []int{1}, []string{"u3"}},
		{"triggers named t1 anywhere", listTriggers, ListOptions{Name: "t1"}, []int{1}, []string{"t1"}},
		{"triggers of fn and name", listTriggers, ListOptions{FnID: a1FnIDs[0], Name: "u0"}, []int{1}, []string{"u0"}},
		{"triggers of other app's fn", listTriggers, ListOptions{AppID: apps[2].ID, FnID: a1FnIDs[0]}, []int{0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var sizes []int
			opts := tt.opts
			for {
				items, next, err := tt.list(opts)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, len(items))
				got = append(got, items...)
				if next == "" {
					break
				}
				if len(sizes) > 20 {
					t.Fatal("pagination does not end")
				}
				opts.Cursor = next
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.pages) {
				t.Errorf("page sizes = %v, want %v", sizes, tt.pages)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("items = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("bad cursors", func(t *testing.T) {
		_, next, err := st.ListFns(ctx, ListOptions{AppID: apps[1].ID, PerPage: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = st.ListApps(ctx, ListOptions{Cursor: "!!!"})
		wantErr(t, err, errdefs.ErrInvalid, "cursor")
		// A cursor of one app's fns is no cursor for another app's.
		_, _, err = st.ListFns(ctx, ListOptions{AppID: apps[2].ID, Cursor: next})
		wantErr(t, err, errdefs.ErrInvalid, "cursor")
		_, _, err = st.ListCalls(ctx, a1FnIDs[0], ListOptions{Cursor: "%%"})
		wantErr(t, err, errdefs.ErrInvalid, "cursor")
	})
}

func testPerPageLimits(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	app := mkApp(t, st, "a")
	for i := 0; i < MaxPerPage+5; i++ {
		mkFn(t, st, app.ID, fmt.Sprintf("f%03d", i))
	}
	for _, tt := range []struct{ per, want int }{{0, DefaultPerPage}, {-1, DefaultPerPage}, {1000, MaxPerPage}, {7, 7}} {
		fns, next, err := st.ListFns(ctx, ListOptions{AppID: app.ID, PerPage: tt.per})
		if err != nil {
			t.Fatal(err)
		}
		if len(fns) != tt.want || next == "" {
			t.Errorf("per_page %d: got %d items (next %q), want %d", tt.per, len(fns), next, tt.want)
		}
	}
}

func testCalls(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	app := mkApp(t, st, "a")
	f, g := mkFn(t, st, app.ID, "f"), mkFn(t, st, app.ID, "g")

	var ids []string
	for i := 0; i < 5; i++ {
		id := st.NewID()
		ids = append(ids, id)
		c := &Call{ID: id, FnID: f.ID, Request: &CallRequest{Method: "GET", URL: "http://x/" + id, Header: map[string][]string{"A": {"b"}}}}
		if err := st.CreateCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	gCall := st.NewID()
	if err := st.CreateCall(ctx, &Call{ID: gCall, FnID: g.ID, Status: CallRunning}); err != nil {
		t.Fatal(err)
	}

	bad := []struct {
		name string
		c    Call
		want error
	}{
		{"no id", Call{FnID: f.ID}, errdefs.ErrInvalid},
		{"bad status", Call{ID: st.NewID(), FnID: f.ID, Status: "weird"}, errdefs.ErrInvalid},
		{"unknown fn", Call{ID: st.NewID(), FnID: "nope"}, errdefs.ErrNotFound},
		{"duplicate", Call{ID: ids[0], FnID: f.ID}, errdefs.ErrConflict},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) { wantErr(t, st.CreateCall(ctx, &tt.c), tt.want, "") })
	}

	c := must[*Call](t)(st.GetCall(ctx, f.ID, ids[0]))
	if c.AppID != app.ID || c.Status != CallQueued || c.CreatedAt.IsZero() || c.Request.Header["A"][0] != "b" {
		t.Fatalf("call = %+v", c)
	}
	// The API view of a call never shows the stored request.
	data, _ := json.Marshal(c)
	if strings.Contains(string(data), "request") || strings.Contains(string(data), "started_at") {
		t.Fatalf("call JSON = %s", data)
	}
	_, err := st.GetCall(ctx, g.ID, ids[0])
	wantErr(t, err, errdefs.ErrNotFound, ids[0])

	started := t0.Add(time.Hour)
	up := must[*Call](t)(st.UpdateCall(ctx, f.ID, ids[1], func(c *Call) error {
		c.Status, c.StartedAt, c.Attempts = CallRunning, &started, 1
		c.FnID = g.ID // ignored
		return nil
	}))
	if up.Status != CallRunning || !up.StartedAt.Equal(started) || up.Attempts != 1 || up.FnID != f.ID || up.Request == nil {
		t.Fatalf("updated call = %+v", up)
	}
	_, err = st.UpdateCall(ctx, f.ID, ids[1], func(c *Call) error { c.Status = "bogus"; return nil })
	wantErr(t, err, errdefs.ErrInvalid, "bogus")
	_, err = st.UpdateCall(ctx, f.ID, "nope", func(*Call) error { return nil })
	wantErr(t, err, errdefs.ErrNotFound, "nope")

	// Newest first, across pages.
	var got []string
	opts := ListOptions{PerPage: 2}
	for {
		calls, next, err := st.ListCalls(ctx, f.ID, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range calls {
			got = append(got, c.ID)
		}
		if next == "" {
			break
		}
		opts.Cursor = next
	}
	want := []string{ids[4], ids[3], ids[2], ids[1], ids[0]}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	if _, _, err := st.ListCalls(ctx, "nope", ListOptions{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("calls of unknown fn: %v", err)
	}
	h := mkFn(t, st, app.ID, "h")
	if calls, next, err := st.ListCalls(ctx, h.ID, ListOptions{}); err != nil || len(calls) != 0 || next != "" {
		t.Fatalf("calls of a fn never called = %v %q %v", calls, next, err)
	}

	statusIDs := func(status string, limit int) []string {
		var out []string
		for _, c := range must[[]*Call](t)(st.ListCallsByStatus(ctx, status, limit)) {
			out = append(out, c.ID)
		}
		return out
	}
	for _, tt := range []struct {
		status string
		limit  int
		want   []string
	}{
		{CallQueued, 0, []string{ids[0], ids[2], ids[3], ids[4]}},
		{CallQueued, 2, []string{ids[0], ids[2]}},
		{CallRunning, 0, []string{ids[1], gCall}},
		{CallSuccess, 0, nil},
	} {
		if got := statusIDs(tt.status, tt.limit); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ListCallsByStatus(%s, %d) = %v, want %v", tt.status, tt.limit, got, tt.want)
		}
	}
}

func testCallLog(t *testing.T, fx *fixture) {
	ctx := context.Background()
	tests := []struct {
		name    string
		cap     int
		appends []string
		want    string
	}{
		{"under cap", 20, []string{"a\n", "b\n"}, "a\nb\n"},
		{"exactly cap", 4, []string{"a\n", "b\n"}, "a\nb\n"},
		{"no cap", 0, []string{"a\n", "b\n"}, "a\nb\n"},
		{"overflow mid-line", 5, []string{"abc\n", "defgh\n"}, "abc\nd\n[log truncated at 5 bytes]\n"},
		{"overflow on a line end", 4, []string{"abc\n", "d"}, "abc\n[log truncated at 4 bytes]\n"},
		{"marker once", 3, []string{"abcdef", "more", "more"}, "abc\n[log truncated at 3 bytes]\n"},
		{"first write too big", 2, []string{"hello\n"}, "he\n[log truncated at 2 bytes]\n"},
		{"empty appends", 3, []string{"", "ab", ""}, "ab"},
	}
	st := fx.newTest(t)
	app := mkApp(t, st, "a")
	f := mkFn(t, st, app.ID, "f")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := NewID()
			if err := st.CreateCall(ctx, &Call{ID: id, FnID: f.ID}); err != nil {
				t.Fatal(err)
			}
			if got := must[[]byte](t)(st.GetCallLog(ctx, f.ID, id)); len(got) != 0 {
				t.Fatalf("fresh log = %q", got)
			}
			for _, p := range tt.appends {
				if err := st.AppendCallLog(ctx, f.ID, id, []byte(p), tt.cap); err != nil {
					t.Fatal(err)
				}
			}
			if got := must[[]byte](t)(st.GetCallLog(ctx, f.ID, id)); string(got) != tt.want {
				t.Fatalf("log = %q, want %q", got, tt.want)
			}
		})
	}
	wantErr(t, st.AppendCallLog(ctx, f.ID, "nope", []byte("x"), 10), errdefs.ErrNotFound, "nope")
	_, err := st.GetCallLog(ctx, f.ID, "nope")
	wantErr(t, err, errdefs.ErrNotFound, "nope")
}

func testPruneCalls(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	app := mkApp(t, st, "a")
	f, g := mkFn(t, st, app.ID, "f"), mkFn(t, st, app.ID, "g")
	now := t0.Add(24 * time.Hour)
	// f: 6 calls, one per hour ending now; the oldest two are live.
	statuses := []string{CallQueued, CallRunning, CallSuccess, CallError, CallTimeout, CallSuccess}
	var fIDs []string
	for i, status := range statuses {
		created := now.Add(-time.Duration(len(statuses)-i) * time.Hour)
		id := newIDAt(created)
		fIDs = append(fIDs, id)
		if err := st.CreateCall(ctx, &Call{ID: id, FnID: f.ID, Status: status, CreatedAt: created}); err != nil {
			t.Fatal(err)
		}
		if err := st.AppendCallLog(ctx, f.ID, id, []byte("log"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// g: two recent finished calls.
	var gIDs []string
	for i := 0; i < 2; i++ {
		created := now.Add(-time.Duration(2-i) * time.Minute)
		id := newIDAt(created)
		gIDs = append(gIDs, id)
		if err := st.CreateCall(ctx, &Call{ID: id, FnID: g.ID, Status: CallSuccess, CreatedAt: created}); err != nil {
			t.Fatal(err)
		}
	}
	left := func(fn *Fn) []string {
		calls, _, err := st.ListCalls(ctx, fn.ID, ListOptions{PerPage: MaxPerPage})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range calls {
			out = append(out, c.ID)
		}
		return out
	}

	steps := []struct {
		name    string
		perFn   int
		maxAge  time.Duration
		dropped int
		wantF   []string
		wantG   []string
	}{
		{"no limits", 0, 0, 0, []string{fIDs[5], fIDs[4], fIDs[3], fIDs[2], fIDs[1], fIDs[0]}, []string{gIDs[1], gIDs[0]}},
		{"by age", 0, 150 * time.Minute, 2, []string{fIDs[5], fIDs[4], fIDs[1], fIDs[0]}, []string{gIDs[1], gIDs[0]}},
		{"by count keeps live", 1, 0, 2, []string{fIDs[5], fIDs[1], fIDs[0]}, []string{gIDs[1]}},
		{"again is a no-op", 1, time.Hour, 0, []string{fIDs[5], fIDs[1], fIDs[0]}, []string{gIDs[1]}},
	}
	for _, s := range steps {
		n, err := st.PruneCalls(ctx, s.perFn, s.maxAge, now)
		if err != nil {
			t.Fatal(err)
		}
		if n != s.dropped {
			t.Errorf("%s: dropped %d, want %d", s.name, n, s.dropped)
		}
		if got := left(f); fmt.Sprint(got) != fmt.Sprint(s.wantF) {
			t.Errorf("%s: f calls = %v, want %v", s.name, got, s.wantF)
		}
		if got := left(g); fmt.Sprint(got) != fmt.Sprint(s.wantG) {
			t.Errorf("%s: g calls = %v, want %v", s.name, got, s.wantG)
		}
	}
	if _, err := st.GetCallLog(ctx, f.ID, fIDs[2]); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("log of a pruned call: %v", err)
	}
	if got := must[[]*Call](t)(st.ListCallsByStatus(ctx, CallSuccess, 0)); len(got) != 2 {
		t.Fatalf("success calls after prune = %d, want 2 (status index not pruned?)", len(got))
	}
}

func testCancelledContext(t *testing.T, fx *fixture) {
	st := fx.newTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.CreateApp(ctx, &App{Name: "a"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("CreateApp on a cancelled ctx: %v", err)
	}
	if _, err := st.GetApp(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetApp on a cancelled ctx: %v", err)
	}
}

func testSaveCallsBatch(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	app, err := st.CreateApp(ctx, &App{Name: "batch"})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := st.CreateFn(ctx, &Fn{Name: "f", AppID: app.ID, Image: "img", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	a := &Call{ID: st.NewID(), FnID: fn.ID, AppID: app.ID, Status: CallRunning}
	b := &Call{ID: st.NewID(), FnID: "gone", AppID: app.ID, Status: CallRunning}
	if err := st.SaveCalls(ctx, []CallWrite{{Call: a}, {Call: b}}); err != nil {
		t.Fatal(err)
	}
	a2 := *a
	a2.Status = CallSuccess
	if err := st.SaveCalls(ctx, []CallWrite{{Call: &a2, Log: []byte("line\n")}}); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetCall(ctx, fn.ID, a.ID)
	if err != nil || got.Status != CallSuccess {
		t.Fatalf("got %+v, %v", got, err)
	}
	if running, _ := st.ListCallsByStatus(ctx, CallRunning, 0); len(running) != 0 {
		t.Fatalf("status index kept the old status: %d running", len(running))
	}
	if log, _ := st.GetCallLog(ctx, fn.ID, a.ID); string(log) != "line\n" {
		t.Fatalf("log %q", log)
	}
	if _, err := st.GetCall(ctx, "gone", b.ID); err == nil {
		t.Fatal("a call of an unknown fn was stored")
	}
}

// settle waits until the generation has stood still for a while: with
// Postgres a change is also heard back from the database, a moment after
// the write returned.
func settle(t *testing.T, st *Store) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for g := st.Generation(); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		now := st.Generation()
		if now == g {
			return
		}
		g = now
	}
	t.Fatal("the generation does not settle")
}

// testGeneration: every change to an app, fn, trigger or secret moves
// the generation as soon as the write returns; call records never do.
func testGeneration(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	var (
		app *App
		fn  *Fn
		tr  *Trigger
	)
	ok := func(_ any, err error) error { return err }
	changes := []struct {
		name string
		do   func() error
	}{
		{"create app", func() (err error) { app, err = st.CreateApp(ctx, &App{Name: "a"}); return err }},
		{"update app", func() error {
			return ok(st.UpdateApp(ctx, app.ID, func(a *App) error { a.Config = map[string]string{"K": "v"}; return nil }))
		}},
		{"put secret", func() error { return ok(st.PutSecret(ctx, app.ID, "s", []byte("x"))) }},
		{"create fn", func() (err error) {
			fn, err = st.CreateFn(ctx, &Fn{AppID: app.ID, Name: "f", Secrets: []string{"s"}})
			return err
		}},
		{"update fn", func() error {
			return ok(st.UpdateFn(ctx, fn.ID, func(f *Fn) error { f.Memory, f.Secrets = 64, nil; return nil }))
		}},
		{"create trigger", func() (err error) {
			tr, err = st.CreateTrigger(ctx, &Trigger{AppID: app.ID, FnID: fn.ID, Name: "t", Source: "/t"})
			return err
		}},
		{"update trigger", func() error {
			return ok(st.UpdateTrigger(ctx, tr.ID, func(t *Trigger) error { t.Source = "/u"; return nil }))
		}},
		{"delete secret", func() error { return st.DeleteSecret(ctx, app.ID, "s") }},
	}
	for _, c := range changes {
		g := st.Generation()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.Generation() == g {
			t.Errorf("%s did not move the generation", c.name)
		}
	}

	settle(t, st)
	g := st.Generation()
	id := st.NewID()
	if err := st.CreateCall(ctx, &Call{ID: id, FnID: fn.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateCall(ctx, fn.ID, id, func(c *Call) error { c.Status = CallRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendCallLog(ctx, fn.ID, id, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.SaveCalls(ctx, []CallWrite{{Call: &Call{ID: id, FnID: fn.ID, AppID: app.ID, Status: CallSuccess}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.EnqueueCall(ctx, queuedCall(st, fn.ID), QueueLimits{PerFn: 5, Total: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PruneCalls(ctx, 1, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // what a notification would take
	if st.Generation() != g {
		t.Errorf("call records moved the generation: %d, was %d", st.Generation(), g)
	}

	for _, c := range []struct {
		name string
		do   func() error
	}{
		{"delete trigger", func() error { return st.DeleteTrigger(ctx, tr.ID) }},
		{"delete fn", func() error { return st.DeleteFn(ctx, fn.ID) }},
		{"delete app", func() error { return ok(st.DeleteApp(ctx, app.ID)) }},
	} {
		g := st.Generation()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if st.Generation() == g {
			t.Errorf("%s did not move the generation", c.name)
		}
	}
}
