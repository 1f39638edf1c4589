package calls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
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

// hotRuntime starts fakeHot instances. launch, when set, runs first and
// may block or fail, standing in for a slow or failing container start.
type hotRuntime struct {
	launch   func(ctx context.Context, f *executor.Function) error
	started  atomic.Int32
	mu       sync.Mutex
	specs    []*executor.Function
	exitedAt func(n int32) bool // instance n is dead on arrival
}

func (r *hotRuntime) StartHot(ctx context.Context, f *executor.Function) (Instance, error) {
	if r.launch != nil {
		if err := r.launch(ctx, f); err != nil {
			return nil, err
		}
	}
	n := r.started.Add(1)
	r.mu.Lock()
	r.specs = append(r.specs, f)
	r.mu.Unlock()
	h := &fakeHot{id: n, done: make(chan struct{}), env: f}
	if r.exitedAt != nil && r.exitedAt(n) {
		h.die(fmt.Errorf("%w: function exited with code 3", errdefs.ErrFunction))
	}
	return h, nil
}

func (r *hotRuntime) RunCold(context.Context, *executor.Function, *protocol.Request, io.Writer) (*protocol.Response, error) {
	return nil, errors.New("hotRuntime runs no cold calls")
}

func (r *hotRuntime) ImageID(context.Context, string) (string, error) { return "sha256:one", nil }

func (r *hotRuntime) lastSpec() *executor.Function {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.specs[len(r.specs)-1]
}

// fakeHot answers with its instance number and the body; the request
// header X-Sleep makes it take that long, bounded by the call's ctx.
type fakeHot struct {
	id   int32
	env  *executor.Function
	done chan struct{}
	once sync.Once
	err  error
}

func (h *fakeHot) die(err error) {
	h.once.Do(func() { h.err = err; close(h.done) })
}

func (h *fakeHot) Done() <-chan struct{} { return h.done }
func (h *fakeHot) Err() error {
	select {
	case <-h.done:
		return h.err
	default:
		return nil
	}
}
func (h *fakeHot) Close(context.Context) error {
	h.die(errors.New("closed"))
	return nil
}

