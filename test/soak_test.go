package test

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var soakFor = flag.Duration("soak", 0, "run the soak test for this long (make soak)")

// TestSoak runs mixed sync and detached load at concurrency 32, with a
// share of misbehaving calls, and checks that no call is lost or answered
// with another call's bytes, and that kilnd's memory and goroutines end
// where they started. It prints the figures docs/SOAK.md records.
func TestSoak(t *testing.T) {
	if *soakFor == 0 {
		t.Skip("run with make soak")
	}
	k := startKilnd(t, withArgs("--max-memory", "4096", "--log-level", "warn", "--calls-per-fn", "1000000"))
	good := k.deploy("soak", "good", testfnImage, "json-http", map[string]any{"memory": 64, "timeout": 5, "idle_timeout": 5})
	bad := k.deploy("soak", "bad", testfnImage, "http", map[string]any{"memory": 64, "timeout": 2, "idle_timeout": 5})
	// Warm up, then take the baseline.
	for i := 0; i < 20; i++ {
		k.do("POST", "/invoke/"+good.FnID, strings.NewReader("warm"), nil)
	}
	time.Sleep(time.Second)
	rss0, gor0, heap0 := kilndRSS(t, k), kilndGoroutines(t, k), metricValue(t, k, "go_memstats_heap_inuse_bytes")

	var (
		mu       sync.Mutex
		outcomes = map[string]int{}
		mixups   atomic.Int64
		detached = map[string]string{} // call id -> fn id
		sent     atomic.Int64
	)
	count := func(kind string) {
		mu.Lock()
		outcomes[kind]++
		mu.Unlock()
	}
	actions := []struct {
		weight int
		header string
		want   int
	}{
		{70, "", 200},
		{5, "crash=3", 502},
		{5, "garbage", 502},
		{3, "partial", 502},
		{2, "hang", 504},
		{5, "stderr=soak-line", 200},
	}
	total := 0
	for _, a := range actions {
		total += a.weight
	}
	deadline := time.Now().Add(*soakFor)
	start := time.Now()
	parallel(32, func(worker int) {
		rng := rand.New(rand.NewSource(int64(worker)))
		for n := 0; time.Now().Before(deadline); n++ {
			body := fmt.Sprintf("w%d-n%d-%d", worker, n, rng.Int63())
			sent.Add(1)
			if rng.Intn(10) == 0 {
				resp, b := k.do("POST", "/invoke/"+good.FnID, strings.NewReader(body), http.Header{"Fn-Invoke-Type": {"detached"}})
				var r struct {
					CallID string `json:"call_id"`
				}
				if resp.StatusCode != 202 || json.Unmarshal(b, &r) != nil {
					count(fmt.Sprintf("detached %d", resp.StatusCode))
					continue
				}
				mu.Lock()
				detached[r.CallID] = good.FnID
				mu.Unlock()
				count("detached 202")
				continue
			}
			pick := rng.Intn(total)
			var a = actions[0]
			for _, c := range actions {
				if pick < c.weight {
					a = c
					break
				}
				pick -= c.weight
			}
			fn := good
			h := http.Header{}
			if a.header != "" {
				fn = bad
				h.Set("X-Test-Action", a.header)
			}
			resp, b := k.do("POST", "/invoke/"+fn.FnID, strings.NewReader(body), h)
			count(fmt.Sprintf("%s %d", orDefault(a.header, "echo"), resp.StatusCode))
			if resp.StatusCode == 200 && string(b) != body {
				mixups.Add(1)
				t.Errorf("call got %q, sent %q", b, body)
			}
			// The healthy fn answers 200, every time: the bad fn's crashes
			// and hangs may not take its launches, queue or memory. Under
			// this load a broken container's replacement can take longer
			// than the bad fn's 2 s timeout, so the bad fn may also answer
			// 504, or 503 (no capacity for it before its deadline).
			if resp.StatusCode != a.want && !(fn == bad && (resp.StatusCode == 504 || resp.StatusCode == 503)) {
				t.Errorf("%s: %d %s", orDefault(a.header, "echo"), resp.StatusCode, b)
			}
		}
	})
	took := time.Since(start)

	// Every detached call reaches a final state.
	final := map[string]int{}
	waitFor(t, 2*time.Minute, "detached calls final", func() bool {
		clear(final)
		for id, fnID := range detached {
			c := getCallView(t, k, fnID, id)
			final[c.Status]++
		}
		return final["queued"] == 0 && final["running"] == 0
	})
	// Let idle containers go, then compare with the baseline.
	waitFor(t, 30*time.Second, "containers reaped", func() bool { return len(k.containers()) == 0 })
	time.Sleep(2 * time.Second)
	rss1, gor1, heap1 := kilndRSS(t, k), kilndGoroutines(t, k), metricValue(t, k, "go_memstats_heap_inuse_bytes")

	kinds := make([]string, 0, len(outcomes))
	for kind := range outcomes {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	var report strings.Builder
	fmt.Fprintf(&report, "soak: %s at concurrency 32, %d calls (%.0f/s)\n", took.Round(time.Second), sent.Load(), float64(sent.Load())/took.Seconds())
	for _, kind := range kinds {
		fmt.Fprintf(&report, "  %-28s %d\n", kind, outcomes[kind])
	}
	fmt.Fprintf(&report, "  detached final states: %v\n", final)
	fmt.Fprintf(&report, "  answers with another call's bytes: %d\n", mixups.Load())
	fmt.Fprintf(&report, "  kilnd RSS: %d MB at start, %d MB at end\n", rss0>>20, rss1>>20)
	fmt.Fprintf(&report, "  kilnd Go heap in use: %.1f MB at start, %.1f MB at end\n", heap0/(1<<20), heap1/(1<<20))
	fmt.Fprintf(&report, "  kilnd goroutines: %d at start, %d at end\n", gor0, gor1)
	t.Log("\n" + report.String())
	if final["success"] != len(detached) {
		t.Errorf("detached calls: %v, want all %d success", final, len(detached))
	}
	if gor1 > gor0+10 {
		t.Errorf("goroutines grew from %d to %d", gor0, gor1)
	}
	// RSS keeps pages the Go runtime has not yet returned to the kernel;
	// the live heap is what must come back down.
	if heap1 > heap0+8<<20 {
		t.Errorf("Go heap in use grew from %.1f MB to %.1f MB", heap0/(1<<20), heap1/(1<<20))
	}
	if rss1 > rss0+48<<20 {
		t.Errorf("RSS grew from %d MB to %d MB", rss0>>20, rss1>>20)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
