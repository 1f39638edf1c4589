package test

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"sync/atomic"
	"testing"
	"time"
)

// watchContainers samples the namespace's container count until stop is
// closed and returns the highest count seen.
func watchContainers(k *kilnd, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		peak := 0
		for {
			list, err := k.ctr.Containers(k.ctrCtx())
			if err == nil && len(list) > peak {
				peak = len(list)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return out
}

// TestPoolUnderLoad: 64 concurrent 200 ms calls under 1024 MB with 128 MB
// fns: every call answers with its own body, no more than 8 containers
// ever live, and the whole burst takes a few seconds.
func TestPoolUnderLoad(t *testing.T) {
	k := startKilnd(t, withArgs("--max-memory", "1024"))
	k.deploy("load", "sleepy", testfnImage, "json-http", map[string]any{"memory": 128, "idle_timeout": 2})
	goroutinesBefore := kilndGoroutines(t, k)
	stop := make(chan struct{})
	peakCh := watchContainers(k, stop)
	var failures atomic.Int32
	start := time.Now()
	parallel(64, func(i int) {
		want := fmt.Sprintf("call-%d", i)
		resp, body := k.do("POST", "/t/load/sleepy", strings.NewReader(want), http.Header{"X-Test-Action": {"sleep=200ms"}})
		if resp.StatusCode != 200 || string(body) != want {
			failures.Add(1)
			t.Errorf("call %d: %d %q", i, resp.StatusCode, body)
		}
	})
	took := time.Since(start)
	close(stop)
	peak := <-peakCh
	t.Logf("64 calls of 200 ms: %s, peak %d containers", took.Round(time.Millisecond), peak)
	if failures.Load() > 0 {
		t.Fatalf("%d calls failed", failures.Load())
	}
	if peak > 8 {
		t.Fatalf("%d containers live at once, memory admits 8", peak)
	}
	if took > 15*time.Second {
		t.Fatalf("burst took %s", took)
	}
	// After idle_timeout every container goes, and kilnd's goroutines
	// return to where they were.
	waitFor(t, 2*time.Second+5*time.Second, "containers reaped after idle timeout", func() bool { return len(k.containers()) == 0 })
	waitFor(t, 5*time.Second, "goroutines back to the start", func() bool {
		return kilndGoroutines(t, k) <= goroutinesBefore+5
	})
}

// TestColdBurstLaunchesBounded: 50 concurrent first calls launch no more
// containers than memory admits (here 4 of 256 MB), not one per call.
func TestColdBurstLaunchesBounded(t *testing.T) {
	k := startKilnd(t, withArgs("--max-memory", "1024"))
	d := k.deploy("burst", "cold", testfnImage, "json-http", map[string]any{"memory": 256})
	stop := make(chan struct{})
	peakCh := watchContainers(k, stop)
	var ok atomic.Int32
	parallel(50, func(i int) {
		resp, body := k.do("POST", "/t/burst/cold", strings.NewReader(strconv.Itoa(i)), http.Header{"X-Test-Action": {"sleep=50ms"}})
		if resp.StatusCode == 200 && string(body) == strconv.Itoa(i) {
			ok.Add(1)
		} else {
			t.Errorf("call %d: %d %q", i, resp.StatusCode, body)
		}
	})
	close(stop)
	peak := <-peakCh
	starts := metricValue(t, k, `kiln_container_starts_total{app="burst",fn="cold",kind="hot"}`)
	t.Logf("50 concurrent first calls: %d ok, %v launches, peak %d containers", ok.Load(), starts, peak)
	if peak > 4 || starts > 4 {
		t.Fatalf("launched %v containers (peak %d live); memory admits 4", starts, peak)
	}
	_ = d
}

// TestFnUpdateGetsFreshContainers: after a change to config or memory the
// next call runs in a new container with the new settings, and the old
// one goes.
func TestFnUpdateGetsFreshContainers(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("update", "fn", testfnImage, "json-http", map[string]any{"config": map[string]string{"COLOR": "red"}})
	resp, _ := k.do("POST", "/t/update/fn", strings.NewReader("x"), nil)
	if info := decodeEcho(t, resp); info.Env["COLOR"] != "red" {
		t.Fatalf("env before update: %v", info.Env)
	}
	old := fnContainerIDs(t, k, d.FnID)
	k.doJSON("PUT", "/v2/fns/"+d.FnID, map[string]any{"config": map[string]string{"COLOR": "blue"}, "memory": 256}, nil)
	resp, _ = k.do("POST", "/t/update/fn", strings.NewReader("y"), nil)
	info := decodeEcho(t, resp)
	if info.Env["COLOR"] != "blue" || info.Env["FN_MEMORY"] != "256" {
		t.Fatalf("env after update: %v", info.Env)
	}
	waitFor(t, 5*time.Second, "old container drained", func() bool {
		now := fnContainerIDs(t, k, d.FnID)
		for id := range old {
			if now[id] {
				return false
			}
		}
		return len(now) == 1
	})
}

func kilndGoroutines(t *testing.T, k *kilnd) int {
	return int(metricValue(t, k, "go_goroutines"))
}

// metricValue reads one sample from kilnd's /metrics (0 when absent).
func metricValue(t *testing.T, k *kilnd, series string) float64 {
	t.Helper()
	_, body := k.do("GET", "/metrics", nil, nil)
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			return v
		}
	}
	return 0
}

// TestShimGrouping: the hot containers of one fn share one runc shim
// process; without grouping each has its own.
func TestShimGrouping(t *testing.T) {
	for _, grouped := range []bool{true, false} {
		t.Run(fmt.Sprintf("grouped=%v", grouped), func(t *testing.T) {
			k := startKilnd(t, withArgs(fmt.Sprintf("--group-shims=%v", grouped)))
			k.deploy("shims", "fn", testfnImage, "json-http", nil)
			parallel(3, func(i int) {
				resp, _ := k.do("POST", "/t/shims/fn", strings.NewReader("x"), http.Header{"X-Test-Action": {"sleep=500ms"}})
				if resp.StatusCode != 200 {
					t.Errorf("call %d: %d", i, resp.StatusCode)
				}
			})
			containers := len(k.containers())
			shims := len(shimPIDs(k.ns, env.containerd.Address()))
			t.Logf("%d containers, %d shims", containers, shims)
			if containers != 3 {
				t.Fatalf("%d containers, want 3", containers)
			}
			if want := map[bool]int{true: 1, false: 3}[grouped]; shims != want {
				t.Fatalf("%d shims for 3 containers of one fn, want %d", shims, want)
			}
		})
	}
}
