package test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
)

// TestMaxConcurrency: with max_concurrency 2, of 10 concurrent slow calls
// 2 run and 8 are refused with 429 and Retry-After at once, not after a
// wait.
func TestMaxConcurrency(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("scale", "narrow", testfnImage, "json-http", map[string]any{"max_concurrency": 2})
	// Warm, so the two that run do not wait for a start either.
	parallel(2, func(int) {
		k.do("POST", "/invoke/"+d.FnID, strings.NewReader("w"), http.Header{"X-Test-Action": {"sleep=300ms"}})
	})
	var mu sync.Mutex
	codes := map[int]int{}
	var refusedIn []time.Duration
	parallel(10, func(i int) {
		start := time.Now()
		resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader(fmt.Sprint(i)), http.Header{"X-Test-Action": {"sleep=1s"}})
		took := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			refusedIn = append(refusedIn, took.Round(time.Millisecond))
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "max_concurrency") {
				t.Errorf("429 without Retry-After or reason: %v %s", resp.Header, body)
			}
		}
	})
	t.Logf("statuses %v; refusals answered after %v", codes, refusedIn)
	if codes[200] != 2 || codes[429] != 8 {
		t.Fatalf("statuses %v, want 2 x 200 and 8 x 429", codes)
	}
	for _, d := range refusedIn {
		// Generous for a loaded 2-core machine; a refusal that waited
		// for a call to finish would take a second.
		if d > 150*time.Millisecond {
			t.Errorf("a refusal took %s", d)
		}
	}
}

// TestMinWarm: min_warm 3 gives 3 containers soon after deploy, keeps
// them past idle_timeout, replaces one that dies, and brings them back
// after a kilnd restart; the first call is served warm.
func TestMinWarm(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("scale", "warm", testfnImage, "json-http", map[string]any{"min_warm": 3, "idle_timeout": 2})
	start := time.Now()
	waitFor(t, 5*time.Second, "3 warm containers after deploy", func() bool { return countFnContainers(t, k, d.FnID) == 3 })
	t.Logf("3 containers %s after the fn was created", time.Since(start).Round(time.Millisecond))

	time.Sleep(3 * time.Second) // past idle_timeout
	if n := countFnContainers(t, k, d.FnID); n != 3 {
		t.Fatalf("%d containers after idle_timeout, want 3", n)
	}

	// One dies (its task killed from outside kiln, in kiln's namespace).
	ids := fnContainerIDs(t, k, d.FnID)
	var victim string
	for id := range ids {
		victim = id
		break
	}
	c, err := k.ctr.LoadContainer(k.ctrCtx(), victim)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(k.ctrCtx(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(k.ctrCtx(), syscall.SIGKILL, containerd.WithKillAll); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor(t, 5*time.Second, "3 containers again after one died", func() bool {
		now := fnContainerIDs(t, k, d.FnID)
		return len(now) == 3 && !now[victim]
	})
	t.Logf("back to 3 %s after one was killed", time.Since(killed).Round(time.Millisecond))
	if took := time.Since(killed); took > 2*time.Second+time.Second {
		t.Errorf("replacing a killed warm container took %s", took)
	}

	k.stop(syscall.SIGTERM, 60*time.Second)
	restartKilnd(t, k)
	restarted := time.Now()
	waitFor(t, 5*time.Second, "3 warm containers after a restart", func() bool { return countFnContainers(t, k, d.FnID) == 3 })
	t.Logf("3 containers %s after the restart", time.Since(restarted).Round(time.Millisecond))

	before := fnContainerIDs(t, k, d.FnID)
	resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("first"), nil)
	if resp.StatusCode != 200 || string(body) != "first" {
		t.Fatalf("first call: %d %s", resp.StatusCode, body)
	}
	if after := fnContainerIDs(t, k, d.FnID); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the first call started a container: %v then %v", before, after)
	}
}

// TestMinWarmThatCannotFit: a fn whose min_warm the node's memory cannot
// hold is refused with 409 and a reason, and is not created.
func TestMinWarmThatCannotFit(t *testing.T) {
	k := startKilnd(t, withArgs("--max-memory", "512"))
	var app struct{ ID string }
	k.doJSON("POST", "/v2/apps", map[string]any{"name": "big"}, &app)
	resp, body := k.do("POST", "/v2/fns", strings.NewReader(fmt.Sprintf(
		`{"name":"huge","app_id":%q,"image":%q,"format":"json-http","memory":256,"min_warm":3}`, app.ID, testfnImage)),
		http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode != 409 || !strings.Contains(string(body), "MB") {
		t.Fatalf("got %d %s, want 409 saying how much memory", resp.StatusCode, body)
	}
	resp, body = k.do("GET", "/v2/fns?app_id="+app.ID, nil, nil)
	if strings.Contains(string(body), "huge") {
		t.Fatalf("the refused fn exists: %s", body)
	}
}

// TestMaxInstances: with max_instances 2, 6 concurrent calls are all
// served, by never more than 2 containers.
func TestMaxInstances(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("scale", "capped", testfnImage, "json-http", map[string]any{"max_instances": 2, "timeout": 10})
	stop := make(chan struct{})
	peakCh := watchContainers(k, stop)
	var failed sync.Map
	parallel(6, func(i int) {
		want := fmt.Sprint("call-", i)
		resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader(want), http.Header{"X-Test-Action": {"sleep=300ms"}})
		if resp.StatusCode != 200 || string(body) != want {
			failed.Store(i, fmt.Sprintf("%d %s", resp.StatusCode, body))
		}
	})
	close(stop)
	peak := <-peakCh
	failed.Range(func(k, v any) bool { t.Errorf("call %v: %v", k, v); return true })
	t.Logf("6 concurrent calls, peak %d containers", peak)
	if peak > 2 {
		t.Fatalf("%d containers at once, max_instances 2", peak)
	}
}

// TestMaxRequests: with max_requests 5, 12 sequential calls are served by
// 3 containers in turn, and none fails.
func TestMaxRequests(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("scale", "retiring", testfnImage, "json-http", map[string]any{"max_requests": 5})
	var order []string
	for i := 0; i < 12; i++ {
		resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
		}
		order = append(order, decodeEcho(t, resp).Instance)
	}
	seen := map[string]int{}
	for _, id := range order {
		seen[id]++
	}
	if len(seen) != 3 {
		t.Fatalf("12 calls ran in %d containers (%v), want 3", len(seen), seen)
	}
	for i, id := range order {
		if want := order[(i/5)*5]; id != want {
			t.Fatalf("call %d ran in %s, want the container of calls %d-%d", i, id, (i/5)*5, (i/5)*5+4)
		}
	}
	if v := metricValue(t, k, `kiln_containers_retired_total{app="scale",fn="retiring"}`); v != 2 {
		t.Errorf("kiln_containers_retired_total = %v, want 2", v)
	}
}

// TestDetachedToUnknownFn: a detached call to a fn that does not exist is
// a 404 at once, not a 202.
func TestDetachedToUnknownFn(t *testing.T) {
	k := startKilnd(t)
	resp, body := k.do("POST", "/invoke/01NOSUCHFN0000000000000000", strings.NewReader("x"), http.Header{"Fn-Invoke-Type": {"detached"}})
	if resp.StatusCode != 404 {
		t.Fatalf("got %d %s, want 404", resp.StatusCode, body)
	}
}
