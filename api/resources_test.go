package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/seal"
	"github.com/kiln-run/kiln/store"
)

type testEnv struct {
	t   *testing.T
	st  *store.Store
	srv *Server
}

func newEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	e, _ := newSecEnv(t, cfg)
	return e
}

// newCalls is a calls.Service on st and rt, opened, and closed before st.
func newCalls(t testing.TB, st *store.Store, rt calls.Runtime) *calls.Service {
	t.Helper()
	box, err := seal.NewBox(make([]byte, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	svc := calls.New(calls.Config{Store: st, Runtime: rt, Logger: quietLog(), Secrets: box})
	if err := svc.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

// do sends a request through the server. body is sent as is when it is a
// string and as JSON otherwise; headers are name, value pairs.
func (e *testEnv) do(method, path string, body any, headers ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	var raw string
	switch b := body.(type) {
	case nil:
	case string:
		raw = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		raw = string(data)
	}
	req := httptest.NewRequest(method, path, strings.NewReader(raw))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	return rec
}

// ok sends a request that must answer 200 and decodes the answer.
func ok[T any](e *testEnv, method, path string, body any) T {
	e.t.Helper()
	rec := e.do(method, path, body)
	if rec.Code != http.StatusOK {
		e.t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
	}
	var out T
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		e.t.Fatalf("%s %s: decode %q: %v", method, path, rec.Body, err)
	}
	return out
}

// wantStatus checks a response's status and that its Fn-style error
// message mentions every one of contains.
func wantStatus(t *testing.T, rec *httptest.ResponseRecorder, status int, contains ...string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if status < 400 {
		return
	}
	var e struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", rec.Body, err)
	}
	if e.Code != status {
		t.Fatalf("error code = %d, want %d", e.Code, status)
	}
	for _, c := range contains {
		if !strings.Contains(e.Message, c) {
			t.Fatalf("message %q does not mention %q", e.Message, c)
		}
	}
}

type appJSON = store.App
type fnJSON = store.Fn
type triggerJSON = store.Trigger

type list[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

func (e *testEnv) app(name string) appJSON {
	e.t.Helper()
	return ok[appJSON](e, "POST", "/v2/apps", map[string]any{"name": name})
}

func (e *testEnv) fn(appID, name string) fnJSON {
	e.t.Helper()
	return ok[fnJSON](e, "POST", "/v2/fns", map[string]any{"app_id": appID, "name": name, "image": "hello:1"})
}

func (e *testEnv) trigger(fn fnJSON, name, source string) triggerJSON {
	e.t.Helper()
	return ok[triggerJSON](e, "POST", "/v2/triggers", map[string]any{"app_id": fn.AppID, "fn_id": fn.ID, "name": name, "source": source})
}

func TestAppRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	a := ok[appJSON](e, "POST", "/v2/apps", map[string]any{"name": "a", "config": map[string]string{"K": "v", "EMPTY": ""}})
	if a.ID == "" || a.Name != "a" || a.CreatedAt.IsZero() || a.Config["K"] != "v" {
		t.Fatalf("created app = %+v", a)
	}
	if _, ok := a.Config["EMPTY"]; ok {
		t.Fatal("an empty config value was stored")
	}
	if got := ok[appJSON](e, "GET", "/v2/apps/"+a.ID, nil); got.ID != a.ID || got.Config["K"] != "v" {
		t.Fatalf("GET app = %+v", got)
	}
	b := e.app("b")
	l := ok[list[appJSON]](e, "GET", "/v2/apps", nil)
	if len(l.Items) != 2 || l.NextCursor == nil || *l.NextCursor != "" {
		t.Fatalf("list = %+v", l)
	}
	l = ok[list[appJSON]](e, "GET", "/v2/apps?name=b", nil)
	if len(l.Items) != 1 || l.Items[0].ID != b.ID {
		t.Fatalf("list by name = %+v", l)
	}
	l = ok[list[appJSON]](e, "GET", "/v2/apps?name=nope", nil)
	if l.Items == nil || len(l.Items) != 0 {
		t.Fatalf("list by unknown name = %+v, want empty items", l)
	}
	up := ok[appJSON](e, "PUT", "/v2/apps/"+b.ID, map[string]any{"name": "b2"})
	if up.Name != "b2" || up.ID != b.ID || !up.UpdatedAt.After(b.UpdatedAt) {
		t.Fatalf("PUT app = %+v", up)
	}
	wantStatus(t, e.do("PUT", "/v2/apps/nope", `{}`), 404, `app "nope" not found`)
	wantStatus(t, e.do("GET", "/v2/apps/nope", nil), 404, `app "nope" not found`)

	del := ok[map[string]string](e, "DELETE", "/v2/apps/"+a.ID, nil)
	if !strings.Contains(del["message"], "deleted") {
		t.Fatalf("DELETE answer = %v", del)
	}
	wantStatus(t, e.do("GET", "/v2/apps/"+a.ID, nil), 404, a.ID)
	wantStatus(t, e.do("DELETE", "/v2/apps/"+a.ID, nil), 404, a.ID)
	wantStatus(t, e.do("POST", "/v2/apps", map[string]any{"name": "x", "id": "mine"}), 400, "app id")
}

func TestFnRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	a1, a2 := e.app("a1"), e.app("a2")
	f := e.fn(a1.ID, "f")
	want := store.Fn{Format: "default", Memory: 128, Timeout: 30, IdleTimeout: 30, CPUs: 0}
	if f.Format != want.Format || f.Memory != want.Memory || f.Timeout != want.Timeout || f.IdleTimeout != want.IdleTimeout || f.CPUs != 0 {
		t.Fatalf("defaults: got %+v", f)
	}
	full := ok[fnJSON](e, "POST", "/v2/fns", map[string]any{
		"app_id": a2.ID, "name": "f", "image": "registry.local:5000/team/fn@sha256:" + strings.Repeat("a", 64),
		"format": "json-http", "memory": 256, "cpus": "250m", "timeout": 60, "idle_timeout": 120,
		"config": map[string]string{"A": "1"}, "annotations": map[string]any{"x/y": map[string]any{"z": 1}},
	})
	if full.Format != "json-http" || full.Memory != 256 || full.CPUs != 250 || full.Timeout != 60 || full.IdleTimeout != 120 || full.Config["A"] != "1" {
		t.Fatalf("full fn = %+v", full)
	}
	if got := ok[fnJSON](e, "GET", "/v2/fns/"+f.ID, nil); got.ID != f.ID || got.AppID != a1.ID {
		t.Fatalf("GET fn = %+v", got)
	}
	wantStatus(t, e.do("GET", "/v2/fns/nope", nil), 404, `fn "nope" not found`)
	wantStatus(t, e.do("POST", "/v2/fns", map[string]any{"app_id": "nope", "name": "f", "image": "x"}), 404, `app "nope"`)

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{f.ID, full.ID}},
		{"?app_id=" + a1.ID, []string{f.ID}},
		{"?name=f", []string{f.ID, full.ID}},
		{"?app_id=" + a2.ID + "&name=f", []string{full.ID}},
		{"?app_id=" + a2.ID + "&name=g", nil},
	} {
		l := ok[list[fnJSON]](e, "GET", "/v2/fns"+tt.query, nil)
		var got []string
		for _, f := range l.Items {
			got = append(got, f.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("GET /v2/fns%s = %v, want %v", tt.query, got, tt.want)
		}
	}

	up := ok[fnJSON](e, "PUT", "/v2/fns/"+f.ID, map[string]any{"image": "hello:2", "memory": 512})
	if up.Image != "hello:2" || up.Memory != 512 || up.Name != "f" {
		t.Fatalf("PUT fn = %+v", up)
	}
	ok[map[string]string](e, "DELETE", "/v2/fns/"+f.ID, nil)
	wantStatus(t, e.do("GET", "/v2/fns/"+f.ID, nil), 404, f.ID)
	wantStatus(t, e.do("DELETE", "/v2/fns/"+f.ID, nil), 404, f.ID)
	wantStatus(t, e.do("PUT", "/v2/fns/"+f.ID, `{}`), 404, f.ID)
}

