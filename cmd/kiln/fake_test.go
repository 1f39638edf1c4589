package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeAPI mimics the slice of kilnd's API a test needs: handlers are
// registered per "METHOD /path" pattern, and every request is recorded.
type fakeAPI struct {
	t   *testing.T
	mux *http.ServeMux
	srv *httptest.Server

	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, mux: http.NewServeMux()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if _, pattern := f.mux.Handler(r); pattern == "" {
			t.Errorf("unexpected request %s %s", r.Method, r.URL)
			writeJSONBody(w, http.StatusNotFound, map[string]any{"message": "no route", "code": 404})
			return
		}
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) handle(pattern string, h http.HandlerFunc) { f.mux.HandleFunc(pattern, h) }

// json registers a handler answering status and v.
func (f *fakeAPI) json(pattern string, status int, v any) {
	f.handle(pattern, func(w http.ResponseWriter, r *http.Request) { writeJSONBody(w, status, v) })
}

// requests returns the recorded requests matching method and path.
func (f *fakeAPI) requests(method, path string) []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []recorded
	for _, r := range f.reqs {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// only returns the one request to method and path, failing otherwise.
func (f *fakeAPI) only(method, path string) recorded {
	f.t.Helper()
	rs := f.requests(method, path)
	if len(rs) != 1 {
		f.t.Fatalf("%d requests to %s %s, want 1", len(rs), method, path)
	}
	return rs[0]
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// withApp registers name lookups for an app named "myapp" (id app1) with a
// fn "hello" (id fn1).
func (f *fakeAPI) withApp() {
	f.handle("GET /v2/apps", func(w http.ResponseWriter, r *http.Request) {
		items := []any{}
		if n := r.URL.Query().Get("name"); n == "myapp" || n == "" {
			items = append(items, map[string]any{"id": "app1", "name": "myapp"})
		}
		writeJSONBody(w, 200, map[string]any{"items": items, "next_cursor": ""})
	})
	f.handle("GET /v2/fns", func(w http.ResponseWriter, r *http.Request) {
		items := []any{}
		q := r.URL.Query()
		if q.Get("app_id") == "app1" && (q.Get("name") == "hello" || q.Get("name") == "") {
			items = append(items, map[string]any{"id": "fn1", "name": "hello", "app_id": "app1", "image": "hello:dev", "memory": 128, "timeout": 30, "idle_timeout": 30})
		}
		writeJSONBody(w, 200, map[string]any{"items": items, "next_cursor": ""})
	})
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs kiln in-process against the fake with the given stdin.
func (f *fakeAPI) run(stdin io.Reader, args ...string) result {
	f.t.Helper()
	return runWithEnv(f.t, map[string]string{"KILN_API_URL": f.srv.URL, "KILN_ADMIN_TOKEN": "s3cret"}, stdin, args...)
}

func runWithEnv(t *testing.T, vars map[string]string, stdin io.Reader, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), env{
		args:   args,
		stdin:  stdin,
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return vars[k] },
	})
	return result{out.String(), errb.String(), code}
}

func decodeBody(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("request body %q: %v", b, err)
	}
	return m
}

func wantContains(t *testing.T, what, got string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(got, s) {
			t.Errorf("%s = %q, want it to contain %q", what, got, s)
		}
	}
}
