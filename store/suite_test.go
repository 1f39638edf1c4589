package store

// The store suite: every test here runs against each backend (TestBolt,
// TestPostgres), so the two keep one behaviour. A test that holds for
// one backend only lives beside that backend's tests.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// stepClock advances a millisecond per reading, so ids made by one test
// are strictly ordered and timestamps are predictable.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// fixture opens Stores of one backend for the suite.
type fixture struct {
	// open makes a Store on new, empty storage, closed when the test
	// ends, and reopen, which opens another Store on the same storage
	// (closed when the test ends too).
	open func(t *testing.T) (st *Store, reopen func(t *testing.T) *Store)
}

// newTest is a Store on empty storage whose clock steps a millisecond
// per reading from t0.
func (fx *fixture) newTest(t *testing.T) *Store {
	t.Helper()
	st, _ := fx.open(t)
	st.now = (&stepClock{t: t0}).now
	return st
}

// suite lists the tests every backend must pass.
var suite = []struct {
	name string
	run  func(t *testing.T, fx *fixture)
}{
	{"Persistence", testPersistence},
	{"Apps", testApps},
	{"Fns", testFns},
	{"Triggers", testTriggers},
	{"CascadeDelete", testCascadeDelete},
	{"Pagination", testPagination},
	{"PerPageLimits", testPerPageLimits},
	{"Calls", testCalls},
	{"CallLog", testCallLog},
	{"PruneCalls", testPruneCalls},
	{"CancelledContext", testCancelledContext},
	{"SaveCallsBatch", testSaveCallsBatch},
	{"EnqueueCall", testEnqueueCall},
	{"EnqueueCallTrigger", testEnqueueCallTrigger},
	{"EnqueueCallConcurrent", testEnqueueCallConcurrent},
	{"SecretsStore", testSecretsStore},
	{"Generation", testGeneration},
}

func runSuite(t *testing.T, fx *fixture) {
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, fx) })
	}
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func mkApp(t *testing.T, st *Store, name string) *App {
	t.Helper()
	return must[*App](t)(st.CreateApp(context.Background(), &App{Name: name}))
}

func mkFn(t *testing.T, st *Store, appID, name string) *Fn {
	t.Helper()
	return must[*Fn](t)(st.CreateFn(context.Background(), &Fn{AppID: appID, Name: name, Image: "img", Format: "http", Memory: 128}))
}

func mkTrigger(t *testing.T, st *Store, fn *Fn, name, source string) *Trigger {
	t.Helper()
	return must[*Trigger](t)(st.CreateTrigger(context.Background(), &Trigger{AppID: fn.AppID, FnID: fn.ID, Name: name, Source: source}))
}

func wantErr(t *testing.T, err, target error, contains string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Fatalf("err = %q, want it to mention %q", err, contains)
	}
}
