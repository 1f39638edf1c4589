package test

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The call-lifecycle guarantees, each as a user met it.

// TestDrainServesAcceptedCalls: 4 concurrent 1.2 s calls to a fn with one
// warm container, SIGTERM 0.4 s later. Every call accepted before the
// signal, running or waiting for a launch, answers 200; a call after it
// gets 503; kilnd then exits with nothing left (the harness checks).
// Before the fix 3 of the 4 got 503 "pool is shutting down".
func TestDrainServesAcceptedCalls(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("drain", "slow", testfnImage, "json-http", map[string]any{"timeout": 10})
	if resp, _ := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("warm"), nil); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	const n = 4
	status := make([]int, n)
	bodies := make([]string, n)
	took := make([]time.Duration, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			start := time.Now()
			resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("accepted-"+strconv.Itoa(i)), http.Header{"X-Test-Action": {"sleep=1200ms"}})
			status[i], bodies[i], took[i] = resp.StatusCode, string(body), time.Since(start)
		}(i)
	}
	time.Sleep(400 * time.Millisecond)
	sigAt := time.Now()
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("late"), nil)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("call after SIGTERM: %d %s, want 503 with Retry-After", resp.StatusCode, body)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if status[i] != 200 || bodies[i] != "accepted-"+strconv.Itoa(i) {
			t.Errorf("accepted call %d: %d %q after %s", i, status[i], bodies[i], took[i].Round(time.Millisecond))
		}
	}
	select {
	case <-k.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("kilnd did not exit after draining")
	}
	t.Logf("SIGTERM to exit: %s; accepted calls took %v", time.Since(sigAt).Round(time.Millisecond), roundAll(took))
	if strings.Contains(k.log(), "context canceled") {
		t.Error("a launch was cancelled during the drain")
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// TestCallEndsByDeadline: whatever the function does with its stdin and
// stdout, its call ends by the deadline plus a second, with 502 for a
// function that died (however early) and 504 for one that stayed alive;
// the call record agrees; SIGTERM afterwards exits within seconds. Before
// the fix, a function that exited at start kept a 1 MiB call "running"
// for an hour and held up shutdown.
func TestCallEndsByDeadline(t *testing.T) {
	k := startKilnd(t)
	big := bytes.Repeat([]byte("b"), 1<<20)
	const timeout = 3
	cases := []struct {
		name, onStart, action string
		body                  []byte
		status                int
		msg, record           string
		// early: the failure is known at once and must not wait for the
		// deadline.
		early bool
	}{
		{"exits at start, 1 MiB", "exit=3", "", big, 502, "exited with code 3", "error", true},
		{"exits at start, small", "exit=4", "", []byte("x"), 502, "exited with code 4", "error", true},
		{"never reads stdin", "never-read", "", big, 504, "did not read its request", "timeout", false},
		{"reads half the body", "read=524288", "", big, 504, "timed out", "timeout", false},
		{"half a frame, stays alive", "", "partial-hang", []byte("x"), 504, "timed out", "timeout", false},
		{"half a frame, exits", "", "partial", []byte("x"), 502, "in the middle of its response", "error", true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			extra := map[string]any{"timeout": timeout}
			if c.onStart != "" {
				extra["config"] = map[string]string{"TESTFN_ON_START": c.onStart}
			}
			d := k.deploy("deadline", fmt.Sprintf("f%d", i), testfnImage, "json-http", extra)
			h := http.Header{}
			if c.action != "" {
				h.Set("X-Test-Action", c.action)
			}
			start := time.Now()
			resp, body := k.do("POST", "/invoke/"+d.FnID, bytes.NewReader(c.body), h)
			took := time.Since(start)
			t.Logf("%d after %s: %s", resp.StatusCode, took.Round(time.Millisecond), strings.TrimSpace(string(body)))
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.msg) {
				t.Fatalf("got %d %s, want %d mentioning %q", resp.StatusCode, body, c.status, c.msg)
			}
			limit := timeout*time.Second + time.Second
			if c.early {
				limit = 2 * time.Second
			}
			if took > limit {
				t.Fatalf("answered after %s, want within %s", took.Round(time.Millisecond), limit)
			}
			id := resp.Header.Get("Fn-Call-Id")
			var rec callView
			waitFor(t, 5*time.Second, "the call record", func() bool {
				rec = getCallView(t, k, d.FnID, id)
				return finalStatus(rec.Status)
			})
			if rec.Status != c.record {
				t.Fatalf("record %+v, want status %s", rec, c.record)
			}
			waitFor(t, 5*time.Second, "the broken container removed", func() bool { return countFnContainers(t, k, d.FnID) == 0 })
		})
	}
	if took := k.stop(syscall.SIGTERM, 30*time.Second); took > 5*time.Second {
		t.Fatalf("SIGTERM took %s", took)
	} else {
		t.Logf("SIGTERM to exit: %s", took.Round(time.Millisecond))
	}
}