func TestTriggerRoutes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{})
	a := e.app("a")
	f, g := e.fn(a.ID, "f"), e.fn(a.ID, "g")
	tr := e.trigger(f, "t", "/hello")
	if tr.Type != "http" || tr.AppID != a.ID || tr.FnID != f.ID || tr.Source != "/hello" {
		t.Fatalf("created trigger = %+v", tr)
	}
	// app_id can be left out: the fn names it.
	derived := ok[triggerJSON](e, "POST", "/v2/triggers", map[string]any{"fn_id": g.ID, "name": "d", "source": "/d"})
	if derived.AppID != a.ID {
		t.Fatalf("derived app_id = %q", derived.AppID)
	}
	cron := ok[triggerJSON](e, "POST", "/v2/triggers", map[string]any{"fn_id": g.ID, "name": "c", "type": "cron", "source": "*/5 * * * *"})
	if cron.Type != "cron" {
		t.Fatalf("cron trigger = %+v", cron)
	}
	wantStatus(t, e.do("POST", "/v2/triggers", map[string]any{"fn_id": "nope", "name": "x", "source": "/x"}), 404, `fn "nope"`)
	other := e.fn(e.app("other").ID, "o")
	wantStatus(t, e.do("POST", "/v2/triggers", map[string]any{"app_id": a.ID, "fn_id": other.ID, "name": "x", "source": "/x"}), 400, "fn_id")

	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{"t", "d", "c"}},
		{"?app_id=" + a.ID, []string{"t", "d", "c"}},
		{"?fn_id=" + g.ID, []string{"d", "c"}},
		{"?name=t", []string{"t"}},
		{"?app_id=" + a.ID + "&name=c", []string{"c"}},
		{"?fn_id=" + f.ID + "&name=c", nil},
	} {
		l := ok[list[triggerJSON]](e, "GET", "/v2/triggers"+tt.query, nil)
		var got []string
		for _, x := range l.Items {
			got = append(got, x.Name)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("GET /v2/triggers%s = %v, want %v", tt.query, got, tt.want)
		}
	}

	if got := ok[triggerJSON](e, "GET", "/v2/triggers/"+tr.ID, nil); got.ID != tr.ID {
		t.Fatalf("GET trigger = %+v", got)
	}
	up := ok[triggerJSON](e, "PUT", "/v2/triggers/"+tr.ID, map[string]any{"source": "/moved", "annotations": map[string]any{"k": "v"}})
	if up.Source != "/moved" || up.Name != "t" || up.Annotations["k"] != "v" {
		t.Fatalf("PUT trigger = %+v", up)
	}
	if got, err := e.st.GetTriggerBySource(ctx, a.ID, "/moved"); err != nil || got.ID != tr.ID {
		t.Fatalf("source index after PUT: %v %v", got, err)
	}
	wantStatus(t, e.do("PUT", "/v2/triggers/"+tr.ID, map[string]any{"fn_id": g.ID}), 400, "trigger fn_id")
	ok[triggerJSON](e, "PUT", "/v2/triggers/"+tr.ID, map[string]any{"fn_id": f.ID, "app_id": a.ID})
	ok[map[string]string](e, "DELETE", "/v2/triggers/"+tr.ID, nil)
	wantStatus(t, e.do("GET", "/v2/triggers/"+tr.ID, nil), 404, `trigger "`+tr.ID+`" not found`)
	wantStatus(t, e.do("DELETE", "/v2/triggers/"+tr.ID, nil), 404, tr.ID)
	wantStatus(t, e.do("PUT", "/v2/triggers/"+tr.ID, `{}`), 404, tr.ID)
}

