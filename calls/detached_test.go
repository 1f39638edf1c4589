package calls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// asyncRuntime runs default-format calls with run; async tests use that
// format so calls never touch the pool.
type asyncRuntime struct {
	run func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error)
}

func (r *asyncRuntime) StartHot(context.Context, *executor.Function) (Instance, error) {
	return nil, errors.New("asyncRuntime starts no hot containers")
}

func (r *asyncRuntime) RunCold(ctx context.Context, _ *executor.Function, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	return r.run(ctx, req, logs)
}

func (r *asyncRuntime) ImageID(context.Context, string) (string, error) { return "sha256:fake", nil }

func echoRun(_ context.Context, req *protocol.Request, _ io.Writer) (*protocol.Response, error) {
	return &protocol.Response{Status: 200, Body: req.Body}, nil
}

func asyncStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// asyncFn creates a default-format fn (and its app, once).
func asyncFn(t *testing.T, st *store.Store, name string) (*store.App, *store.Fn) {
	t.Helper()
	ctx := context.Background()
	app, err := st.GetAppByName(ctx, "async")
	if errors.Is(err, errdefs.ErrNotFound) {
		app, err = st.CreateApp(ctx, &store.App{Name: "async"})
	}
	if err != nil {
		t.Fatal(err)
	}
	fn, err := st.CreateFn(ctx, &store.Fn{AppID: app.ID, Name: name, Image: "img:1", Format: protocol.Default, Memory: 128, Timeout: 5, IdleTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	return app, fn
}

// startService opens a Service on st whose cold calls run with run; it is
// closed at the end of the test.
func startService(t *testing.T, st *store.Store, cfg Config, run func(context.Context, *protocol.Request, io.Writer) (*protocol.Response, error)) *Service {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	cfg.Store = st
	cfg.Runtime = &asyncRuntime{run: run}
	cfg.Logger = logrus.NewEntry(log)
	svc := New(cfg)
	if err := svc.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

// detach queues a detached call of fnID; headers are name, value pairs.
func detach(t *testing.T, svc *Service, fnID, body string, headers ...string) (string, error) {
	t.Helper()
	target, err := svc.ByFn(context.Background(), fnID)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	req := &protocol.Request{CallID: svc.NewCallID(), Method: "POST", URL: "http://example.com/invoke/" + fnID, Header: h, Body: []byte(body)}
	return svc.Enqueue(context.Background(), target, req)
}

// detachOK queues a call that must be accepted and returns its id.
func detachOK(t *testing.T, svc *Service, fnID, body string, headers ...string) string {
	t.Helper()
	id, err := detach(t, svc, fnID, body, headers...)
	if err != nil || id == "" {
		t.Fatalf("detached call: %q, %v", id, err)
	}
	return id
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getCall(t *testing.T, st *store.Store, fnID, callID string) *store.Call {
	t.Helper()
	c, err := st.GetCall(context.Background(), fnID, callID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func final(status string) bool {
	return status == store.CallSuccess || status == store.CallError || status == store.CallTimeout
}

func waitFinal(t *testing.T, st *store.Store, fnID, callID string) *store.Call {
	t.Helper()
	var c *store.Call
	waitUntil(t, 10*time.Second, "call "+callID+" to finish", func() bool {
		c = getCall(t, st, fnID, callID)
		return final(c.Status)
	})
	return c
}

// TestDetachedAcceptedAfterCommit: once Enqueue returns, the call and
// its request are in the store; the dispatcher then runs it with the
// fn's deadline and records the outcome and the log.
func TestDetachedAcceptedAfterCommit(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	release := make(chan struct{})
	reqs := make(chan *protocol.Request, 1)
	// The function is held back until the record has been checked.
	gate := make(chan struct{})
	svc := startService(t, st, Config{}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		<-gate
		reqs <- req
		fmt.Fprintf(logs, "working on %s\n", req.Body)
		<-release
		return &protocol.Response{Status: 200, Body: []byte("nobody reads this")}, nil
	})
	id := detachOK(t, svc, fn.ID, "payload", "X-Custom", "kept")
	c, err := st.GetCall(context.Background(), fn.ID, id)
	if err != nil || c.Request == nil || string(c.Request.Body) != "payload" {
		t.Fatalf("after Enqueue returned: %+v, %v", c, err)
	}
	close(gate)

	got := <-reqs
	if got.CallID != id || got.Method != "POST" || got.URL != "http://example.com/invoke/"+fn.ID || string(got.Body) != "payload" {
		t.Fatalf("function got %+v", got)
	}
	if got.Header.Get("X-Custom") != "kept" {
		t.Fatalf("function got headers %v", got.Header)
	}
	if left := time.Until(got.Deadline); left < 4*time.Second || left > 5*time.Second {
		t.Fatalf("deadline %s away, want the fn's 5s timeout", left)
	}
	running := getCall(t, st, fn.ID, id)
	if running.Status != store.CallRunning || running.Attempts != 1 || running.StartedAt == nil {
		t.Fatalf("while running: %+v", running)
	}

	close(release)
	c = waitFinal(t, st, fn.ID, id)
	if c.Status != store.CallSuccess || c.Error != "" || c.Attempts != 1 || c.CompletedAt == nil || c.Request != nil {
		t.Fatalf("finished: %+v", c)
	}
	log, err := st.GetCallLog(context.Background(), fn.ID, id)
	if err != nil || string(log) != "working on payload\n" {
		t.Fatalf("log %q, %v", log, err)
	}
	if view, err := svc.GetCall(context.Background(), fn.ID, id); err != nil || view.Status != store.CallSuccess {
		t.Fatalf("GetCall: %+v, %v", view, err)
	}
}

func TestDetachedOutcomes(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	svc := startService(t, st, Config{CallLogCap: 64}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		switch req.Header.Get("X-Action") {
		case "fail":
			fmt.Fprintln(logs, "about to crash")
			return nil, fmt.Errorf("container exited with code 3: %w", errdefs.ErrFunction)
		case "timeout":
			<-ctx.Done()
			return nil, fmt.Errorf("no answer before the deadline: %w", errdefs.ErrTimeout)
		case "flood":
			fmt.Fprint(logs, strings.Repeat("x", 200))
		case "500":
			return &protocol.Response{Status: 500}, nil
		}
		return echoRun(ctx, req, logs)
	})
	for _, tt := range []struct {
		action, status, errContains, log string
	}{
		{"", store.CallSuccess, "", ""},
		{"fail", store.CallError, "exited with code 3", "about to crash\n"},
		{"flood", store.CallSuccess, "", strings.Repeat("x", 64) + "\n[log truncated at 64 bytes]\n"},
		// The answer of a detached call goes nowhere; like a sync call's
		// record, a function that answered at all succeeded.
		{"500", store.CallSuccess, "", ""},
	} {
		t.Run("action="+tt.action, func(t *testing.T) {
			id := detachOK(t, svc, fn.ID, "x", "X-Action", tt.action)
			c := waitFinal(t, st, fn.ID, id)
			if c.Status != tt.status || !strings.Contains(c.Error, tt.errContains) || (tt.errContains == "" && c.Error != "") {
				t.Fatalf("status %q error %q, want %q mentioning %q", c.Status, c.Error, tt.status, tt.errContains)
			}
			log, _ := st.GetCallLog(context.Background(), fn.ID, id)
			if string(log) != tt.log {
				t.Fatalf("log %q, want %q", log, tt.log)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		if _, err := st.UpdateFn(context.Background(), fn.ID, func(f *store.Fn) error { f.Timeout = 1; return nil }); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		id := detachOK(t, svc, fn.ID, "x", "X-Action", "timeout")
		c := waitFinal(t, st, fn.ID, id)
		if c.Status != store.CallTimeout || time.Since(start) > 5*time.Second {
			t.Fatalf("%+v after %s", c, time.Since(start))
		}
	})
}

func TestQueueBounds(t *testing.T) {
	st := asyncStore(t)
	_, f := asyncFn(t, st, "f")
	_, g := asyncFn(t, st, "g")
	svc := startService(t, st, Config{QueuePerFn: 2, QueueTotal: 3}, echoRun)
	// With the dispatcher stopped, accepted calls stay queued and the
	// bounds are deterministic.
	svc.stopAsyncWait()

	full := func(err error, want string) {
		t.Helper()
		var qf *store.QueueFullError
		if !errors.As(err, &qf) || !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want a full queue (%q)", err, want)
		}
	}
	detachOK(t, svc, f.ID, "1")
	detachOK(t, svc, f.ID, "2")
	_, err := detach(t, svc, f.ID, "3")
	full(err, `queue for fn "f" is full (2 calls waiting)`)
	detachOK(t, svc, g.ID, "4")
	_, err = detach(t, svc, g.ID, "5")
	full(err, "queue is full (3 calls waiting")
	if total, _, _ := st.CountQueued(context.Background()); total != 3 {
		t.Fatalf("%d queued, want 3", total)
	}

	// Refused calls left no record behind.
	calls, _, err := st.ListCalls(context.Background(), f.ID, store.ListOptions{})
	if err != nil || len(calls) != 2 {
		t.Fatalf("f has %d calls (%v), want 2", len(calls), err)
	}
}

// TestRecoverInterrupted starts a Server on a store a crashed kilnd left
// behind: a detached call running on its first attempt runs once more,
// one running on its second attempt fails, a queued one runs, and a sync
// call's running record fails.
func TestRecoverInterrupted(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	app, fn := asyncFn(t, st, "f")
	started := time.Now().Add(-time.Minute)
	mk := func(status string, attempts int, detached bool) string {
		c := &store.Call{ID: st.NewID(), FnID: fn.ID, AppID: app.ID, Status: status, Attempts: attempts}
		if status == store.CallRunning {
			c.StartedAt = &started
		}
		if detached {
			c.Request = &store.CallRequest{Method: "POST", URL: "http://x/invoke", Body: []byte(c.ID)}
		}
		if err := st.CreateCall(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	firstTry := mk(store.CallRunning, 1, true)
	secondTry := mk(store.CallRunning, 2, true)
	queued := mk(store.CallQueued, 0, true)
	syncCall := mk(store.CallRunning, 0, false)

	var mu sync.Mutex
	runs := map[string]int{}
	startService(t, st, Config{}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		mu.Lock()
		runs[string(req.Body)]++
		mu.Unlock()
		return echoRun(ctx, req, logs)
	})

	for _, tt := range []struct {
		id, status, errContains string
		attempts, runs          int
	}{
		{firstTry, store.CallSuccess, "", 2, 1},
		{secondTry, store.CallError, "interrupted by a kilnd restart (attempt 2 of 2)", 2, 0},
		{queued, store.CallSuccess, "", 1, 1},
		{syncCall, store.CallError, "interrupted by a kilnd restart", 0, 0},
	} {
		c := waitFinal(t, st, fn.ID, tt.id)
		if c.Status != tt.status || c.Attempts != tt.attempts || !strings.Contains(c.Error, tt.errContains) || (tt.errContains == "" && c.Error != "") {
			t.Errorf("call %s: %+v, want %s after %d attempts (%q)", tt.id, c, tt.status, tt.attempts, tt.errContains)
		}
		if c.CompletedAt == nil || c.Request != nil {
			t.Errorf("call %s: completed_at %v, request kept %v", tt.id, c.CompletedAt, c.Request != nil)
		}
		mu.Lock()
		n := runs[tt.id]
		mu.Unlock()
		if n != tt.runs {
			t.Errorf("call %s ran %d times, want %d", tt.id, n, tt.runs)
		}
	}
	for _, status := range []string{store.CallQueued, store.CallRunning} {
		if live, _ := st.ListCallsByStatus(ctx, status, 0); len(live) > 0 {
			t.Errorf("%d calls still %s", len(live), status)
		}
	}
}

func TestCloseWaitsForDetachedInFlight(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	release := make(chan struct{})
	started := make(chan string, 10)
	svc := startService(t, st, Config{AsyncConcurrency: 1}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		started <- req.CallID
		select {
		case <-release:
		case <-ctx.Done():
			return nil, fmt.Errorf("cut short: %w", errdefs.ErrTimeout)
		}
		return echoRun(ctx, req, logs)
	})
	first := detachOK(t, svc, fn.ID, "1")
	if id := <-started; id != first {
		t.Fatalf("started %s first, want %s", id, first)
	}
	rest := []string{detachOK(t, svc, fn.ID, "2"), detachOK(t, svc, fn.ID, "3")}

	closed := make(chan struct{})
	go func() {
		_ = svc.Close(context.Background())
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a call was running")
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := detach(t, svc, fn.ID, "late"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a call while draining: %v, want ErrUnavailable", err)
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the call finished")
	}
	_ = svc.Close(context.Background()) // a second close is harmless

	if c := getCall(t, st, fn.ID, first); c.Status != store.CallSuccess {
		t.Fatalf("in-flight call ended %+v", c)
	}
	for _, id := range rest {
		if c := getCall(t, st, fn.ID, id); c.Status != store.CallQueued || c.Attempts != 0 {
			t.Fatalf("queued call after close: %+v", c)
		}
	}
	select {
	case id := <-started:
		t.Fatalf("call %s started after close", id)
	default:
	}

	// The next start takes them up.
	startService(t, st, Config{}, echoRun)
	for _, id := range rest {
		if c := waitFinal(t, st, fn.ID, id); c.Status != store.CallSuccess || c.Attempts != 1 {
			t.Fatalf("after restart: %+v", c)
		}
	}
}

func TestAsyncConcurrency(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	var cur, peak atomic.Int32
	svc := startService(t, st, Config{AsyncConcurrency: 3}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
		return echoRun(ctx, req, logs)
	})
	var ids []string
	for i := 0; i < 12; i++ {
		ids = append(ids, detachOK(t, svc, fn.ID, fmt.Sprint(i)))
	}
	for _, id := range ids {
		if c := waitFinal(t, st, fn.ID, id); c.Status != store.CallSuccess {
			t.Fatalf("%+v", c)
		}
	}
	if p := peak.Load(); p != 3 {
		t.Fatalf("at most %d calls ran at once, want 3", p)
	}
}

// TestAsyncOldestFirst: with one call at a time, calls run in the order
// they were accepted.
func TestAsyncOldestFirst(t *testing.T) {
	st := asyncStore(t)
	_, f := asyncFn(t, st, "f")
	_, g := asyncFn(t, st, "g")
	first := startService(t, st, Config{}, echoRun)
	first.stopAsyncWait()
	var want []string
	for i := 0; i < 6; i++ {
		fn := f
		if i%2 == 1 {
			fn = g
		}
		want = append(want, detachOK(t, first, fn.ID, fmt.Sprint(i)))
	}
	var mu sync.Mutex
	var got []string
	startService(t, st, Config{AsyncConcurrency: 1}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		mu.Lock()
		got = append(got, req.CallID)
		mu.Unlock()
		return echoRun(ctx, req, logs)
	})
	waitUntil(t, 10*time.Second, "all calls to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(want)
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
}

// TestAsyncDeletedFn: calls queued for a fn deleted before they ran go
// with it and never run.
func TestAsyncDeletedFn(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "f")
	first := startService(t, st, Config{}, echoRun)
	first.stopAsyncWait()
	detachOK(t, first, fn.ID, "x")
	if err := st.DeleteFn(context.Background(), fn.ID); err != nil {
		t.Fatal(err)
	}
	var ran atomic.Bool
	startService(t, st, Config{}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		ran.Store(true)
		return echoRun(ctx, req, logs)
	})
	time.Sleep(1500 * time.Millisecond)
	if ran.Load() {
		t.Fatal("a call of a deleted fn ran")
	}
	if total, _, _ := st.CountQueued(context.Background()); total != 0 {
		t.Fatalf("%d calls queued", total)
	}
}

// TestAsyncNoCapacityRequeues: a detached call that could not get a
// container before its deadline did not run; it waits in the queue again
// instead of failing, and its attempt is not counted.
func TestAsyncNoCapacityRequeues(t *testing.T) {
	st := asyncStore(t)
	_, fn := asyncFn(t, st, "busy")
	var tries atomic.Int32
	svc := startService(t, st, Config{}, func(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
		if tries.Add(1) == 1 {
			return nil, poolError(fmt.Errorf("%w: no instance became free", pool.ErrNoCapacity))
		}
		return echoRun(ctx, req, logs)
	})
	id := detachOK(t, svc, fn.ID, "x")
	c := waitFinal(t, st, fn.ID, id)
	if c.Status != store.CallSuccess || c.Attempts != 1 || tries.Load() != 2 {
		t.Fatalf("call %+v after %d tries; want success on attempt 1 after 2 tries", c, tries.Load())
	}
}
