package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHotCallsThroughTrigger is the walking skeleton's promise: calls
// through a trigger reach a hot container, each gets its own answer and
// its own call id, one container serves them all, and the function's
// stderr shows in kilnd's log with the call's id.
func TestHotCallsThroughTrigger(t *testing.T) {
	k := startKilnd(t)
	k.deploy("examples", "hello", exampleImage, "json-http", nil)

	seen := map[string]bool{}
	var first, hot time.Duration
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("World-%d", i)
		start := time.Now()
		resp, body := k.do("POST", "/t/examples/hello", strings.NewReader(name), nil)
		took := time.Since(start)
		if i == 0 {
			first = took
		} else {
			hot += took
		}
		if resp.StatusCode != 200 || string(body) != "Hello, "+name+"!" {
			t.Fatalf("call %d: %d %q", i, resp.StatusCode, body)
		}
		id := resp.Header.Get("Fn-Call-Id")
		if id == "" || seen[id] {
			t.Fatalf("call %d: Fn-Call-Id %q missing or repeated", i, id)
		}
		seen[id] = true
		if i == 3 {
			waitFor(t, 5*time.Second, "stderr line with call id in kilnd log", func() bool {
				return logHasLine(k.log(), "hello: greeted "+name, "call_id="+id)
			})
		}
	}
	if n := len(k.containers()); n != 1 {
		t.Fatalf("%d containers served 10 calls, want 1", n)
	}
	t.Logf("first call (cold start) %s, hot calls mean %s", first.Round(time.Microsecond), (hot / 9).Round(time.Microsecond))
}

func TestInvokeUnknownFnIs404(t *testing.T) {
	k := startKilnd(t)
	resp, body := k.do("POST", "/invoke/unknown", strings.NewReader("x"), nil)
	var e struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if resp.StatusCode != 404 || e.Code != 404 || !strings.Contains(e.Message, "unknown") {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	resp, _ = k.do("GET", "/t/nope/nothing", nil, nil)
	if resp.StatusCode != 404 {
		t.Fatalf("unknown app trigger: %d", resp.StatusCode)
	}
}

// TestSIGTERMStopsPromptly: kilnd with live hot containers stops within
// seconds of SIGTERM and removes them (the cleanup checks nothing is left).
func TestSIGTERMStopsPromptly(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("app", "echo", testfnImage, "json-http", nil)
	for i := 0; i < 3; i++ {
		resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("ping"), nil)
		if resp.StatusCode != 200 || string(body) != "ping" {
			t.Fatalf("call: %d %q", resp.StatusCode, body)
		}
	}
	if n := len(k.containers()); n != 1 {
		t.Fatalf("%d containers, want 1", n)
	}
	took := k.stop(syscall.SIGTERM, 15*time.Second)
	t.Logf("kilnd stopped %s after SIGTERM", took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Fatalf("stop took %s", took)
	}
}

func TestIdleTimeoutRemovesContainer(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("app", "idle", testfnImage, "json-http", map[string]any{"idle_timeout": 1})
	resp, _ := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("call: %d", resp.StatusCode)
	}
	if n := len(k.containers()); n != 1 {
		t.Fatalf("%d containers after a call, want 1", n)
	}
	waitFor(t, 1*time.Second+3*time.Second, "idle container removed", func() bool { return len(k.containers()) == 0 })
}

// echoInfo is what the test function reports about the call it got.
type echoInfo struct {
	CallID     string              `json:"call_id"`
	Deadline   string              `json:"deadline"`
	Method     string              `json:"method"`
	RequestURL string              `json:"request_url"`
	Format     string              `json:"format"`
	Headers    map[string][]string `json:"headers"`
	Env        map[string]string   `json:"env"`
	Instance   string              `json:"instance"`
}

func decodeEcho(t *testing.T, resp *http.Response) echoInfo {
	t.Helper()
	var info echoInfo
	raw := resp.Header.Get("X-Echo-Info")
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		t.Fatalf("X-Echo-Info %q: %v", raw, err)
	}
	return info
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func logHasLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