func TestPutMerge(t *testing.T) {
	e := newEnv(t, Config{})
	a := ok[appJSON](e, "POST", "/v2/apps", map[string]any{
		"name":        "a",
		"config":      map[string]string{"KEEP": "1", "CHANGE": "old", "DROP": "x"},
		"annotations": map[string]any{"keep": 1, "drop": "x", "nulled": true},
	})
	got := ok[appJSON](e, "PUT", "/v2/apps/"+a.ID, map[string]any{
		"config":      map[string]string{"CHANGE": "new", "DROP": "", "ADD": "2"},
		"annotations": map[string]any{"drop": "", "nulled": nil, "add": []int{1}},
	})
	wantCfg := map[string]string{"KEEP": "1", "CHANGE": "new", "ADD": "2"}
	if fmt.Sprint(got.Config) != fmt.Sprint(wantCfg) {
		t.Errorf("config = %v, want %v", got.Config, wantCfg)
	}
	if len(got.Annotations) != 2 || got.Annotations["keep"] != float64(1) || got.Annotations["add"] == nil {
		t.Errorf("annotations = %v", got.Annotations)
	}
	if got.Name != "a" {
		t.Errorf("name changed by a PUT without name: %q", got.Name)
	}
	// Removing every key leaves no config at all.
	got = ok[appJSON](e, "PUT", "/v2/apps/"+a.ID, map[string]any{"config": map[string]string{"KEEP": "", "CHANGE": "", "ADD": ""}})
	if got.Config != nil {
		t.Errorf("config after removing all = %v", got.Config)
	}

	f := ok[fnJSON](e, "POST", "/v2/fns", map[string]any{"app_id": a.ID, "name": "f", "image": "img", "cpus": 500, "config": map[string]string{"A": "1"}})
	fnTests := []struct {
		name  string
		body  string
		check func(f fnJSON) bool
	}{
		{"zero memory leaves it", `{"memory": 0}`, func(f fnJSON) bool { return f.Memory == 128 }},
		{"memory replaces", `{"memory": 64}`, func(f fnJSON) bool { return f.Memory == 64 }},
		{"cpus 0 clears the limit", `{"cpus": 0}`, func(f fnJSON) bool { return f.CPUs == 0 }},
		{"cpus as whole CPUs", `{"cpus": "1.5"}`, func(f fnJSON) bool { return f.CPUs == 1500 }},
		{"absent cpus leaves it", `{"timeout": 10}`, func(f fnJSON) bool { return f.CPUs == 1500 && f.Timeout == 10 }},
		{"format and image", `{"format": "http", "image": "other:2"}`, func(f fnJSON) bool { return f.Format == "http" && f.Image == "other:2" }},
		{"config merges", `{"config": {"B": "2"}}`, func(f fnJSON) bool { return len(f.Config) == 2 && f.Config["B"] == "2" }},
		{"config null removes", `{"config": {"A": null}}`, func(f fnJSON) bool { return len(f.Config) == 1 && f.Config["B"] == "2" }},
		{"same immutable values", fmt.Sprintf(`{"id": %q, "app_id": %q, "created_at": %q}`, f.ID, f.AppID, f.CreatedAt.Format(time.RFC3339Nano)), func(fnJSON) bool { return true }},
		{"rename", `{"name": "f2"}`, func(f fnJSON) bool { return f.Name == "f2" }},
	}
	for _, tt := range fnTests {
		t.Run(tt.name, func(t *testing.T) {
			got := ok[fnJSON](e, "PUT", "/v2/fns/"+f.ID, tt.body)
			if !tt.check(got) {
				t.Fatalf("fn after %s = %+v", tt.body, got)
			}
		})
	}

	tr := e.trigger(f, "t", "/t")
	immutable := []struct {
		path, body, field string
	}{
		{"/v2/apps/" + a.ID, `{"id": "other"}`, "app id"},
		{"/v2/apps/" + a.ID, `{"created_at": "2000-01-01T00:00:00Z"}`, "app created_at"},
		{"/v2/fns/" + f.ID, `{"id": "other"}`, "fn id"},
		{"/v2/fns/" + f.ID, `{"app_id": "other"}`, "fn app_id"},
		{"/v2/fns/" + f.ID, `{"created_at": "2000-01-01T00:00:00Z"}`, "fn created_at"},
		{"/v2/triggers/" + tr.ID, `{"id": "other"}`, "trigger id"},
		{"/v2/triggers/" + tr.ID, `{"app_id": "other"}`, "trigger app_id"},
		{"/v2/triggers/" + tr.ID, `{"created_at": "2000-01-01T00:00:00Z"}`, "trigger created_at"},
	}
	for _, tt := range immutable {
		t.Run("immutable "+tt.field, func(t *testing.T) {
			wantStatus(t, e.do("PUT", tt.path, tt.body), 400, tt.field)
		})
	}
	// A refused update changes nothing.
	if got := ok[fnJSON](e, "GET", "/v2/fns/"+f.ID, nil); got.Name != "f2" || got.AppID != a.ID {
		t.Fatalf("fn after refused updates = %+v", got)
	}
	// Validation runs on the merged fn.
	wantStatus(t, e.do("PUT", "/v2/fns/"+f.ID, `{"memory": 9000}`), 400, "fn memory")
	if got := ok[fnJSON](e, "GET", "/v2/fns/"+f.ID, nil); got.Memory != 64 {
		t.Fatalf("invalid PUT was saved: memory %d", got.Memory)
	}
}

func TestCascadeDeleteRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	a := e.app("a")
	f := e.fn(a.ID, "f")
	tr := e.trigger(f, "t", "/t")
	callID := store.NewID()
	if err := e.st.CreateCall(context.Background(), &store.Call{ID: callID, FnID: f.ID}); err != nil {
		t.Fatal(err)
	}
	ok[map[string]string](e, "DELETE", "/v2/apps/"+a.ID, nil)
	wantStatus(t, e.do("GET", "/v2/fns/"+f.ID, nil), 404)
	wantStatus(t, e.do("GET", "/v2/triggers/"+tr.ID, nil), 404)
	wantStatus(t, e.do("GET", "/v2/fns/"+f.ID+"/calls/"+callID, nil), 404)
	if l := ok[list[fnJSON]](e, "GET", "/v2/fns?app_id="+a.ID, nil); len(l.Items) != 0 {
		t.Fatalf("fns of a deleted app: %v", l.Items)
	}

	// Deleting a fn takes its triggers but leaves the app.
	a = e.app("a")
	f = e.fn(a.ID, "f")
	tr = e.trigger(f, "t", "/t")
	ok[map[string]string](e, "DELETE", "/v2/fns/"+f.ID, nil)
	wantStatus(t, e.do("GET", "/v2/triggers/"+tr.ID, nil), 404)
	ok[appJSON](e, "GET", "/v2/apps/"+a.ID, nil)
}

func TestPaginationRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, e.app(fmt.Sprintf("app%d", i)).ID)
	}
	a := e.app("withfns")
	want = append(want, a.ID)
	var fnIDs []string
	for i := 0; i < 3; i++ {
		fnIDs = append(fnIDs, e.fn(a.ID, fmt.Sprintf("f%d", i)).ID)
	}
	e.fn(want[0], "elsewhere")

	walk := func(base string) ([]string, []int) {
		var ids []string
		var sizes []int
		cursor := ""
		for i := 0; ; i++ {
			path := base
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			l := ok[list[store.App]](e, "GET", path, nil) // only ids are read
			sizes = append(sizes, len(l.Items))
			for _, x := range l.Items {
				ids = append(ids, x.ID)
			}
			if *l.NextCursor == "" || i > 10 {
				return ids, sizes
			}
			cursor = *l.NextCursor
		}
	}
	for _, tt := range []struct {
		path  string
		want  []string
		sizes []int
	}{
		{"/v2/apps?per_page=4", want, []int{4, 2}},
		{"/v2/apps?per_page=2", want, []int{2, 2, 2}},
		{"/v2/apps?per_page=0", want, []int{6}},
		{"/v2/fns?app_id=" + a.ID + "&per_page=2", fnIDs, []int{2, 1}},
		{"/v2/triggers?per_page=2", nil, []int{0}},
	} {
		ids, sizes := walk(tt.path)
		if fmt.Sprint(ids) != fmt.Sprint(tt.want) || fmt.Sprint(sizes) != fmt.Sprint(tt.sizes) {
			t.Errorf("%s: ids %v sizes %v, want %v %v", tt.path, ids, sizes, tt.want, tt.sizes)
		}
	}
	for _, q := range []string{"per_page=x", "per_page=-1", "cursor=%21%21"} {
		wantStatus(t, e.do("GET", "/v2/apps?"+q, nil), 400)
	}
}