func (h *fakeHot) Call(ctx context.Context, req *protocol.Request, _ io.Writer) (*protocol.Response, error) {
	if err := h.Err(); err != nil {
		return nil, err
	}
	if d, err := time.ParseDuration(req.Header.Get("X-Sleep")); err == nil {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			h.die(ctx.Err())
			return nil, fmt.Errorf("%w: no response before the deadline", errdefs.ErrTimeout)
		}
	}
	body := fmt.Sprintf("instance %d: %s", h.id, req.Body)
	return &protocol.Response{Status: 200, Header: http.Header{}, Body: []byte(body)}, nil
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func hotService(t *testing.T, st *store.Store, rt Runtime, pc pool.Config) *Service {
	t.Helper()
	svc := New(Config{Store: st, Runtime: rt, Pool: pc, Logger: quiet()})
	if err := svc.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

// hotFn creates an app, a json-http fn of memory MB and an http trigger
// at /name.
func hotFn(t *testing.T, st *store.Store, name string, memory int64) (*store.App, *store.Fn, *store.Trigger) {
	t.Helper()
	ctx := context.Background()
	app, err := st.GetAppByName(ctx, "hot")
	if errors.Is(err, errdefs.ErrNotFound) {
		app, err = st.CreateApp(ctx, &store.App{Name: "hot", Config: map[string]string{"APP_LEVEL": "1"}})
	}
	if err != nil {
		t.Fatal(err)
	}
	fn, err := st.CreateFn(ctx, &store.Fn{AppID: app.ID, Name: name, Image: "img:1", Format: protocol.JSONHTTP,
		Memory: memory, Timeout: 5, IdleTimeout: 30})
	if err != nil {
		t.Fatal(err)
	}
	trig, err := st.CreateTrigger(ctx, &store.Trigger{AppID: app.ID, FnID: fn.ID, Name: name, Type: store.TriggerHTTP, Source: "/" + name})
	if err != nil {
		t.Fatal(err)
	}
	return app, fn, trig
}

func callFn(t *testing.T, svc *Service, fnID, body string, headers ...string) (*protocol.Response, error) {
	t.Helper()
	target, err := svc.ByFn(context.Background(), fnID)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	return svc.Call(context.Background(), target, &protocol.Request{CallID: svc.NewCallID(), Method: "POST", URL: "http://x/", Header: h, Body: []byte(body)})
}

// TestCloseServesEveryAcceptedCall: calls running, waiting in the pool's
// queue and waiting for a launch when Close begins all get their answer;
// the launch under way is not cancelled; a call after Close began is
// refused with ErrUnavailable. Without the drain, pool.Close failed the
// waiting ones ("pool is shutting down") and cancelled the launch.
func TestCloseServesEveryAcceptedCall(t *testing.T) {
	st := asyncStore(t)
	_, fn, _ := hotFn(t, st, "slow", 64)
	var launches atomic.Int32
	// The launch ends when the test says, after the drain has begun, so
	// the drain is seen to wait for it rather than cancel it.
	releaseLaunch := make(chan struct{})
	rt := &hotRuntime{launch: func(ctx context.Context, _ *executor.Function) error {
		launches.Add(1)
		select {
		case <-releaseLaunch:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("create task: %w", ctx.Err())
		}
	}}
	// Room for one container: the other calls wait for it.
	svc := hotService(t, st, rt, pool.Config{CapacityMB: 64})
	const n = 4
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := callFn(t, svc, fn.ID, fmt.Sprint(i), "X-Sleep", "300ms")
			errs[i] = err
			if err == nil {
				results[i] = string(resp.Body)
			}
		}(i)
	}
	// While the launch is under way and all four wait in the pool, drain.
	// (Waiting for the launch alone raced: calls not yet in the pool when
	// Close began were refused, rightly, and the test failed.)
	waitUntil(t, 5*time.Second, "the launch to start with every call waiting", func() bool {
		return launches.Load() == 1 && svc.Pool().Stats().Waiting == n
	})
	closed := make(chan error, 1)
	go func() { closed <- svc.Close(context.Background()) }()
	waitUntil(t, 5*time.Second, "the drain to begin", svc.Draining)
	if _, err := callFn(t, svc, fn.ID, "late"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a call after Close began: %v, want ErrUnavailable", err)
	}
	close(releaseLaunch)
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil || !strings.HasSuffix(results[i], ": "+fmt.Sprint(i)) {
			t.Errorf("accepted call %d: %q, %v", i, results[i], errs[i])
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s := svc.Pool().Stats(); s.Busy != 0 || s.UsedMB != 0 {
		t.Fatalf("after Close: %+v", s)
	}
}

