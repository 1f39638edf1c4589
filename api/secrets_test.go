package api

import (
	"strings"
	"testing"
)

// TestSecretRoutes: a secret's value goes in and never comes out; a fn
// may only name secrets its app has; a secret in use cannot be deleted.
func TestSecretRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	a := e.app("a")
	base := "/v2/apps/" + a.ID + "/secrets/"
	rec := e.do("PUT", base+"db", map[string]any{"value": "pa55w0rd"})
	wantStatus(t, rec, 200)
	if strings.Contains(rec.Body.String(), "pa55w0rd") || !strings.Contains(rec.Body.String(), `"name":"db"`) {
		t.Fatalf("PUT answered %s", rec.Body)
	}
	rec = e.do("GET", "/v2/apps/"+a.ID+"/secrets", nil)
	wantStatus(t, rec, 200)
	if strings.Contains(rec.Body.String(), "pa55w0rd") || !strings.Contains(rec.Body.String(), `"name":"db"`) {
		t.Fatalf("list %s", rec.Body)
	}
	wantStatus(t, e.do("PUT", base+"a%20b", map[string]any{"value": "x"}), 400, "invalid secret name")
	wantStatus(t, e.do("PUT", base+"empty", map[string]any{}), 400, "invalid secret value: required")
	wantStatus(t, e.do("PUT", "/v2/apps/nope/secrets/x", map[string]any{"value": "x"}), 404)

	fn := map[string]any{"name": "f", "app_id": a.ID, "image": "img", "format": "http", "secrets": []string{"missing"}}
	wantStatus(t, e.do("POST", "/v2/fns", fn), 400, `no secret "missing"`)
	fn["secrets"] = []string{".."}
	wantStatus(t, e.do("POST", "/v2/fns", fn), 400, "not a file name")
	fn["secrets"] = []string{"db", "db"}
	wantStatus(t, e.do("POST", "/v2/fns", fn), 400, "named twice")
	fn["secrets"] = []string{"db"}
	f := ok[fnJSON](e, "POST", "/v2/fns", fn)
	wantStatus(t, e.do("DELETE", base+"db", nil), 409, `used by fn ["f"]`)
	ok[fnJSON](e, "PUT", "/v2/fns/"+f.ID, map[string]any{"secrets": []string{}})
	wantStatus(t, e.do("DELETE", base+"db", nil), 200)
	wantStatus(t, e.do("DELETE", base+"db", nil), 404)
}

// TestLogsRoute: bad parameters are refused before anything streams, and
// an unknown app is a 404.
func TestLogsRoute(t *testing.T) {
	e := newEnv(t, Config{})
	a := e.app("a")
	wantStatus(t, e.do("GET", "/v2/apps/"+a.ID+"/logs?since=yesterday", nil), 400, "since")
	wantStatus(t, e.do("GET", "/v2/apps/"+a.ID+"/logs?follow=maybe", nil), 400, "follow")
	wantStatus(t, e.do("GET", "/v2/apps/nope/logs", nil), 404)
	rec := e.do("GET", "/v2/apps/"+a.ID+"/logs?since=10m", nil)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
}
