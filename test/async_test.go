package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// restartKilnd starts k again on the same data dir, address and
// namespace, after it stopped or was killed.
func restartKilnd(t *testing.T, k *kilnd) {
	t.Helper()
	select {
	case <-k.exited:
	default:
		t.Fatal("restartKilnd: kilnd is still running")
	}
	k.start()
}

type callView struct {
	ID          string     `json:"id"`
	Status      string     `json:"status"`
	Error       string     `json:"error"`
	Attempts    int        `json:"attempts"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	CompletedAt *time.Time `json:"completed_at"`
}

func getCallView(t *testing.T, k *kilnd, fnID, callID string) callView {
	t.Helper()
	var c callView
	k.doJSON("GET", "/v2/fns/"+fnID+"/calls/"+callID, nil, &c)
	return c
}

func listCallViews(t *testing.T, k *kilnd, fnID string) []callView {
	t.Helper()
	var l struct {
		Items []callView `json:"items"`
	}
	k.doJSON("GET", "/v2/fns/"+fnID+"/calls?per_page=100", nil, &l)
	return l.Items
}

func finalStatus(s string) bool { return s == "success" || s == "error" || s == "timeout" }

// TestAsyncCallsSurviveSIGKILL: detached calls accepted before kilnd is
// killed mid-run all reach a final state after a restart; the ones that
// were running when it died run again, once.
func TestAsyncCallsSurviveSIGKILL(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("async", "sleeper", testfnImage, "json-http", nil)

	const n = 30
	ids := make([]string, n)
	for i := range ids {
		resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader(fmt.Sprintf("call %d", i)), http.Header{
			"Fn-Invoke-Type": {"detached"},
			"X-Test-Action":  {"sleep=300ms"},
		})
		var out struct {
			CallID string `json:"call_id"`
		}
		if resp.StatusCode != http.StatusAccepted || json.Unmarshal(body, &out) != nil || out.CallID == "" {
			t.Fatalf("detached call %d: %d %s", i, resp.StatusCode, body)
		}
		if h := resp.Header.Get("Fn-Call-Id"); h != out.CallID {
			t.Fatalf("Fn-Call-Id %q, body %s", h, body)
		}
		ids[i] = out.CallID
	}

	// Kill it mid-stream: some calls done, some running, the rest queued.
	var before map[string]int
	waitFor(t, 60*time.Second, "a few detached calls to finish", func() bool {
		before = map[string]int{}
		for _, c := range listCallViews(t, k, d.FnID) {
			before[c.Status]++
		}
		return before["success"] >= 2 && before["running"] > 0
	})
	k.stop(syscall.SIGKILL, 10*time.Second)
	t.Logf("killed kilnd with calls %v", before)

	restartKilnd(t, k)
	var got map[string]callView
	waitFor(t, 120*time.Second, "every detached call to reach a final state", func() bool {
		got = map[string]callView{}
		for _, id := range ids {
			c := getCallView(t, k, d.FnID, id)
			if !finalStatus(c.Status) {
				return false
			}
			got[id] = c
		}
		return true
	})
	statuses := map[string]int{}
	retried := 0
	for _, id := range ids {
		c := got[id]
		statuses[c.Status]++
		if c.Attempts > 1 {
			retried++
		}
		if c.Attempts < 1 || c.Attempts > 2 {
			t.Errorf("call %s: %d attempts", id, c.Attempts)
		}
		if c.Status != "success" {
			t.Logf("call %s: %s after %d attempts: %s", id, c.Status, c.Attempts, c.Error)
		}
	}
	t.Logf("after the restart: %v; %d calls ran a second time", statuses, retried)
	if statuses["success"] < n-2 {
		t.Fatalf("only %d of %d detached calls succeeded", statuses["success"], n)
	}
	// Only calls running at the kill run twice: at most the dispatcher's
	// default concurrency, and exactly those the restart requeued.
	if retried > 4 {
		t.Errorf("%d calls ran twice; at most 4 can have been running at the kill", retried)
	}
	if retried > 0 && !logHasLine(k.log(), "calls were interrupted by a kilnd restart", fmt.Sprintf("requeued=%d", retried)) {
		t.Errorf("kilnd's log does not say it requeued the %d calls that ran twice", retried)
	}
}

// TestCronTriggerFiresAndStops: a cron trigger fires its fn about every
// 2 s as detached calls, and stops when deleted.
func TestCronTriggerFiresAndStops(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("cron", "ticker", testfnImage, "json-http", nil)

	// A bad schedule is refused once validation knows about cron; until
	// then it is stored and never fires. Either way nothing breaks.
	resp, body := k.do("POST", "/v2/triggers", strings.NewReader(`{"name":"bad","fn_id":"`+d.FnID+`","type":"cron","source":"@every 100ms"}`), http.Header{"Content-Type": {"application/json"}})
	t.Logf("bad schedule: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))

	var trig struct {
		ID        string    `json:"id"`
		CreatedAt time.Time `json:"created_at"`
	}
	k.doJSON("POST", "/v2/triggers", map[string]any{
		"name": "tick", "app_id": d.AppID, "fn_id": d.FnID, "type": "cron", "source": "@every 2s",
		"annotations": map[string]any{"kiln.io/cron-body": "tick"},
	}, &trig)
	time.Sleep(7 * time.Second)

	calls := listCallViews(t, k, d.FnID)
	sort.Slice(calls, func(i, j int) bool { return calls[i].CreatedAt.Before(calls[j].CreatedAt) })
	var gaps []string
	for i := 1; i < len(calls); i++ {
		gap := calls[i].CreatedAt.Sub(calls[i-1].CreatedAt)
		gaps = append(gaps, gap.Round(time.Millisecond).String())
		if gap < time.Second || gap > 3500*time.Millisecond {
			t.Errorf("fires %d and %d are %s apart, want about 2s", i-1, i, gap)
		}
	}
	if len(calls) > 0 {
		t.Logf("%d fires in 7s: first %s after the trigger was created, then every %v",
			len(calls), calls[0].CreatedAt.Sub(trig.CreatedAt).Round(time.Millisecond), gaps)
	}
	if len(calls) < 2 || len(calls) > 5 {
		t.Fatalf("%d calls in 7s from an @every 2s trigger, want 3 or 4", len(calls))
	}
	waitFor(t, 30*time.Second, "the fired calls to succeed", func() bool {
		for _, c := range listCallViews(t, k, d.FnID) {
			if c.Status != "success" && c.CreatedAt.Before(calls[len(calls)-1].CreatedAt.Add(time.Millisecond)) {
				return false
			}
		}
		return true
	})

	k.doJSON("DELETE", "/v2/triggers/"+trig.ID, nil, nil)
	n := len(listCallViews(t, k, d.FnID))
	time.Sleep(5 * time.Second)
	if after := len(listCallViews(t, k, d.FnID)); after != n {
		t.Fatalf("%d calls at the delete, %d five seconds later", n, after)
	}
}