// TestSpecKeyDecidesFreshness: every change to what a container sees
// (fn, app, trigger path, config) changes the key; bookkeeping (an
// annotation, a trigger's name) does not.
func TestSpecKeyDecidesFreshness(t *testing.T) {
	baseApp := store.App{ID: "a1", Name: "app", Config: map[string]string{"A": "1"}}
	baseFn := store.Fn{ID: "f1", AppID: "a1", Name: "f", Image: "i", Format: "http", Memory: 128, Timeout: 30, IdleTimeout: 30,
		Config: map[string]string{"B": "2"}}
	baseTrig := store.Trigger{ID: "t1", Name: "t", FnID: "f1", Type: store.TriggerHTTP, Source: "/p"}
	key := func(app store.App, fn store.Fn, trigs []*store.Trigger) string {
		return specKey(functionSpec(&app, &fn, trigs), &fn)
	}
	base := key(baseApp, baseFn, []*store.Trigger{&baseTrig})
	tests := []struct {
		name   string
		change func(a *store.App, f *store.Fn, t *store.Trigger) []*store.Trigger
		fresh  bool
	}{
		{"nothing", nil, false},
		{"fn annotation", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger {
			f.Annotations = map[string]any{"team": "x"}
			return nil
		}, false},
		{"app annotation", func(a *store.App, _ *store.Fn, _ *store.Trigger) []*store.Trigger {
			a.Annotations = map[string]any{"team": "x"}
			return nil
		}, false},
		{"trigger name", func(_ *store.App, _ *store.Fn, t *store.Trigger) []*store.Trigger { t.Name = "u"; return nil }, false},
		{"a cron trigger added", func(_ *store.App, _ *store.Fn, t *store.Trigger) []*store.Trigger {
			return []*store.Trigger{t, {Type: store.TriggerCron, Source: "@hourly"}}
		}, false},
		{"image", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.Image = "j"; return nil }, true},
		{"format", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.Format = "json"; return nil }, true},
		{"memory", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.Memory = 256; return nil }, true},
		{"cpus", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.CPUs = 100; return nil }, true},
		{"tmpfs", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.TmpfsSize = 8; return nil }, true},
		{"fn config", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger {
			f.Config = map[string]string{"B": "3"}
			return nil
		}, true},
		{"fn name", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.Name = "g"; return nil }, true},
		{"timeout", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.Timeout = 5; return nil }, true},
		{"idle timeout", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger { f.IdleTimeout = 5; return nil }, true},
		{"host network", func(_ *store.App, f *store.Fn, _ *store.Trigger) []*store.Trigger {
			f.Annotations = map[string]any{AnnotationNetwork: "host"}
			return nil
		}, true},
		{"app name", func(a *store.App, _ *store.Fn, _ *store.Trigger) []*store.Trigger { a.Name = "other"; return nil }, true},
		{"app config", func(a *store.App, _ *store.Fn, _ *store.Trigger) []*store.Trigger {
			a.Config = map[string]string{"A": "2"}
			return nil
		}, true},
		{"trigger path", func(_ *store.App, _ *store.Fn, t *store.Trigger) []*store.Trigger { t.Source = "/q"; return nil }, true},
		{"trigger deleted", func(_ *store.App, _ *store.Fn, _ *store.Trigger) []*store.Trigger { return []*store.Trigger{} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, fn, trig := baseApp, baseFn, baseTrig
			app.Config = map[string]string{"A": "1"}
			trigs := []*store.Trigger{&trig}
			if tt.change != nil {
				if got := tt.change(&app, &fn, &trig); got != nil {
					trigs = got
				}
			}
			if fresh := key(app, fn, trigs) != base; fresh != tt.fresh {
				t.Fatalf("key changed: %v, want %v", fresh, tt.fresh)
			}
		})
	}
}

// TestRefreshOnTriggerChange: moving a fn's trigger reaches its next
// call as a fresh container with the new FN_PATH, while a call already
// running finishes on the old one.
func TestRefreshOnTriggerChange(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	_, fn, trig := hotFn(t, st, "moving", 64)
	rt := &hotRuntime{}
	svc := hotService(t, st, rt, pool.Config{})
	if _, err := callFn(t, svc, fn.ID, "warm"); err != nil {
		t.Fatal(err)
	}
	if p := rt.lastSpec().Path; p != "/moving" {
		t.Fatalf("first container's FN_PATH %q", p)
	}
	inflight := make(chan string, 1)
	go func() {
		resp, err := callFn(t, svc, fn.ID, "inflight", "X-Sleep", "300ms")
		if err != nil {
			inflight <- err.Error()
			return
		}
		inflight <- string(resp.Body)
	}()
	waitUntil(t, 5*time.Second, "the slow call to hold the container", func() bool { return svc.Pool().Stats().Busy == 1 })
	if _, err := st.UpdateTrigger(ctx, trig.ID, func(t *store.Trigger) error { t.Source = "/moved"; return nil }); err != nil {
		t.Fatal(err)
	}
	svc.Refresh(ctx, fn.ID)
	resp, err := callFn(t, svc, fn.ID, "after")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Body); got != "instance 2: after" {
		t.Fatalf("call after the change: %q, want a fresh instance", got)
	}
	if p := rt.lastSpec().Path; p != "/moved" {
		t.Fatalf("fresh container's FN_PATH %q, want /moved", p)
	}
	if got := <-inflight; got != "instance 1: inflight" {
		t.Fatalf("in-flight call: %q, want it finished on the old instance", got)
	}
	// The old instance is retired, not returned to the idle list.
	waitUntil(t, 5*time.Second, "the old instance to close", func() bool {
		s := svc.Pool().Stats()
		return s.Busy == 0 && s.Closing == 0 && len(s.Keys) == 1 && s.Keys[0].Idle == 1
	})
}

