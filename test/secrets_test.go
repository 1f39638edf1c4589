package test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSecrets: a secret is readable as a file inside the fn (0400, its
// user's), and appears nowhere else: not in its env, not in the API, not
// in kilnd's log, not in the container's spec (what ps would show).
// Changing it refreshes the container.
func TestSecrets(t *testing.T) {
	k := startKilnd(t)
	const value = "s3cr3t-v4lue-9d1f"
	var app struct{ ID string }
	k.doJSON("POST", "/v2/apps", map[string]any{"name": "sec"}, &app)
	put := func(v string) {
		t.Helper()
		resp, body := k.do("PUT", "/v2/apps/"+app.ID+"/secrets/db-password", strings.NewReader(`{"value":"`+v+`"}`), http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode != 200 || strings.Contains(string(body), v) {
			t.Fatalf("PUT secret: %d %s", resp.StatusCode, body)
		}
	}
	put(value)
	d := k.deploy("sec", "reader", testfnImage, "json-http", map[string]any{"secrets": []string{"db-password"}})

	resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), http.Header{"X-Test-Action": {"cat=/run/secrets/db-password"}})
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "-r-------- 65534:65534 "+value {
		t.Fatalf("reading the secret file: %d %q", resp.StatusCode, body)
	}
	info := decodeEcho(t, firstInfo(t, k, d.FnID))
	for key, v := range info.Env {
		if strings.Contains(v, value) {
			t.Fatalf("the secret is in env %s", key)
		}
	}
	for _, path := range []string{"/v2/apps/" + app.ID + "/secrets", "/v2/fns/" + d.FnID, "/v2/apps/" + app.ID} {
		if _, body := k.do("GET", path, nil, nil); strings.Contains(string(body), value) {
			t.Fatalf("GET %s shows the secret: %s", path, body)
		}
	}
	_, list := k.do("GET", "/v2/apps/"+app.ID+"/secrets", nil, nil)
	if !strings.Contains(string(list), `"name":"db-password"`) {
		t.Fatalf("secrets list %s", list)
	}
	for _, c := range k.containers() {
		spec, err := c.Spec(k.ctrCtx())
		if err != nil {
			continue
		}
		b, _ := json.Marshal(spec)
		if strings.Contains(string(b), value) {
			t.Fatalf("container %s's spec holds the secret", c.ID())
		}
	}
	if strings.Contains(k.log(), value) {
		t.Fatal("kilnd logged the secret")
	}

	// A changed secret reaches the next call, in a fresh container.
	put("second-value")
	_, body = k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), http.Header{"X-Test-Action": {"cat=/run/secrets/db-password"}})
	if !strings.HasSuffix(strings.TrimSpace(string(body)), " second-value") {
		t.Fatalf("after the change: %q", body)
	}
	// In use: it cannot go.
	if resp, body := k.do("DELETE", "/v2/apps/"+app.ID+"/secrets/db-password", nil, nil); resp.StatusCode != 409 {
		t.Fatalf("deleting a used secret: %d %s", resp.StatusCode, body)
	}
}

func firstInfo(t *testing.T, k *kilnd, fnID string) *http.Response {
	t.Helper()
	resp, _ := k.do("POST", "/invoke/"+fnID, strings.NewReader("x"), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("call: %d", resp.StatusCode)
	}
	return resp
}

// TestLogsFollow: a follower of an app's logs gets a line within a second
// of the function writing it, with the call's id.
func TestLogsFollow(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("follow", "talker", testfnImage, "json-http", nil)
	if resp, _ := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("warm"), http.Header{"X-Test-Action": {"stderr=an old line"}}); resp.StatusCode != 200 {
		t.Fatal("warm-up failed")
	}
	req, _ := http.NewRequest("GET", k.url+"/v2/apps/"+d.AppID+"/logs?follow=true&since=1h", nil)
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	lines := make(chan map[string]string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var l map[string]string
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				lines <- l
			}
		}
		close(lines)
	}()
	next := func(want string) (map[string]string, time.Time) {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the follow ended before %q", want)
				}
				if l["line"] == want {
					return l, time.Now()
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %q within 10 s", want)
			}
		}
	}
	next("an old line") // the past first
	sent := time.Now()
	callResp, _ := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), http.Header{"X-Test-Action": {"stderr=a new line"}})
	l, at := next("a new line")
	t.Logf("a new line reached the follower %s after the call began", at.Sub(sent).Round(time.Millisecond))
	if at.Sub(sent) > time.Second {
		t.Fatalf("the line took %s", at.Sub(sent))
	}
	if l["call_id"] != callResp.Header.Get("Fn-Call-Id") || l["fn"] != "talker" {
		t.Fatalf("line %v, call %s", l, callResp.Header.Get("Fn-Call-Id"))
	}
}
