package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// secHot is a hot instance that answers every call with 200 "hot".
type secHot struct{}

func (secHot) Done() <-chan struct{}           { return nil }
func (secHot) Err() error                      { return nil }
func (secHot) Close(ctx context.Context) error { return nil }
func (secHot) Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	return &protocol.Response{Status: http.StatusOK, Body: []byte("hot")}, nil
}

// fuzzWorld is a store with a public fn, a private one, a hot one and
// their triggers, served by two servers: one without and one with an
// admin token. Fuzz workers are separate processes with their own ids,
// so inputs name resources by placeholder and expand() fills them in.
type fuzzWorld struct {
	open, guarded *Server
	store         *store.Store
	cold          *secRuntime
	vars          *strings.Replacer
	privFn        string
	// privTokens are the only tokens that may get the private fn called.
	privTokens []string
}

const fuzzAdmin = "adm1n-t0ken"

func newFuzzWorld(t testing.TB) *fuzzWorld {
	st, err := store.Open(filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	app, err := st.CreateApp(ctx, &store.App{Name: "fz"})
	if err != nil {
		t.Fatal(err)
	}
	mkFn := func(name, format string, ann map[string]any) *store.Fn {
		fn, err := st.CreateFn(ctx, &store.Fn{AppID: app.ID, Name: name, Image: "img:1", Format: format,
			Memory: 128, Timeout: 5, IdleTimeout: 5, Annotations: ann})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateTrigger(ctx, &store.Trigger{AppID: app.ID, FnID: fn.ID, Name: name, Type: store.TriggerHTTP, Source: "/" + name}); err != nil {
			t.Fatal(err)
		}
		return fn
	}
	pub := mkFn("pub", protocol.Default, nil)
	priv := mkFn("priv", protocol.Default, map[string]any{PrivateAnnotation: "true"})
	hot := mkFn("hot", protocol.JSONHTTP, nil)

	exp := time.Now().Add(24 * time.Hour).Unix()
	fnTok, _ := signToken(testKey, tokenClaims{AppID: app.ID, FnID: priv.ID, Expires: exp})
	appTok, _ := signToken(testKey, tokenClaims{AppID: app.ID, Expires: exp})
	otherTok, _ := signToken(testKey, tokenClaims{AppID: app.ID, FnID: pub.ID, Expires: exp})

	rt := &secRuntime{hot: func() (calls.Instance, error) { return secHot{}, nil }}
	cfg := Config{Store: st, Calls: newCalls(t, st, rt), TokenKey: testKey, Logger: quietLog(), MaxBody: 1 << 16}
	w := &fuzzWorld{store: st, cold: rt, open: New(cfg), privFn: priv.ID, privTokens: []string{fnTok, appTok}}
	cfg.AdminToken = fuzzAdmin
	w.guarded = New(cfg)
	w.vars = strings.NewReplacer(
		"{app}", app.ID, "{pub}", pub.ID, "{priv}", priv.ID, "{hot}", hot.ID,
		"{fntoken}", fnTok, "{apptoken}", appTok, "{othertoken}", otherTok,
	)
	return w
}

// request builds what net/http would hand a handler, without
// httptest.NewRequest's panics on input it cannot parse: the fuzzer may
// send anything, and the router must cope with whatever the server lets
// through (and more).
func (w *fuzzWorld) request(method, path string, header, body []byte) *http.Request {
	path, query, _ := strings.Cut(w.vars.Replace(path), "?")
	u := &url.URL{Path: path, RawQuery: query}
	h := http.Header{}
	for _, line := range strings.Split(w.vars.Replace(string(header)), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && k != "" {
			h.Add(k, strings.TrimSpace(v))
		}
	}
	return &http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Host:          "kiln.test",
		RemoteAddr:    "127.0.0.1:1234",
		RequestURI:    u.RequestURI(),
	}
}