func TestConflicts(t *testing.T) {
	e := newEnv(t, Config{})
	a, b := e.app("a"), e.app("b")
	f := e.fn(a.ID, "f")
	g := e.fn(a.ID, "g")
	e.fn(b.ID, "f") // same name, other app: fine
	e.trigger(f, "t", "/t")
	tr2 := e.trigger(g, "t2", "/t2")
	tests := []struct {
		name, method, path string
		body               any
		mentions           string
	}{
		{"app name", "POST", "/v2/apps", map[string]any{"name": "a"}, `"a"`},
		{"app rename", "PUT", "/v2/apps/" + b.ID, map[string]any{"name": "a"}, `"a"`},
		{"fn name in app", "POST", "/v2/fns", map[string]any{"app_id": a.ID, "name": "f", "image": "x"}, `"f"`},
		{"fn rename", "PUT", "/v2/fns/" + g.ID, map[string]any{"name": "f"}, `"f"`},
		{"trigger name", "POST", "/v2/triggers", map[string]any{"fn_id": g.ID, "name": "t", "source": "/other"}, `"t"`},
		{"trigger source", "POST", "/v2/triggers", map[string]any{"fn_id": g.ID, "name": "t3", "source": "/t"}, `"/t"`},
		{"trigger source on update", "PUT", "/v2/triggers/" + tr2.ID, map[string]any{"source": "/t"}, `"/t"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do(tt.method, tt.path, tt.body), 409, tt.mentions)
		})
	}
}

func TestBodyErrors(t *testing.T) {
	e := newEnv(t, Config{})
	a := e.app("a")
	big := `{"name": "x", "annotations": {"pad": "` + strings.Repeat("x", maxResourceBody) + `"}}`
	tests := []struct {
		name, method, path, body string
		status                   int
		mentions                 string
	}{
		{"too large create", "POST", "/v2/apps", big, 413, "bytes"},
		{"too large update", "PUT", "/v2/apps/" + a.ID, big, 413, "bytes"},
		{"truncated", "POST", "/v2/apps", `{"name": "x"`, 400, "malformed JSON"},
		{"not JSON", "POST", "/v2/fns", `name=x`, 400, "malformed JSON"},
		{"trailing garbage", "POST", "/v2/apps", `{"name": "x"} {}`, 400, "malformed JSON"},
		{"empty body", "POST", "/v2/triggers", ``, 400, "empty body"},
		{"array", "POST", "/v2/apps", `[]`, 400, "JSON object"},
		{"wrong type", "POST", "/v2/apps", `{"name": 5}`, 400, "name"},
		{"wrong config value type", "PUT", "/v2/apps/" + a.ID, `{"config": {"A": 1}}`, 400, "config"},
		{"cpus garbage", "POST", "/v2/fns", `{"app_id": "` + a.ID + `", "name": "f", "image": "x", "cpus": "lots"}`, 400, "fn cpus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do(tt.method, tt.path, tt.body), tt.status, tt.mentions)
		})
	}
	// Fields kiln does not know are ignored, as Fn ignores them.
	got := ok[appJSON](e, "POST", "/v2/apps", `{"name": "u", "shape": "new", "syslog_url": "x"}`)
	if got.Name != "u" {
		t.Fatalf("app = %+v", got)
	}
}

func TestAdminToken(t *testing.T) {
	e := newEnv(t, Config{AdminToken: "t"})
	tests := []struct {
		name   string
		header []string
		status int
	}{
		{"no token", nil, 401},
		{"wrong token", []string{"Authorization", "Bearer nope"}, 401},
		{"not bearer", []string{"Authorization", "t"}, 401},
		{"right token", []string{"Authorization", "Bearer t"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do("GET", "/v2/apps", nil, tt.header...)
			wantStatus(t, rec, tt.status)
			if tt.status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	rec := e.do("POST", "/v2/apps", `{"name": "a"}`, "Authorization", "Bearer t")
	wantStatus(t, rec, 200)
}
