package main

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestAppsCreate(t *testing.T) {
	api := newFakeAPI(t)
	api.handle("POST /v2/apps", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type = %q", r.Header.Get("Content-Type"))
		}
		writeJSONBody(w, 200, map[string]any{"id": "app1", "name": "myapp", "config": map[string]string{"DB": "x=y", "LEVEL": "debug"}, "extra": true})
	})

	res := api.run(nil, "apps", "create", "myapp", "--config", "DB=x=y", "--config", "LEVEL=debug")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	req := api.only("POST", "/v2/apps")
	want := map[string]any{"name": "myapp", "config": map[string]any{"DB": "x=y", "LEVEL": "debug"}}
	if got := decodeBody(t, req.Body); !reflect.DeepEqual(got, want) {
		t.Errorf("POST body = %v, want %v", got, want)
	}
	if req.Header.Get("Authorization") != "Bearer s3cret" {
		t.Errorf("Authorization = %q", req.Header.Get("Authorization"))
	}
	wantContains(t, "stdout", res.stdout, "myapp", "app1", "DB=x=y, LEVEL=debug")

	// -o json passes the server's object through, unknown fields included.
	res = api.run(nil, "-o", "json", "apps", "create", "myapp")
	var obj map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &obj); err != nil || obj["extra"] != true {
		t.Errorf("json output %q (%v)", res.stdout, err)
	}
}

func TestAppsCreateBadConfig(t *testing.T) {
	api := newFakeAPI(t)
	res := api.run(nil, "apps", "create", "a", "--config", "novalue")
	if res.code != 1 || !strings.HasPrefix(res.stderr, "Error: bad config") {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestServerErrorMessagePrinted(t *testing.T) {
	api := newFakeAPI(t)
	api.json("POST /v2/apps", http.StatusConflict, map[string]any{"message": `app "myapp" already exists`, "code": 409})
	res := api.run(nil, "apps", "create", "myapp")
	if res.code != 1 {
		t.Errorf("exit %d, want 1", res.code)
	}
	if res.stderr != "Error: app \"myapp\" already exists\n" {
		t.Errorf("stderr = %q", res.stderr)
	}
	if res.stdout != "" {
		t.Errorf("stdout = %q, want nothing", res.stdout)
	}
}

func TestAppsListFollowsPages(t *testing.T) {
	api := newFakeAPI(t)
	api.handle("GET /v2/apps", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cursor") == "" {
			writeJSONBody(w, 200, map[string]any{"items": []any{map[string]any{"id": "a1", "name": "one"}}, "next_cursor": "p2"})
			return
		}
		writeJSONBody(w, 200, map[string]any{"items": []any{map[string]any{"id": "a2", "name": "two"}}, "next_cursor": ""})
	})
	res := api.run(nil, "apps", "list")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "one") || !strings.HasPrefix(lines[2], "two") {
		t.Errorf("table = %q", res.stdout)
	}

	res = api.run(nil, "apps", "list", "-o", "json")
	var page struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &page); err != nil || len(page.Items) != 2 {
		t.Errorf("json = %q (%v)", res.stdout, err)
	}
}

