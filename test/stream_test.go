package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event as the client received it.
type sseEvent struct {
	data    string
	written time.Time // by the function, in the event itself
	arrived time.Time
}

// readEvents reads server-sent events off resp as they arrive.
func readEvents(t *testing.T, r io.Reader) ([]sseEvent, error) {
	t.Helper()
	br := bufio.NewReader(r)
	var events []sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return events, nil
			}
			return events, err
		}
		data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: ")
		if !ok {
			continue
		}
		ev := sseEvent{data: data, arrived: time.Now()}
		if _, at, ok := strings.Cut(data, " at "); ok {
			if ns, err := strconv.ParseInt(at, 10, 64); err == nil {
				ev.written = time.Unix(0, ns)
			}
		}
		events = append(events, ev)
	}
}

// TestStreamingSSE: a function that writes 5 events 200 ms apart: the
// client gets each within 50 ms of its being written, all in order, and
// the next call reuses the same container.
func TestStreamingSSE(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("stream", "sse", testfnImage, "http", nil)
	var ids map[string]bool
	for call := 0; call < 2; call++ {
		start := time.Now()
		req, _ := http.NewRequest("GET", k.url+"/t/stream/sse", nil)
		req.Header.Set("X-Test-Action", "stream=5:200ms")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("call %d: %d %v", call, resp.StatusCode, resp.Header)
		}
		events, err := readEvents(t, resp.Body)
		resp.Body.Close()
		if err != nil || len(events) != 5 {
			t.Fatalf("call %d: %d events, %v", call, len(events), err)
		}
		var lags []time.Duration
		for i, ev := range events {
			if !strings.HasPrefix(ev.data, fmt.Sprintf("event %d at ", i)) {
				t.Fatalf("event %d out of order: %q", i, ev.data)
			}
			lag := ev.arrived.Sub(ev.written)
			lags = append(lags, lag.Round(time.Microsecond))
			if lag > 50*time.Millisecond {
				t.Errorf("call %d: event %d reached the client %s after it was written", call, i, lag)
			}
		}
		total := events[4].arrived.Sub(start)
		t.Logf("call %d: first event after %s of %s in all; write-to-client lag per event %v",
			call, events[0].arrived.Sub(start).Round(time.Millisecond), total.Round(time.Millisecond), lags)
		if total < 800*time.Millisecond {
			t.Fatalf("all 5 events in %s: they were not streamed as written", total)
		}
		now := fnContainerIDs(t, k, d.FnID)
		if call == 1 && fmt.Sprint(now) != fmt.Sprint(ids) {
			t.Fatalf("the second call ran in %v, not the first call's %v", now, ids)
		}
		ids = now
	}
	if n := len(ids); n != 1 {
		t.Fatalf("%d containers, want 1", n)
	}
}

// TestStreamFaults: a stream cut by the deadline, by the function's crash
// or by a bad chunk, or abandoned by the client, ends at once, leaves no
// container, and its record says what happened.
func TestStreamFaults(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("stream", "faulty", testfnImage, "http", map[string]any{"timeout": 2})
	cases := []struct {
		name, action string
		disconnect   bool
		status, msg  string
	}{
		{"deadline", "stream-then=hang", false, "timeout", "timed out"},
		{"crash", "stream-then=crash", false, "error", "exited with code 3"},
		{"bad chunk", "stream-then=badchunk", false, "error", "chunk"},
		{"client disconnects", "stream-then=hang", true, "error", "client went away"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", k.url+"/invoke/"+d.FnID, nil)
			req.Header.Set("X-Test-Action", c.action)
			start := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("Fn-Call-Id")
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			if err != nil || first != "data: first\n" {
				t.Fatalf("first event %q, %v", first, err)
			}
			if c.disconnect {
				cancel()
			} else {
				rest, err := io.ReadAll(br)
				if err == nil {
					t.Fatalf("the stream ended cleanly after %q; it must be cut", rest)
				}
			}
			resp.Body.Close()
			took := time.Since(start)
			var rec callView
			waitFor(t, 10*time.Second, "the call record", func() bool {
				rec = getCallView(t, k, d.FnID, id)
				return finalStatus(rec.Status)
			})
			t.Logf("cut after %s; record %s: %s", took.Round(time.Millisecond), rec.Status, rec.Error)
			if rec.Status != c.status || !strings.Contains(rec.Error, c.msg) {
				t.Fatalf("record %s %q, want %s mentioning %q", rec.Status, rec.Error, c.status, c.msg)
			}
			if took > 3*time.Second {
				t.Fatalf("the stream took %s to end", took)
			}
			waitFor(t, 5*time.Second, "the container removed", func() bool { return countFnContainers(t, k, d.FnID) == 0 })
		})
	}
}