// TestExitAtStartIsAFunctionFailure: an instance that died before its
// first call reports ErrFunction (502) with its own reason, not kiln's
// failure (500), however early it died.
func TestExitAtStartIsAFunctionFailure(t *testing.T) {
	st := asyncStore(t)
	_, fn, _ := hotFn(t, st, "dies", 64)
	rt := &hotRuntime{exitedAt: func(int32) bool { return true }}
	svc := hotService(t, st, rt, pool.Config{})
	_, err := callFn(t, svc, fn.ID, "x")
	if !errors.Is(err, errdefs.ErrFunction) || !strings.Contains(err.Error(), "exited with code 3") {
		t.Fatalf("error %v, want ErrFunction naming the exit", err)
	}
}

// TestHostNetworkPolicy: a fn asking for the node's network is refused
// unless kilnd allows it, before any container starts.
func TestHostNetworkPolicy(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	_, fn, _ := hotFn(t, st, "net", 64)
	if _, err := st.UpdateFn(ctx, fn.ID, func(f *store.Fn) error {
		f.Annotations = map[string]any{AnnotationNetwork: "host"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rt := &hotRuntime{}
	svc := hotService(t, st, rt, pool.Config{})
	if _, err := callFn(t, svc, fn.ID, "x"); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "--allow-host-network") {
		t.Fatalf("error %v, want ErrInvalid naming the flag", err)
	}
	if n := rt.started.Load(); n != 0 {
		t.Fatalf("%d containers started for a refused fn", n)
	}
}

// streamHot answers every call with a stream its test controls.
type streamHot struct {
	fakeHot
	body func() io.ReadCloser
}

func (h *streamHot) Call(ctx context.Context, req *protocol.Request, _ io.Writer) (*protocol.Response, error) {
	return &protocol.Response{Status: 200, Header: http.Header{}, Stream: h.body()}, nil
}

// pipeStream is a stream body whose end the test decides; Close before
// the end breaks the instance, as a real one does.
type pipeStream struct {
	r    *io.PipeReader
	inst *fakeHot
	done bool
}

func (p *pipeStream) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if err == io.EOF {
		p.done = true
	} else if err != nil {
		p.inst.die(err)
	}
	return n, err
}

func (p *pipeStream) Close() error {
	if !p.done {
		p.inst.die(errors.New("closed mid-stream"))
	}
	return p.r.Close()
}

// TestStreamedCalls: a streamed answer holds its container and its call
// open until the body ends: then the record is success and the container
// serves again; a failed stream is an error record and a discarded
// container; a client that goes away is recorded as such.
func TestStreamedCalls(t *testing.T) {
	for _, tt := range []struct {
		name     string
		end      func(w *io.PipeWriter, s io.ReadCloser)
		status   string
		msg      string
		reusable bool
	}{
		{"clean end", func(w *io.PipeWriter, s io.ReadCloser) {
			w.Close()
			_, _ = io.ReadAll(s)
		}, store.CallSuccess, "", true},
		{"function fails mid-stream", func(w *io.PipeWriter, s io.ReadCloser) {
			w.CloseWithError(fmt.Errorf("%w: function exited with code 3", errdefs.ErrFunction))
			_, _ = io.ReadAll(s)
		}, store.CallError, "exited with code 3", false},
		{"client goes away", func(w *io.PipeWriter, s io.ReadCloser) {
			s.Close()
		}, store.CallError, "client went away", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := asyncStore(t)
			_, fn, _ := hotFn(t, st, "streams", 64)
			var w *io.PipeWriter
			var inst *streamHot
			rt := &streamRuntime{make: func() Instance {
				inst = &streamHot{fakeHot: fakeHot{done: make(chan struct{})}}
				inst.body = func() io.ReadCloser {
					var r *io.PipeReader
					r, w = io.Pipe()
					return &pipeStream{r: r, inst: &inst.fakeHot}
				}
				return inst
			}}
			svc := hotService(t, st, rt, pool.Config{})
			target, _ := svc.ByFn(context.Background(), fn.ID)
			id := svc.NewCallID()
			resp, err := svc.Call(context.Background(), target, &protocol.Request{CallID: id, Method: "GET", URL: "http://x/"})
			if err != nil || resp.Stream == nil {
				t.Fatalf("%+v, %v", resp, err)
			}
			go func() { _, _ = w.Write([]byte("data: one\n\n")) }()
			buf := make([]byte, 64)
			if n, err := resp.Stream.Read(buf); err != nil || string(buf[:n]) != "data: one\n\n" {
				t.Fatalf("first piece %q, %v", buf[:n], err)
			}
			if c, _ := svc.GetCall(context.Background(), fn.ID, id); c.Status != store.CallRunning {
				t.Fatalf("mid-stream the call is %s", c.Status)
			}
			if s := svc.Pool().Stats(); s.Busy != 1 {
				t.Fatalf("mid-stream the container is not busy: %+v", s)
			}
			tt.end(w, resp.Stream)
			var c *store.Call
			waitUntil(t, 5*time.Second, "the record", func() bool {
				c, _ = svc.GetCall(context.Background(), fn.ID, id)
				return c != nil && final(c.Status)
			})
			if c.Status != tt.status || !strings.Contains(c.Error, tt.msg) {
				t.Fatalf("record %s %q, want %s mentioning %q", c.Status, c.Error, tt.status, tt.msg)
			}
			waitUntil(t, 5*time.Second, "the lease to end", func() bool {
				s := svc.Pool().Stats()
				return s.Busy == 0 && s.Closing == 0
			})
			idle := 0
			for _, k := range svc.Pool().Stats().Keys {
				idle += k.Idle
			}
			if (idle == 1) != tt.reusable {
				t.Fatalf("%d idle instances after the stream; reusable should be %v", idle, tt.reusable)
			}
		})
	}
}

