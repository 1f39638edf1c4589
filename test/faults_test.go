package test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFunctionFaults: each way a function can misbehave gets its call the
// right error, and the next call succeeds in a fresh container.
func TestFunctionFaults(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("faults", "bad", testfnImage, "json-http", map[string]any{"timeout": 3})
	// The baseline has one warm container, as the end will.
	if resp, _ := k.do("POST", "/t/faults/bad", strings.NewReader("warm"), nil); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	goroutines := kilndGoroutines(t, k)
	defer func() {
		// Every broken container's goroutines went with it.
		waitFor(t, 5*time.Second, "kilnd goroutines back to the start", func() bool {
			return kilndGoroutines(t, k) <= goroutines+2
		})
	}()
	cases := []struct {
		name, action string
		status       int
		msg          string
		within       time.Duration
	}{
		{"crash", "crash=3", 502, "exited with code 3", 2 * time.Second},
		{"partial frame then exit", "partial", 502, "in the middle of its response", 2 * time.Second},
		{"garbage only", "garbage-only", 502, "function wrote an invalid response", 2 * time.Second},
		{"garbage after frame", "garbage", 502, "function wrote an invalid response", 2 * time.Second},
		{"hang past timeout", "hang", 504, "timed out", 5 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := k.do("POST", "/t/faults/bad", strings.NewReader("warm"), nil)
			if resp.StatusCode != 200 {
				t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
			}
			old := fnContainerIDs(t, k, d.FnID)
			start := time.Now()
			resp, body = k.do("POST", "/t/faults/bad", strings.NewReader("x"), http.Header{"X-Test-Action": {c.action}})
			took := time.Since(start)
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.msg) {
				t.Fatalf("got %d %s, want %d containing %q", resp.StatusCode, body, c.status, c.msg)
			}
			if took > c.within {
				t.Fatalf("answered after %s, want within %s", took, c.within)
			}
			t.Logf("%s: %d after %s: %s", c.action, resp.StatusCode, took.Round(time.Millisecond), strings.TrimSpace(string(body)))
			// The broken container is removed promptly, not at idle timeout.
			waitFor(t, 2*time.Second, "broken container removed", func() bool {
				now := fnContainerIDs(t, k, d.FnID)
				for id := range old {
					if now[id] {
						return false
					}
				}
				return true
			})
			resp, body = k.do("POST", "/t/faults/bad", strings.NewReader("next"), nil)
			if resp.StatusCode != 200 || string(body) != "next" {
				t.Fatalf("next call: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestStderrFlood: 100 MB of stderr neither blocks the function nor grows
// kilnd without bound; the call's stored log is capped and marked.
func TestStderrFlood(t *testing.T) {
	k := startKilnd(t, withArgs("--log-level", "warn"))
	d := k.deploy("faults", "flood", testfnImage, "json-http", map[string]any{"timeout": 120})
	rssBefore := kilndRSS(t, k)
	resp, body := k.do("POST", "/t/faults/flood", strings.NewReader("flooded"), http.Header{"X-Test-Action": {"flood=100"}})
	if resp.StatusCode != 200 || string(body) != "flooded" {
		t.Fatalf("flood call: %d %q", resp.StatusCode, body)
	}
	rssAfter := kilndRSS(t, k)
	t.Logf("kilnd RSS %d MB before, %d MB after 100 MB of stderr", rssBefore>>20, rssAfter>>20)
	if rssAfter-rssBefore > 64<<20 {
		t.Fatalf("kilnd grew by %d MB", (rssAfter-rssBefore)>>20)
	}
	callID := resp.Header.Get("Fn-Call-Id")
	var log []byte
	waitFor(t, 5*time.Second, "call log stored", func() bool {
		r, b := k.do("GET", "/v2/fns/"+d.FnID+"/calls/"+callID+"/log", nil, nil)
		log = b
		return r.StatusCode == 200 && len(b) > 0
	})
	if len(log) > 1<<20+200 || !strings.Contains(string(log), "truncated") {
		t.Fatalf("call log is %d bytes, truncated marker present: %v", len(log), strings.Contains(string(log), "truncated"))
	}
	resp, body = k.do("POST", "/t/faults/flood", strings.NewReader("quiet"), nil)
	if resp.StatusCode != 200 || string(body) != "quiet" {
		t.Fatalf("next call: %d %q", resp.StatusCode, body)
	}
}

// TestClientDisconnectDiscardsContainer: a client that gives up mid-call
// leaves a container whose reply can no longer be delivered in step; kiln
// discards it and keeps serving.
func TestClientDisconnectDiscardsContainer(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("faults", "slow", testfnImage, "json-http", nil)
	resp, _ := k.do("POST", "/t/faults/slow", strings.NewReader("warm"), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	old := fnContainerIDs(t, k, d.FnID)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", k.url+"/t/faults/slow", strings.NewReader("x"))
	req.Header.Set("X-Test-Action", "sleep=2s")
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("client call: %v", err)
	}
	waitFor(t, 3*time.Second, "abandoned container removed", func() bool {
		now := fnContainerIDs(t, k, d.FnID)
		for id := range old {
			if now[id] {
				return false
			}
		}
		return true
	})
	resp, body := k.do("POST", "/t/faults/slow", strings.NewReader("again"), nil)
	if resp.StatusCode != 200 || string(body) != "again" {
		t.Fatalf("next call: %d %q", resp.StatusCode, body)
	}
}

// TestSIGTERMDrainsInFlight: calls in flight when kilnd is told to stop
// finish; calls that arrive meanwhile get 503; then kilnd exits and its
// containers are gone (checked by the harness cleanup).
func TestSIGTERMDrainsInFlight(t *testing.T) {
	k := startKilnd(t)
	k.deploy("drain", "slow", testfnImage, "json-http", nil)
	var wg sync.WaitGroup
	results := make([]int, 3)
	bodies := make([]string, 3)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, body := k.do("POST", "/t/drain/slow", strings.NewReader("inflight-"+strconv.Itoa(i)), http.Header{"X-Test-Action": {"sleep=2s"}})
			results[i], bodies[i] = resp.StatusCode, string(body)
		}(i)
	}
	time.Sleep(700 * time.Millisecond) // let the three calls reach containers
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	resp, body := k.do("POST", "/t/drain/slow", strings.NewReader("late"), nil)
	if resp.StatusCode != 503 {
		t.Fatalf("call during drain: %d %s, want 503", resp.StatusCode, body)
	}
	wg.Wait()
	for i := range results {
		if results[i] != 200 || bodies[i] != "inflight-"+strconv.Itoa(i) {
			t.Fatalf("in-flight call %d: %d %q", i, results[i], bodies[i])
		}
	}
	select {
	case <-k.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("kilnd did not exit after draining")
	}
}

// TestKill9ThenRestartSweepsOrphans: kilnd dies with hot containers live;
// the next kilnd removes them before it serves, and serves normally.
func TestKill9ThenRestartSweepsOrphans(t *testing.T) {
	k := startKilnd(t)
	k.deploy("crash", "a", testfnImage, "json-http", nil)
	k.deploy("crash", "b", testfnImage, "http", nil)
	for _, fn := range []string{"a", "b"} {
		if resp, _ := k.do("POST", "/t/crash/"+fn, strings.NewReader("x"), nil); resp.StatusCode != 200 {
			t.Fatalf("call %s: %d", fn, resp.StatusCode)
		}
	}
	k.stop(syscall.SIGKILL, 10*time.Second)
	if n := len(k.containers()); n != 2 {
		t.Fatalf("after kill -9, %d containers in the namespace, want the 2 orphans", n)
	}
	k.start()
	if n := len(k.containers()); n != 0 {
		t.Fatalf("restarted kilnd serves with %d orphan containers left", n)
	}
	if !strings.Contains(k.log(), "removed containers left by an earlier run") {
		t.Fatal("kilnd did not log the orphan sweep")
	}
	for _, fn := range []string{"a", "b"} {
		resp, body := k.do("POST", "/t/crash/"+fn, strings.NewReader("after"), nil)
		if resp.StatusCode != 200 || string(body) != "after" {
			t.Fatalf("call %s after restart: %d %q", fn, resp.StatusCode, body)
		}
	}
}

// TestEmbeddedContainerdRestart: with kilnd's own containerd, killing it
// makes calls that need containerd fail fast with 503; kilnd restarts it
// and reconnects, and later calls succeed.
func TestEmbeddedContainerdRestart(t *testing.T) {
	k := startKilnd(t, embeddedContainerd())
	d := k.deploy("ctrd", "echo", testfnImage, "json-http", nil)
	cold := k.deploy("ctrd", "cold", testfnImage, "default", nil)
	if resp, _ := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), nil); resp.StatusCode != 200 {
		t.Fatalf("first call: %d", resp.StatusCode)
	}
	pidFile := filepath.Join(k.dataDir, "containerd", "containerd.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(b))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill embedded containerd %d: %v", pid, err)
	}
	start := time.Now()
	resp, body := k.do("POST", "/invoke/"+cold.FnID, strings.NewReader("x"), nil)
	took := time.Since(start)
	if resp.StatusCode != 503 && resp.StatusCode != 200 {
		t.Fatalf("call while containerd is down: %d %s", resp.StatusCode, body)
	}
	t.Logf("call needing containerd while it restarts: %d after %s", resp.StatusCode, took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("call took %s: did not fail fast", took)
	}
	waitFor(t, 30*time.Second, "calls succeed after containerd restart", func() bool {
		resp, _ := k.do("POST", "/invoke/"+cold.FnID, strings.NewReader("y"), nil)
		return resp.StatusCode == 200
	})
	resp, body = k.do("POST", "/invoke/"+d.FnID, strings.NewReader("z"), nil)
	if resp.StatusCode != 200 || string(body) != "z" {
		t.Fatalf("hot call after restart: %d %q", resp.StatusCode, body)
	}
	if !strings.Contains(k.log(), "restarting") {
		t.Fatal("kilnd did not log restarting containerd")
	}
}

// kilndRSS reads kilnd's resident memory from /proc.
func kilndRSS(t *testing.T, k *kilnd) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(k.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
