package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-run/kiln/errdefs"
)

// TestPostgres runs the store suite on Postgres, a database per test on a
// server of its own, then what only several nodes on one database can
// show. Without the server binaries it fails (CI must not pass without
// it); -short skips it.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the Postgres tests start a PostgreSQL server")
	}
	srv := startPostgres(t)
	runSuite(t, &fixture{open: func(t *testing.T) (*Store, func(t *testing.T) *Store) {
		dsn := srv.newDB(t)
		open := func(t *testing.T) *Store { return srv.open(t, dsn) }
		return open(t), open
	}})
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, srv *pgServer)
	}{
		{"CrossNodeGeneration", testPgCrossNodeGeneration},
		{"ListenerReconnect", testPgListenerReconnect},
		{"EnqueueAcrossNodes", testPgEnqueueAcrossNodes},
		{"UniqueAcrossNodes", testPgUniqueAcrossNodes},
		{"SecretDeleteRace", testPgSecretDeleteRace},
		{"ConcurrentMigrations", testPgConcurrentMigrations},
		{"NewerSchemaRefused", testPgNewerSchema},
		{"Unavailable", testPgUnavailable},
		{"LeaseAcrossNodes", testPgLeaseAcrossNodes},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, srv) })
	}
}

// waitMoved waits up to a second for st's generation to leave before.
func waitMoved(t *testing.T, st *Store, before uint64, what string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for st.Generation() == before {
		if time.Now().After(deadline) {
			t.Fatalf("%s on node A did not move node B's generation within a second", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testPgCrossNodeGeneration: every resource change through node A moves
// node B's generation within a second; call records do not. B writes
// nothing, and each change sends one notification, so each wait sees the
// change it waits for.
func testPgCrossNodeGeneration(t *testing.T, srv *pgServer) {
	ctx := context.Background()
	dsn := srv.newDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	var (
		app *App
		fn  *Fn
		tr  *Trigger
	)
	ok := func(_ any, err error) error { return err }
	for _, c := range []struct {
		name string
		do   func() error
	}{
		{"create app", func() (err error) { app, err = a.CreateApp(ctx, &App{Name: "a"}); return err }},
		{"update app", func() error { return ok(a.UpdateApp(ctx, app.ID, func(x *App) error { x.Name = "a2"; return nil })) }},
		{"put secret", func() error { return ok(a.PutSecret(ctx, app.ID, "s", []byte("x"))) }},
		{"create fn", func() (err error) {
			fn, err = a.CreateFn(ctx, &Fn{AppID: app.ID, Name: "f", Secrets: []string{"s"}})
			return err
		}},
		{"update fn", func() error {
			return ok(a.UpdateFn(ctx, fn.ID, func(f *Fn) error { f.Image, f.Secrets = "new", nil; return nil }))
		}},
		{"create trigger", func() (err error) {
			tr, err = a.CreateTrigger(ctx, &Trigger{AppID: app.ID, FnID: fn.ID, Name: "t", Source: "/t"})
			return err
		}},
		{"update trigger", func() error {
			return ok(a.UpdateTrigger(ctx, tr.ID, func(x *Trigger) error { x.Source = "/u"; return nil }))
		}},
		{"delete trigger", func() error { return a.DeleteTrigger(ctx, tr.ID) }},
		{"delete secret", func() error { return a.DeleteSecret(ctx, app.ID, "s") }},
		{"delete fn", func() error { return a.DeleteFn(ctx, fn.ID) }},
		{"delete app", func() error { return ok(a.DeleteApp(ctx, app.ID)) }},
	} {
		g := b.Generation()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		waitMoved(t, b, g, c.name)
	}
	// What B reads after its generation moved is what A wrote.
	if _, err := b.GetApp(ctx, app.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("node B still sees the app A deleted: %v", err)
	}

	app = mkApp(t, a, "calls")
	f := mkFn(t, a, app.ID, "f")
	settle(t, b)
	g := b.Generation()
	id := a.NewID()
	if err := a.CreateCall(ctx, &Call{ID: id, FnID: f.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateCall(ctx, f.ID, id, func(c *Call) error { c.Status = CallSuccess; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.EnqueueCall(ctx, queuedCall(a, f.ID), QueueLimits{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if b.Generation() != g {
		t.Fatal("call records on node A moved node B's generation")
	}
}

// testPgListenerReconnect: when B's listening connection is killed, B
// caches nothing (every generation read is new) until it listens again,
// then bumps once more (it may have missed changes) and hears A again.
func testPgListenerReconnect(t *testing.T, srv *pgServer) {
	ctx := context.Background()
	dsn := srv.newDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	admin := srv.sql(t, dsn)
	settle(t, b)
	before := b.Generation()
	pid := pgListenerPID(b)
	if pid == 0 {
		t.Fatal("node B has no listener connection")
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", int(pid)); err != nil {
		t.Fatal(err)
	}

	// The listener notices at once; it reconnects after a back-off of
	// listenRetryMin, when it is deaf.
	deadline := time.Now().Add(5 * time.Second)
	for pgListenerPID(b) == pid {
		if time.Now().After(deadline) {
			t.Fatal("node B did not notice its listener connection was killed")
		}
		time.Sleep(time.Millisecond)
	}
	if g1, g2 := b.Generation(), b.Generation(); pgListenerPID(b) == 0 && g1 == g2 {
		t.Error("while not listening, the generation stood still: caches would serve what other nodes changed")
	}
	// A change in the outage is heard by no one.
	mkApp(t, a, "during-outage")

	for pgListenerPID(b) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("node B did not listen again within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	back := b.Generation()
	if back <= before {
		t.Fatalf("generation after the reconnect = %d, was %d before: caches filled before the outage would be trusted", back, before)
	}
	// Listening again: the generation settles (caching resumes) and moves
	// on A's changes.
	settle(t, b)
	g := b.Generation()
	mkApp(t, a, "after-outage")
	waitMoved(t, b, g, "create app after the reconnect")
	if _, err := b.GetAppByName(ctx, "during-outage"); err != nil {
		t.Fatal(err)
	}
}

// testPgEnqueueAcrossNodes: the queue bounds hold exactly with two nodes
// enqueueing at once, through each of enqueueCall's lock paths.
func testPgEnqueueAcrossNodes(t *testing.T, srv *pgServer) {
	for _, tt := range []struct {
		name   string
		lim    QueueLimits
		fns    int
		want   int
		perFns int // calls per fn bound, when the per-fn bound is what is hit
	}{
		{"per fn, no total", QueueLimits{PerFn: 15}, 1, 15, 15},
		{"total across fns", QueueLimits{PerFn: 100, Total: 12}, 3, 12, 0},
		{"per fn under a total", QueueLimits{PerFn: 5, Total: 100}, 2, 10, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := srv.newDB(t)
			nodes := []*Store{srv.open(t, dsn), srv.open(t, dsn)}
			app := mkApp(t, nodes[0], "a")
			var fnIDs []string
			for i := 0; i < tt.fns; i++ {
				fnIDs = append(fnIDs, mkFn(t, nodes[0], app.ID, fmt.Sprintf("f%d", i)).ID)
			}
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				ok, full int
			)
			const tries = 40
			for i := 0; i < tries; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st := nodes[i%2]
					err := st.EnqueueCall(ctx, queuedCall(st, fnIDs[i%len(fnIDs)]), tt.lim)
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
			if ok != tt.want || full != tries-tt.want {
				t.Fatalf("%d stored, %d refused; want %d and %d", ok, full, tt.want, tries-tt.want)
			}
			total, perFn, err := nodes[1].CountQueued(ctx)
			if err != nil || total != tt.want {
				t.Fatalf("CountQueued = %d %v %v, want %d", total, perFn, err, tt.want)
			}
			for _, id := range fnIDs {
				if tt.perFns > 0 && perFn[id] != tt.perFns {
					t.Errorf("fn %s has %d queued, want %d", id, perFn[id], tt.perFns)
				}
			}
		})
	}
}

// testPgUniqueAcrossNodes: names and http sources stay unique when nodes
// race to take them, with bbolt's conflict messages.
func testPgUniqueAcrossNodes(t *testing.T, srv *pgServer) {
	ctx := context.Background()
	dsn := srv.newDB(t)
	nodes := []*Store{srv.open(t, dsn), srv.open(t, dsn)}
	app := mkApp(t, nodes[0], "a")
	fn := mkFn(t, nodes[0], app.ID, "f")
	for _, tt := range []struct {
		name     string
		do       func(st *Store, i int) error
		contains string
	}{
		{"app name", func(st *Store, _ int) error { _, err := st.CreateApp(ctx, &App{Name: "same"}); return err },
			`app named "same" already exists`},
		{"fn name", func(st *Store, _ int) error {
			_, err := st.CreateFn(ctx, &Fn{AppID: app.ID, Name: "same"})
			return err
		}, `fn named "same" in app`},
		{"http source", func(st *Store, i int) error {
			_, err := st.CreateTrigger(ctx, &Trigger{AppID: app.ID, FnID: fn.ID, Name: fmt.Sprintf("t%d", i), Source: "/same"})
			return err
		}, `source "/same"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				wins int
			)
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := tt.do(nodes[i%2], i)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						wins++
					case errors.Is(err, errdefs.ErrConflict) && strings.Contains(err.Error(), tt.contains):
					default:
						t.Errorf("err = %v, want a conflict mentioning %q", err, tt.contains)
					}
				}()
			}
			wg.Wait()
			if wins != 1 {
				t.Fatalf("%d creations won, want 1", wins)
			}
		})
	}
}

// testPgSecretDeleteRace: a fn naming a secret and the secret's deletion,
// racing on two nodes: exactly one wins, and a fn never names a secret
// that is gone.
func testPgSecretDeleteRace(t *testing.T, srv *pgServer) {
	ctx := context.Background()
	dsn := srv.newDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	fnWins, delWins := 0, 0
	for i := 0; i < 20; i++ {
		app := mkApp(t, a, fmt.Sprintf("a%d", i))
		if _, err := a.PutSecret(ctx, app.ID, "s", []byte("x")); err != nil {
			t.Fatal(err)
		}
		var (
			wg            sync.WaitGroup
			fnErr, delErr error
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, fnErr = b.CreateFn(ctx, &Fn{AppID: app.ID, Name: "f", Secrets: []string{"s"}})
		}()
		go func() { defer wg.Done(); delErr = a.DeleteSecret(ctx, app.ID, "s") }()
		wg.Wait()
		_, secErr := a.GetSecret(ctx, app.ID, "s")
		switch {
		case fnErr == nil && errors.Is(delErr, errdefs.ErrConflict) && secErr == nil:
			fnWins++
		case delErr == nil && errors.Is(fnErr, errdefs.ErrInvalid) && errors.Is(secErr, errdefs.ErrNotFound):
			delWins++
		default:
			t.Fatalf("round %d: create fn: %v; delete secret: %v; secret afterwards: %v", i, fnErr, delErr, secErr)
		}
	}
	t.Logf("fn won %d rounds, delete %d", fnWins, delWins)
}

// testPgConcurrentMigrations: nodes starting at once on an empty database
// all open it, and the schema is migrated once.
func testPgConcurrentMigrations(t *testing.T, srv *pgServer) {
	dsn := srv.newDB(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := OpenPostgres(context.Background(), dsn, nil)
			if err == nil {
				st.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}
	migrations, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	var n, maxV int
	if err := srv.sql(t, dsn).QueryRow(context.Background(), "SELECT count(*), max(version) FROM schema_migrations").Scan(&n, &maxV); err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) || maxV != len(migrations) {
		t.Fatalf("schema_migrations has %d rows up to %d, want %d", n, maxV, len(migrations))
	}
}

// testPgNewerSchema: a kilnd older than the schema refuses to open it.
func testPgNewerSchema(t *testing.T, srv *pgServer) {
	ctx := context.Background()
	dsn := srv.newDB(t)
	srv.open(t, dsn).Close()
	if _, err := srv.sql(t, dsn).Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')"); err != nil {
		t.Fatal(err)
	}
	st, err := OpenPostgres(ctx, dsn, nil)
	if err == nil {
		st.Close()
		t.Fatal("opened a schema newer than this build")
	}
	if !strings.Contains(err.Error(), "newer than this kilnd knows") {
		t.Fatalf("err = %v", err)
	}
}

// testPgUnavailable: no database behind the URL is ErrUnavailable (the
// caller may retry), not a bare network error.
func testPgUnavailable(t *testing.T, srv *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=2", freePort(t))
	st, err := OpenURL(ctx, dsn, nil)
	if err == nil {
		st.Close()
		t.Fatal("opened a database that is not there")
	}
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

// testPgLeaseAcrossNodes: one holder at a time; the holder renews; another
// takes the lease once it has expired.
func testPgLeaseAcrossNodes(t *testing.T, srv *pgServer) {
	dsn := srv.newDB(t)
	a, b := srv.open(t, dsn), srv.open(t, dsn)
	ctx := context.Background()
	const ttl = time.Second
	if ok, err := a.AcquireLease(ctx, "cron", "a", ttl); err != nil || !ok {
		t.Fatalf("a takes a free lease: %v, %v", ok, err)
	}
	if ok, err := b.AcquireLease(ctx, "cron", "b", ttl); err != nil || ok {
		t.Fatalf("b takes a's live lease: %v, %v", ok, err)
	}
	if ok, err := a.AcquireLease(ctx, "cron", "a", ttl); err != nil || !ok {
		t.Fatalf("a renews: %v, %v", ok, err)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	if ok, err := b.AcquireLease(ctx, "cron", "b", ttl); err != nil || !ok {
		t.Fatalf("b takes the expired lease: %v, %v", ok, err)
	}
	if ok, err := a.AcquireLease(ctx, "cron", "a", ttl); err != nil || ok {
		t.Fatalf("a takes it back from b: %v, %v", ok, err)
	}
}