// TestStreamingLargeBodies: 100 MB streamed out of a function and 100 MB
// streamed into one pass whole while kilnd's memory grows by less than
// 20 MB: neither is held.
func TestStreamingLargeBodies(t *testing.T) {
	k := startKilnd(t, withArgs("--max-body", strconv.Itoa(200<<20)))
	out := k.deploy("large", "out", testfnImage, "http", map[string]any{"timeout": 120})
	in := k.deploy("large", "in", testfnImage, "http-stream", map[string]any{"timeout": 120, "memory": 256})
	for _, fn := range []string{out.FnID, in.FnID} {
		if resp, body := k.do("POST", "/invoke/"+fn, strings.NewReader("warm"), nil); resp.StatusCode != 200 {
			t.Fatalf("warm-up: %d %s", resp.StatusCode, body)
		}
	}
	rss0 := kilndRSS(t, k)

	req, _ := http.NewRequest("POST", k.url+"/invoke/"+out.FnID, nil)
	req.Header.Set("X-Test-Action", "stream-mb=100")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != 100<<20 {
		t.Fatalf("streamed response: %d bytes, %v", n, err)
	}
	outTook := time.Since(start)
	rss1 := kilndRSS(t, k)

	// The request: random bytes from a pipe, so the client does not know
	// the length either, and a digest back.
	pr, pw := io.Pipe()
	sum := sha256.New()
	go func() {
		buf := make([]byte, 1<<20)
		for i := 0; i < 100; i++ {
			_, _ = rand.Read(buf)
			sum.Write(buf)
			if _, err := pw.Write(buf); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ = http.NewRequest("POST", k.url+"/invoke/"+in.FnID, pr)
	req.Header.Set("X-Test-Action", "digest")
	start = time.Now()
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	inTook := time.Since(start)
	want := fmt.Sprintf("%d %x\n", 100<<20, sum.Sum(nil))
	if resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("streamed request: %d %q, want %q", resp.StatusCode, got, want)
	}
	rss2 := kilndRSS(t, k)
	t.Logf("kilnd RSS %d MB before, %d MB after 100 MB out (%s), %d MB after 100 MB in (%s)",
		rss0>>20, rss1>>20, outTook.Round(time.Millisecond), rss2>>20, inTook.Round(time.Millisecond))
	if rss1-rss0 > 20<<20 || rss2-rss0 > 20<<20 {
		t.Fatalf("kilnd grew by %d MB (out) and %d MB (in)", (rss1-rss0)>>20, (rss2-rss0)>>20)
	}
}

// fnSeen is what fnfunc reports about the request it got.
type fnSeen struct {
	Path          string              `json:"path"`
	Method        string              `json:"method"`
	CallID        string              `json:"call_id"`
	Deadline      string              `json:"deadline"`
	Intent        string              `json:"intent"`
	ClientMethod  string              `json:"client_method"`
	ClientURL     string              `json:"client_url"`
	ClientHeaders map[string][]string `json:"client_headers"`
	ContentType   string              `json:"content_type"`
	Format        string              `json:"format"`
	Listener      string              `json:"listener"`
	PID           int                 `json:"pid"`
}

// TestHTTPStreamFnContract: a function written for Fn's http-stream
// contract, with nothing of kiln's, runs hot on kiln: binary-safe bodies,
// status and headers through, Fn's headers in, streaming out.
func TestHTTPStreamFnContract(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("fncompat", "echo", fnfuncImage, "http-stream", nil)
	var pids []int
	for i := 0; i < 3; i++ {
		body := make([]byte, 1<<20)
		_, _ = rand.Read(body)
		h := http.Header{"Content-Type": {"application/octet-stream"}, "X-Want-Status": {"201"}, "X-Custom": {"v" + strconv.Itoa(i)}}
		resp, got := k.do("PUT", "/t/fncompat/echo?q="+strconv.Itoa(i), bytes.NewReader(body), h)
		if resp.StatusCode != 201 || !bytes.Equal(got, body) || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("call %d: %d, %d bytes back (same: %v), %v", i, resp.StatusCode, len(got), bytes.Equal(got, body), resp.Header)
		}
		var seen fnSeen
		if err := json.Unmarshal([]byte(resp.Header.Get("X-Fn-Seen")), &seen); err != nil {
			t.Fatalf("X-Fn-Seen %q: %v", resp.Header.Get("X-Fn-Seen"), err)
		}
		if seen.Path != "/call" || seen.Method != "POST" || seen.Intent != "httprequest" || seen.ClientMethod != "PUT" ||
			!strings.HasSuffix(seen.ClientURL, "/t/fncompat/echo?q="+strconv.Itoa(i)) || seen.CallID != resp.Header.Get("Fn-Call-Id") ||
			seen.ClientHeaders["X-Custom"][0] != "v"+strconv.Itoa(i) || seen.Format != "http-stream" || seen.Listener != "unix:/tmp/iofs/lsnr.sock" {
			t.Fatalf("call %d: the function saw %+v", i, seen)
		}
		if _, err := time.Parse(time.RFC3339, seen.Deadline); err != nil {
			t.Fatalf("Fn-Deadline %q: %v", seen.Deadline, err)
		}
		pids = append(pids, seen.PID)
	}
	if pids[0] != pids[1] || pids[1] != pids[2] || countFnContainers(t, k, d.FnID) != 1 {
		t.Fatalf("calls ran in processes %v, %d containers: not hot", pids, countFnContainers(t, k, d.FnID))
	}

	// Streaming through Fn's contract.
	req, _ := http.NewRequest("GET", k.url+"/t/fncompat/echo", nil)
	req.Header.Set("X-Test-Action", "sse")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	first, _ := br.ReadString('\n')
	ttfb := time.Since(start)
	rest, err := io.ReadAll(br)
	resp.Body.Close()
	total := time.Since(start)
	if first != "data: event 0\n" || err != nil || strings.Count(string(rest), "data: event") != 4 {
		t.Fatalf("stream: %q then %q, %v", first, rest, err)
	}
	t.Logf("http-stream SSE: first event after %s, all after %s", ttfb.Round(time.Millisecond), total.Round(time.Millisecond))
	if ttfb > total/2 {
		t.Fatalf("first event after %s of %s: not streamed", ttfb, total)
	}
}

