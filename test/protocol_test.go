package test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFormatsEndToEnd sends the same call through every hot format and
// checks that what the client sent reached the function and what the
// function answered reached the client, over one reused container.
func TestFormatsEndToEnd(t *testing.T) {
	k := startKilnd(t)
	for _, format := range []string{"http", "json", "json-http", "cloudevent"} {
		t.Run(format, func(t *testing.T) {
			fnName := "echo-" + strings.ReplaceAll(format, "-", "")
			d := k.deploy("formats", fnName, testfnImage, format, map[string]any{"config": map[string]string{"GREETING": "hi"}})
			for i := 0; i < 3; i++ {
				header := http.Header{
					"X-Custom":            {"one", "two"},
					"Content-Type":        {"text/plain"},
					"X-Want-Status":       {"201"},
					"X-Want-Header-X-Out": {"from-fn"},
				}
				resp, body := k.do("PUT", "/t/formats/"+fnName+"?q=1&r=two", strings.NewReader("payload-"+format), header)
				if resp.StatusCode != 201 {
					t.Fatalf("status %d, body %q", resp.StatusCode, body)
				}
				if string(body) != "payload-"+format {
					t.Fatalf("body %q", body)
				}
				if got := resp.Header.Get("X-Out"); got != "from-fn" {
					t.Fatalf("response header X-Out = %q", got)
				}
				info := decodeEcho(t, resp)
				if info.CallID == "" || info.CallID != resp.Header.Get("Fn-Call-Id") {
					t.Fatalf("call id in fn %q, header %q", info.CallID, resp.Header.Get("Fn-Call-Id"))
				}
				if info.Method != "PUT" {
					t.Fatalf("method %q", info.Method)
				}
				if !strings.HasSuffix(info.RequestURL, "/t/formats/"+fnName+"?q=1&r=two") || !strings.HasPrefix(info.RequestURL, "http://") {
					t.Fatalf("request url %q", info.RequestURL)
				}
				if got := strings.Join(info.Headers["X-Custom"], ","); got != "one,two" && got != "one, two" {
					t.Fatalf("X-Custom reached the fn as %q (headers %v)", got, info.Headers)
				}
				dl, err := time.Parse(time.RFC3339, info.Deadline)
				if err != nil || time.Until(dl) < 20*time.Second || time.Until(dl) > 31*time.Second {
					t.Fatalf("deadline %q (%v): want about 30s from now", info.Deadline, err)
				}
				if info.Format != format || info.Env["FN_FORMAT"] != format || info.Env["GREETING"] != "hi" {
					t.Fatalf("format %q env %v", info.Format, info.Env)
				}
				if info.Env["FN_FN_ID"] != d.FnID || info.Env["FN_APP_NAME"] != "formats" || info.Env["FN_MEMORY"] != "128" {
					t.Fatalf("contract env %v", info.Env)
				}
			}
			if n := countFnContainers(t, k, d.FnID); n != 1 {
				t.Fatalf("%d containers served 3 calls, want 1", n)
			}
		})
	}
}

// TestDefaultFormatIsCold: one fresh container per call, request facts
// in env, body on stdin, and no container left after the call.
func TestDefaultFormatIsCold(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("cold", "once", testfnImage, "default", nil)
	for i := 0; i < 2; i++ {
		want := "in-" + string(rune('0'+i))
		resp, body := k.do("POST", "/t/cold/once", strings.NewReader(want), nil)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		resp, body = k.do("POST", "/t/cold/once?a=b", strings.NewReader(want), http.Header{"X-Thing": {"v1"}, "X-Test-Action": {"info"}})
		var info echoInfo
		if err := json.Unmarshal(body, &info); resp.StatusCode != 200 || err != nil {
			t.Fatalf("info call: %d %q %v", resp.StatusCode, body, err)
		}
		if info.Env["FN_CALL_ID"] != resp.Header.Get("Fn-Call-Id") || info.Env["FN_METHOD"] != "POST" ||
			!strings.HasSuffix(info.Env["FN_REQUEST_URL"], "/t/cold/once?a=b") || info.Env["FN_HEADER_X-Thing"] != "v1" {
			t.Fatalf("env %v", info.Env)
		}
		if _, err := time.Parse(time.RFC3339, info.Env["FN_DEADLINE"]); err != nil {
			t.Fatalf("FN_DEADLINE %q: %v", info.Env["FN_DEADLINE"], err)
		}
	}
	waitFor(t, 5*time.Second, "cold containers removed", func() bool { return countFnContainers(t, k, d.FnID) == 0 })

	resp, body := k.do("POST", "/t/cold/once", nil, http.Header{"X-Test-Action": {"crash=7"}})
	if resp.StatusCode != 502 || !strings.Contains(string(body), "code 7") {
		t.Fatalf("crash in default format: %d %s", resp.StatusCode, body)
	}
}

// TestBinaryBodyRoundTrip: 1 MiB of random bytes come back bit-exact
// through the binary-safe formats.
func TestBinaryBodyRoundTrip(t *testing.T) {
	k := startKilnd(t)
	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"http", "json-http"} {
		fnName := "bin-" + strings.ReplaceAll(format, "-", "")
		k.deploy("binary", fnName, testfnImage, format, nil)
		for i := 0; i < 2; i++ {
			resp, body := k.do("POST", "/t/binary/"+fnName, bytes.NewReader(payload), http.Header{"Content-Type": {"application/octet-stream"}})
			if resp.StatusCode != 200 || !bytes.Equal(body, payload) {
				t.Fatalf("%s: status %d, %d bytes back, equal=%v", format, resp.StatusCode, len(body), bytes.Equal(body, payload))
			}
		}
	}
}

// TestGarbageAfterFrameDiscardsContainer: the call whose function wrote
// past its frame fails, and the next call gets a fresh container and its
// own, correct bytes.
func TestGarbageAfterFrameDiscardsContainer(t *testing.T) {
	k := startKilnd(t)
	for _, format := range []string{"http", "json", "json-http", "cloudevent"} {
		fnName := "garbage-" + strings.ReplaceAll(format, "-", "")
		d := k.deploy("garbage", fnName, testfnImage, format, nil)
		resp, body := k.do("POST", "/t/garbage/"+fnName, strings.NewReader("warm"), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s warm-up: %d %s", format, resp.StatusCode, body)
		}
		before := decodeEcho(t, resp).Instance
		resp, body = k.do("POST", "/t/garbage/"+fnName, strings.NewReader("x"), http.Header{"X-Test-Action": {"garbage"}})
		if resp.StatusCode != 502 || !strings.Contains(string(body), "function wrote an invalid response") {
			t.Fatalf("%s garbage: %d %s", format, resp.StatusCode, body)
		}
		resp, body = k.do("POST", "/t/garbage/"+fnName, strings.NewReader("after"), nil)
		if resp.StatusCode != 200 || string(body) != "after" {
			t.Fatalf("%s after garbage: %d %q", format, resp.StatusCode, body)
		}
		if after := decodeEcho(t, resp).Instance; after == before || after == "" {
			t.Fatalf("%s: instance %q served again after writing garbage", format, after)
		}
		_ = d
	}
}

func fnContainerIDs(t *testing.T, k *kilnd, fnID string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, c := range k.containers() {
		labels, err := c.Labels(k.ctrCtx())
		if err != nil {
			continue // removed meanwhile
		}
		if labels["kiln.io/fn-id"] == fnID {
			ids[c.ID()] = true
		}
	}
	return ids
}

func countFnContainers(t *testing.T, k *kilnd, fnID string) int {
	return len(fnContainerIDs(t, k, fnID))
}