func TestAppsGetNotFound(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	res := api.run(nil, "apps", "get", "nope")
	if res.code != 1 || res.stderr != "Error: app \"nope\" not found\n" {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestAppsUpdateAndDelete(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.json("PUT /v2/apps/app1", 200, map[string]any{"id": "app1", "name": "myapp", "config": map[string]string{"A": "2"}})
	api.handle("DELETE /v2/apps/app1", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })

	res := api.run(nil, "apps", "update", "myapp", "--config", "A=2", "--config", "OLD=")
	if res.code != 0 {
		t.Fatalf("update: exit %d, stderr %q", res.code, res.stderr)
	}
	want := map[string]any{"config": map[string]any{"A": "2", "OLD": ""}}
	if got := decodeBody(t, api.only("PUT", "/v2/apps/app1").Body); !reflect.DeepEqual(got, want) {
		t.Errorf("PUT body = %v, want %v", got, want)
	}

	res = api.run(nil, "apps", "delete", "myapp")
	if res.code != 0 || res.stdout != "app myapp deleted\n" {
		t.Errorf("delete: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	api.only("DELETE", "/v2/apps/app1")
}

func TestFnsCreateSendsOnlyGivenFlags(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /v2/fns", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, mustRead(r))
		b["id"] = "fn9"
		writeJSONBody(w, 200, b)
	})
	res := api.run(nil, "fns", "create", "myapp", "echo", "echo:1", "--format", "http", "--memory", "256", "--cpus", "0.5", "--timeout", "10", "--config", "K=V")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	want := map[string]any{
		"app_id": "app1", "name": "echo", "image": "echo:1", "format": "http",
		"memory": 256.0, "cpus": 500.0, "timeout": 10.0, "config": map[string]any{"K": "V"},
	}
	if got := decodeBody(t, api.only("POST", "/v2/fns").Body); !reflect.DeepEqual(got, want) {
		t.Errorf("POST body = %v\nwant %v", got, want)
	}
	wantContains(t, "stdout", res.stdout, "fn9", "echo:1", "256 MB", "500m")
}

func TestFnsUpdate(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.json("PUT /v2/fns/fn1", 200, map[string]any{"id": "fn1", "name": "hello", "app_id": "app1", "image": "hello:v2"})
	res := api.run(nil, "fns", "update", "myapp", "hello", "--image", "hello:v2", "--idle-timeout", "5")
	if res.code != 0 {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	want := map[string]any{"image": "hello:v2", "idle_timeout": 5.0}
	if got := decodeBody(t, api.only("PUT", "/v2/fns/fn1").Body); !reflect.DeepEqual(got, want) {
		t.Errorf("PUT body = %v, want %v", got, want)
	}

	res = api.run(nil, "fns", "update", "myapp", "hello")
	if res.code != 1 || !strings.Contains(res.stderr, "nothing to update") {
		t.Errorf("empty update: exit %d stderr %q", res.code, res.stderr)
	}
}

func TestFnsGetUnknownFn(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	res := api.run(nil, "fns", "get", "myapp", "nope")
	if res.code != 1 || res.stderr != "Error: fn \"nope\" not found in app \"myapp\"\n" {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestTriggers(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /v2/triggers", func(w http.ResponseWriter, r *http.Request) {
		b := decodeBody(t, mustRead(r))
		b["id"] = "tr1"
		writeJSONBody(w, 200, b)
	})
	api.json("GET /v2/triggers", 200, map[string]any{"items": []any{
		map[string]any{"id": "tr0", "name": "other", "app_id": "app1", "fn_id": "fn1", "type": "http", "source": "/x"},
		map[string]any{"id": "tr1", "name": "web", "app_id": "app1", "fn_id": "fn1", "type": "http", "source": "/hello"},
	}})
	api.handle("DELETE /v2/triggers/tr1", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })

	res := api.run(nil, "triggers", "create", "myapp", "hello", "web", "--source", "/hello")
	if res.code != 0 {
		t.Fatalf("create: exit %d, stderr %q", res.code, res.stderr)
	}
	want := map[string]any{"name": "web", "app_id": "app1", "fn_id": "fn1", "type": "http", "source": "/hello"}
	if got := decodeBody(t, api.only("POST", "/v2/triggers").Body); !reflect.DeepEqual(got, want) {
		t.Errorf("POST body = %v, want %v", got, want)
	}
	wantContains(t, "stdout", res.stdout, api.srv.URL+"/t/myapp/hello")

	res = api.run(nil, "triggers", "list", "myapp")
	if res.code != 0 {
		t.Fatalf("list: exit %d, stderr %q", res.code, res.stderr)
	}
	wantContains(t, "list", res.stdout, "web", "hello", "/hello")

	res = api.run(nil, "triggers", "delete", "myapp", "web")
	if res.code != 0 || res.stdout != "trigger web deleted\n" {
		t.Errorf("delete: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	if len(api.requests("DELETE", "/v2/triggers/tr0")) != 0 {
		t.Error("deleted the wrong trigger")
	}

	res = api.run(nil, "triggers", "create", "myapp", "hello", "web", "--source", "nopath")
	if res.code != 1 || !strings.Contains(res.stderr, "starting with /") {
		t.Errorf("bad source: exit %d stderr %q", res.code, res.stderr)
	}
}

func TestCallsGetAndLog(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.json("GET /v2/fns/fn1/calls/c1", 200, map[string]any{"id": "c1", "status": "error", "error": "crashed"})
	api.handle("GET /v2/fns/fn1/calls/c1/log", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("line one\nline two\n"))
	})
	api.json("GET /v2/fns/fn1/calls", 200, map[string]any{"items": []any{map[string]any{"id": "c1", "status": "error"}}})

	res := api.run(nil, "calls", "get", "myapp", "hello", "c1")
	if res.code != 0 {
		t.Fatalf("get: exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "get", res.stdout, "c1", "error", "crashed")

	res = api.run(nil, "calls", "log", "myapp", "hello", "c1")
	if res.code != 0 || res.stdout != "line one\nline two\n" {
		t.Errorf("log: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}

	res = api.run(nil, "calls", "list", "myapp", "hello")
	if res.code != 0 {
		t.Fatalf("list: exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "list", res.stdout, "ID", "c1", "error")
}

func TestUnknownOutputFormat(t *testing.T) {
	api := newFakeAPI(t)
	res := api.run(nil, "-o", "xml", "apps", "list")
	if res.code != 1 || !strings.Contains(res.stderr, "unknown output format") {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestAPIURLFlagOverridesEnv(t *testing.T) {
	api := newFakeAPI(t)
	api.json("GET /version", 200, map[string]string{"version": "1.2.3"})
	res := runWithEnv(t, map[string]string{"KILN_API_URL": "http://127.0.0.1:1"}, nil, "version", "--api-url", api.srv.URL)
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "version", res.stdout, "kiln   dev", "kilnd  1.2.3")
}

func TestVersionWithoutServer(t *testing.T) {
	res := runWithEnv(t, map[string]string{"KILN_API_URL": "http://127.0.0.1:1"}, nil, "version")
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "version", res.stdout, "kiln   dev", "kilnd  unknown")
}

func mustRead(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}