// TestHTTPStreamFaults: crash, hang, garbage, never listening and exiting
// at start behave as they do for the stdio formats, and leave no
// container, socket or dir behind (the harness checks the sock dir).
func TestHTTPStreamFaults(t *testing.T) {
	k := startKilnd(t)
	cases := []struct {
		name, action, start string
		status              int
		msg                 string
	}{
		{"crash", "crash", "", 502, "exited with code 3"},
		{"hang", "hang", "", 504, "timed out"},
		{"garbage", "garbage", "", 502, "function failed"},
		{"never listens", "", "never-listen", 502, "did not listen"},
		{"exits at start", "", "exit", 502, "exited with code 4"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			extra := map[string]any{"timeout": 2}
			if c.start != "" {
				extra["config"] = map[string]string{"FNFUNC_START": c.start}
				// The listen wait is 10 s; the call must see that fault,
				// not its own deadline first.
				extra["timeout"] = 20
			}
			d := k.deploy("fnfaults", fmt.Sprintf("f%d", i), fnfuncImage, "http-stream", extra)
			h := http.Header{}
			if c.action != "" {
				h.Set("X-Test-Action", c.action)
			}
			start := time.Now()
			resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), h)
			t.Logf("%d after %s: %s", resp.StatusCode, time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(body)))
			if resp.StatusCode != c.status || !strings.Contains(string(body), c.msg) {
				t.Fatalf("got %d %s, want %d mentioning %q", resp.StatusCode, body, c.status, c.msg)
			}
			waitFor(t, 5*time.Second, "the container removed", func() bool { return countFnContainers(t, k, d.FnID) == 0 })
		})
	}
	waitFor(t, 5*time.Second, "socket dirs removed", func() bool {
		entries, _ := os.ReadDir(filepath.Join(k.dataDir, "sock"))
		return len(entries) == 0
	})
}