// TestChangesRefreshContainers: every change that alters what a container
// sees gives the next call a fresh container that sees it: a trigger
// created, moved or deleted (FN_PATH), app config, fn config. A call in
// flight finishes on its old container. Before the fix trigger changes
// kept the old container, with the old FN_PATH.
func TestChangesRefreshContainers(t *testing.T) {
	k := startKilnd(t)
	var app struct{ ID string }
	k.doJSON("POST", "/v2/apps", map[string]any{"name": "fresh"}, &app)
	var fn struct{ ID string }
	k.doJSON("POST", "/v2/fns", map[string]any{"name": "f", "app_id": app.ID, "image": testfnImage, "format": "json-http"}, &fn)
	info := func() echoInfo {
		t.Helper()
		resp, body := k.do("POST", "/invoke/"+fn.ID, strings.NewReader("x"), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("call: %d %s", resp.StatusCode, body)
		}
		return decodeEcho(t, resp)
	}
	first := info()
	if first.Env["FN_PATH"] != "" {
		t.Fatalf("FN_PATH %q before any trigger", first.Env["FN_PATH"])
	}
	var trig struct{ ID string }
	last := first
	steps := []struct {
		name   string
		change func()
		check  func(e echoInfo) bool
	}{
		{"trigger created", func() {
			k.doJSON("POST", "/v2/triggers", map[string]any{"name": "t", "app_id": app.ID, "fn_id": fn.ID, "type": "http", "source": "/one"}, &trig)
		}, func(e echoInfo) bool { return e.Env["FN_PATH"] == "/one" }},
		{"trigger moved", func() {
			k.doJSON("PUT", "/v2/triggers/"+trig.ID, map[string]any{"source": "/two"}, nil)
		}, func(e echoInfo) bool { return e.Env["FN_PATH"] == "/two" }},
		{"app config", func() {
			k.doJSON("PUT", "/v2/apps/"+app.ID, map[string]any{"config": map[string]string{"LEVEL": "app"}}, nil)
		}, func(e echoInfo) bool { return e.Env["LEVEL"] == "app" }},
		{"fn config", func() {
			k.doJSON("PUT", "/v2/fns/"+fn.ID, map[string]any{"config": map[string]string{"LEVEL": "fn"}}, nil)
		}, func(e echoInfo) bool { return e.Env["LEVEL"] == "fn" }},
		{"trigger deleted", func() {
			k.doJSON("DELETE", "/v2/triggers/"+trig.ID, nil, nil)
		}, func(e echoInfo) bool { return e.Env["FN_PATH"] == "" }},
	}
	for _, s := range steps {
		// A slow call holds the current container across the change.
		inflight := make(chan string, 1)
		go func() {
			resp, body := k.do("POST", "/invoke/"+fn.ID, strings.NewReader("inflight"), http.Header{"X-Test-Action": {"sleep=700ms"}})
			if resp.StatusCode != 200 {
				inflight <- fmt.Sprintf("%d %s", resp.StatusCode, body)
				return
			}
			inflight <- decodeEcho(t, resp).Instance
		}()
		time.Sleep(300 * time.Millisecond)
		s.change()
		now := info()
		if now.Instance == last.Instance || !s.check(now) {
			t.Fatalf("%s: next call on instance %s (was %s) with env %v", s.name, now.Instance, last.Instance, now.Env)
		}
		// The slow call began on the old container (it was the only one)
		// or on the new one; it must not have been cut off either way.
		if got := <-inflight; got != last.Instance && got != now.Instance {
			t.Fatalf("%s: in-flight call: %s", s.name, got)
		}
		last = now
	}
	// An annotation changes nothing a container sees: it stays.
	k.doJSON("PUT", "/v2/fns/"+fn.ID, map[string]any{"annotations": map[string]any{"team": "kiln"}}, nil)
	if now := info(); now.Instance != last.Instance {
		t.Fatalf("an annotation change replaced the container")
	}
}

// TestNoisyNeighbour: a fn whose every container dies at start and a fn
// whose calls hang to their deadline, driven hard beside a healthy fn,
// cannot take its launches, queue or memory: every call of the healthy
// fn answers 200 with its own bytes.
func TestNoisyNeighbour(t *testing.T) {
	k := startKilnd(t, withArgs("--max-memory", "1024", "--log-level", "warn"))
	good := k.deploy("noisy", "good", testfnImage, "json-http", map[string]any{"memory": 64, "timeout": 5})
	crash := k.deploy("noisy", "crash", testfnImage, "json-http", map[string]any{"memory": 64, "timeout": 5,
		"config": map[string]string{"TESTFN_ON_START": "exit=1"}})
	hang := k.deploy("noisy", "hang", testfnImage, "json-http", map[string]any{"memory": 64, "timeout": 2})
	const workers = 24
	run := 20 * time.Second
	deadline := time.Now().Add(run)
	var (
		mu       sync.Mutex
		outcomes = map[string]int{}
		goodOK   atomic.Int64
		goodBad  atomic.Int64
	)
	parallel(workers, func(w int) {
		for n := 0; time.Now().Before(deadline); n++ {
			var fnID, action, name string
			switch {
			case w%3 == 1:
				fnID, name = crash.FnID, "crash"
			case w%3 == 2 && w < 12:
				fnID, action, name = hang.FnID, "hang", "hang"
			default:
				fnID, name = good.FnID, "good"
			}
			body := fmt.Sprintf("w%d-n%d", w, n)
			h := http.Header{}
			if action != "" {
				h.Set("X-Test-Action", action)
			}
			resp, b := k.do("POST", "/invoke/"+fnID, strings.NewReader(body), h)
			mu.Lock()
			outcomes[fmt.Sprintf("%s %d", name, resp.StatusCode)]++
			mu.Unlock()
			if name == "good" {
				if resp.StatusCode == 200 && string(b) == body {
					goodOK.Add(1)
				} else {
					goodBad.Add(1)
					t.Errorf("healthy fn: %d %q (sent %q)", resp.StatusCode, b, body)
				}
			}
		}
	})
	t.Logf("%s at %d workers: %v", run, workers, outcomes)
	if goodOK.Load() == 0 || goodBad.Load() > 0 {
		t.Fatalf("healthy fn: %d answered 200, %d did not", goodOK.Load(), goodBad.Load())
	}
}