func (w *fuzzWorld) serve(t *testing.T, s *Server, method, path string, header, body []byte) (*httptest.ResponseRecorder, *http.Request) {
	req := w.request(method, path, header, body)
	// A little room for the calls to run, but fuzzing must not stall on
	// a detached or queued call.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req = req.WithContext(ctx)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code < 200 || rec.Code > 599 {
		t.Fatalf("%s %q: status %d", method, path, rec.Code)
	}
	// Every error kiln writes has Fn's shape; the fakes never fail, so
	// no error body here comes from a function. ServeMux answers a
	// request for "*" itself, before any route.
	if rec.Code >= 400 && req.RequestURI != "*" {
		var e struct {
			Message string `json:"message"`
			Code    int    `json:"code"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != rec.Code || e.Message == "" {
			t.Fatalf("%s %q: %d with body %q", method, path, rec.Code, rec.Body)
		}
	}
	return rec, req
}

func FuzzRouter(f *testing.F) {
	seeds := []struct {
		method, path, header, body string
	}{
		{"GET", "/v2/apps", "", ""},
		{"GET", "/v2/apps?name=fz&per_page=1&cursor=x", "Authorization: Bearer " + fuzzAdmin, ""},
		{"POST", "/v2/apps", "Content-Type: application/json", `{"name":"n","annotations":{"kiln.io/private":true}}`},
		{"PUT", "/v2/apps/{app}", "Authorization: Bearer " + fuzzAdmin, `{"config":{"A":"b"}}`},
		{"POST", "/v2/fns", "", `{"app_id":"{app}","name":"f2","image":"i:1","format":"default"}`},
		{"GET", "/v2/fns/{pub}", "", ""},
		{"GET", "/v2/fns/{pub}/calls", "", ""},
		{"DELETE", "/v2/triggers/x", "", ""},
		{"POST", "/v2/tokens", "Authorization: Bearer " + fuzzAdmin, `{"app_id":"{app}","fn_id":"{priv}","ttl":60}`},
		{"POST", "/v2/tokens", "", `{"app_id":"{app}","ttl":1e99}`},
		{"POST", "/v2/images/pull", "", `{"ref":"x"}`},
		{"POST", "/invoke/{pub}", "", "hello"},
		{"POST", "/invoke/{hot}", "Content-Type: text/plain", "hello"},
		{"POST", "/invoke/{priv}", "Authorization: Bearer {fntoken}", "hello"},
		{"POST", "/invoke/{priv}", "Authorization: Bearer {othertoken}", ""},
		{"POST", "/invoke/{priv}", "Authorization: Bearer " + fuzzAdmin, ""},
		{"POST", "/invoke/{priv}", "Authorization: bearer  {apptoken}\nAuthorization: x", ""},
		{"POST", "/invoke/{pub}", "Fn-Invoke-Type: detached", "later"},
		{"GET", "/t/fz/priv", "Authorization: Bearer {apptoken}", ""},
		{"DELETE", "/t/fz/pub/deeper/path", "", ""},
		{"GET", "/t/fz", "", ""},
		{"GET", "//v2/../v2/apps/./", "", ""},
		{"GET", "/v2/%2e%2e/apps", "", ""},
		{"CONNECT", "/v2/apps", "", ""},
		{"GET", "/healthz", "", ""},
		{"GET", "", "", ""},
		{"", "/", "", ""},
		{"POST", "/invoke/\x00", "X: \x00", "\xff"},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, []byte(s.header), []byte(s.body))
	}
	w := newFuzzWorld(f)
	f.Fuzz(func(t *testing.T, method, path string, header, body []byte) {
		rec, _ := w.serve(t, w.open, method, path, header, body)
		w.checkPrivate(t, rec, method, path, header, w.privTokens)

		rec, req := w.serve(t, w.guarded, method, path, header, body)
		w.checkPrivate(t, rec, method, path, header, append([]string{"Bearer " + fuzzAdmin}, w.privTokens...))
		// The guard runs before routing: a /v2 handler reached without
		// the admin token is a way round it.
		if req.Header.Get("Authorization") != "Bearer "+fuzzAdmin && strings.Contains(req.Pattern, "/v2/") {
			t.Fatalf("%s %q reached %q without the admin token: %d", method, path, req.Pattern, rec.Code)
		}
	})
}

// checkPrivate fails if this request got the private fn called, now or
// queued for later, without one of the credentials that open it: no
// other token can be made without the key. It goes by the request's call
// id, so detached calls that run later cannot be blamed on another input.
func (w *fuzzWorld) checkPrivate(t *testing.T, rec *httptest.ResponseRecorder, method, path string, header []byte, creds []string) {
	t.Helper()
	callID := rec.Header().Get("Fn-Call-Id")
	if callID == "" {
		return
	}
	private := w.cold.ranFn(callID) == w.privFn
	if !private && rec.Code == http.StatusAccepted {
		_, err := w.store.GetCall(context.Background(), w.privFn, callID)
		private = err == nil
	}
	if !private {
		return
	}
	h := w.vars.Replace(string(header))
	for _, c := range creds {
		if strings.Contains(h, c) {
			return
		}
	}
	t.Fatalf("%s %q called the private fn (%d) with header %q", method, path, rec.Code, h)
}

func FuzzAuthorization(f *testing.F) {
	app := &store.App{ID: "app1", Name: "a"}
	fn := &store.Fn{ID: "fn1", AppID: "app1", Name: "f", Annotations: map[string]any{PrivateAnnotation: true}}
	exp := time.Now().Add(24 * time.Hour).Unix()
	good := map[string]bool{}
	for _, c := range []tokenClaims{{AppID: "app1", FnID: "fn1", Expires: exp}, {AppID: "app1", Expires: exp}} {
		tok, _ := signToken(testKey, c)
		good[tok] = true
		f.Add("Bearer " + tok)
		f.Add("bearer\t" + tok + " ")
	}
	for _, c := range []tokenClaims{{AppID: "app2", Expires: exp}, {AppID: "app1", FnID: "fn2", Expires: exp}, {AppID: "app1", Expires: 1}} {
		tok, _ := signToken(testKey, c)
		f.Add("Bearer " + tok)
	}
	f.Add("Bearer " + rawToken(nil, `{"alg":"none"}`, tokenClaims{AppID: "app1", Expires: exp}))
	f.Add("Bearer " + rawToken(testKey, `{"alg":"HS256","crit":[]}`, map[string]any{"app_id": "app1", "exp": 1e300, "nbf": -1e300}))
	f.Add("Bearer e30.e30.")
	f.Add("Basic Zm9vOmJhcg==")
	f.Add("")

	s := &Server{cfg: Config{TokenKey: testKey}}
	f.Fuzz(func(t *testing.T, authz string) {
		r := &http.Request{Header: http.Header{"Authorization": {authz}}}
		err := s.authorize(r, app, fn)
		if err == nil {
			_, tok, _ := strings.Cut(strings.TrimSpace(authz), " ")
			if !good[strings.TrimLeft(tok, " ")] {
				t.Fatalf("authorized %q", authz)
			}
			if r.Header.Get("Authorization") != "" {
				t.Fatal("token left in the request for the function")
			}
			return
		}
		if st := statusOf(err); st != http.StatusUnauthorized && st != http.StatusForbidden {
			t.Fatalf("%q: status %d (%v)", authz, st, err)
		}
	})
}