type streamRuntime struct{ make func() Instance }

func (r *streamRuntime) StartHot(context.Context, *executor.Function) (Instance, error) {
	return r.make(), nil
}
func (r *streamRuntime) RunCold(context.Context, *executor.Function, *protocol.Request, io.Writer) (*protocol.Response, error) {
	return nil, errors.New("no cold calls")
}
func (r *streamRuntime) ImageID(context.Context, string) (string, error) { return "sha256:s", nil }

// TestMaxConcurrencyRefusesAtOnce: past a fn's max_concurrency a call is
// refused with ErrTooManyRequests without waiting, and a freed place is
// taken again.
func TestMaxConcurrencyRefusesAtOnce(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	_, fn, _ := hotFn(t, st, "narrow", 64)
	if _, err := st.UpdateFn(ctx, fn.ID, func(f *store.Fn) error { f.MaxConcurrency = 2; return nil }); err != nil {
		t.Fatal(err)
	}
	svc := hotService(t, st, &hotRuntime{}, pool.Config{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := callFn(t, svc, fn.ID, "slow", "X-Sleep", "300ms"); err != nil {
				t.Error(err)
			}
		}()
	}
	waitUntil(t, 5*time.Second, "two calls in", func() bool { return svc.Pool().Stats().Busy+svc.Pool().Stats().Launching == 2 })
	start := time.Now()
	_, err := callFn(t, svc, fn.ID, "third")
	if !errors.Is(err, errdefs.ErrTooManyRequests) || !strings.Contains(err.Error(), "max_concurrency of 2") {
		t.Fatalf("third call: %v", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("the refusal took %s", took)
	}
	wg.Wait()
	if _, err := callFn(t, svc, fn.ID, "after"); err != nil {
		t.Fatalf("a call after the others ended: %v", err)
	}
}

// TestDeployRefusesMinWarmThatCannotFit: a min_warm beyond the pool's
// memory is an ErrConflict that says how much it needs, and starts none.
func TestDeployRefusesMinWarmThatCannotFit(t *testing.T) {
	ctx := context.Background()
	st := asyncStore(t)
	_, fn, _ := hotFn(t, st, "big", 256)
	if _, err := st.UpdateFn(ctx, fn.ID, func(f *store.Fn) error { f.MinWarm = 3; return nil }); err != nil {
		t.Fatal(err)
	}
	rt := &hotRuntime{}
	svc := hotService(t, st, rt, pool.Config{CapacityMB: 512})
	err := svc.Deploy(ctx, fn.ID)
	if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "MB") {
		t.Fatalf("Deploy: %v, want ErrConflict naming the memory", err)
	}
	if n := rt.started.Load(); n != 0 {
		t.Fatalf("%d containers started for a refused min_warm", n)
	}
	if _, err := st.UpdateFn(ctx, fn.ID, func(f *store.Fn) error { f.MinWarm = 2; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := svc.Deploy(ctx, fn.ID); err != nil {
		t.Fatalf("a min_warm that fits: %v", err)
	}
	waitUntil(t, 5*time.Second, "2 warm containers", func() bool { return rt.started.Load() == 2 })
}

// loggingHot writes its body as a stderr line of the call.
type loggingHot struct{ fakeHot }

func (h *loggingHot) Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	fmt.Fprintf(logs, "%s\n", req.Body)
	return &protocol.Response{Status: 200, Header: http.Header{}}, nil
}

// TestFollowLogs: a follower gets the lines of calls already made, then
// each new one as it is written, with its call's id; a follower of
// another fn gets none of them.
func TestFollowLogs(t *testing.T) {
	st := asyncStore(t)
	app, fn, _ := hotFn(t, st, "talker", 64)
	_, other, _ := hotFn(t, st, "quiet", 64)
	rt := &streamRuntime{make: func() Instance { return &loggingHot{fakeHot{done: make(chan struct{})}} }}
	svc := hotService(t, st, rt, pool.Config{})
	if _, err := callFn(t, svc, fn.ID, "before"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan LogLine, 10)
	started := make(chan struct{})
	go func() {
		_ = svc.FollowLogs(ctx, app.ID, "", time.Now().Add(-time.Minute), true, func() { close(started) }, func(l LogLine) error {
			lines <- l
			return nil
		})
	}()
	quietLines := make(chan LogLine, 10)
	go func() {
		_ = svc.FollowLogs(ctx, app.ID, other.ID, time.Now().Add(-time.Minute), true, nil, func(l LogLine) error {
			quietLines <- l
			return nil
		})
	}()
	<-started
	get := func() LogLine {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no line")
		}
		return LogLine{}
	}
	if l := get(); l.Line != "before" || l.Fn != "talker" {
		t.Fatalf("history: %+v", l)
	}
	target, _ := svc.ByFn(context.Background(), fn.ID)
	id := svc.NewCallID()
	if _, err := svc.Call(context.Background(), target, &protocol.Request{CallID: id, Method: "POST", URL: "http://x/", Header: http.Header{}, Body: []byte("live")}); err != nil {
		t.Fatal(err)
	}
	if l := get(); l.Line != "live" || l.CallID != id {
		t.Fatalf("live: %+v, want call %s", l, id)
	}
	select {
	case l := <-quietLines:
		t.Fatalf("a follower of another fn got %+v", l)
	case <-time.After(100 * time.Millisecond):
	}
}
