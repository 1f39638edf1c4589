package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// secRuntime answers every default-format call with 200 "ok" and keeps
// the last request each fn got, so tests see what reached the function.
// Per fn, because a detached call runs whenever the dispatcher gets to it:
// a single "last request" was now and then that call's, not the one the
// test had just made to another fn.
type secRuntime struct {
	mu   sync.Mutex
	last map[string]*protocol.Request // fn id -> its last request
	// ran maps the call ids it ran to their fn ids.
	ran map[string]string
	// hot, when set, serves hot formats.
	hot func() (calls.Instance, error)
}

func (f *secRuntime) StartHot(ctx context.Context, fn *executor.Function) (calls.Instance, error) {
	if f.hot == nil {
		return nil, errors.New("secRuntime: no hot containers")
	}
	return f.hot()
}

func (f *secRuntime) RunCold(ctx context.Context, fn *executor.Function, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	f.mu.Lock()
	if f.ran == nil {
		f.ran = map[string]string{}
		f.last = map[string]*protocol.Request{}
	}
	f.last[fn.FnID] = req
	f.ran[req.CallID] = fn.FnID
	f.mu.Unlock()
	return &protocol.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("ok")}, nil
}

func (f *secRuntime) ImageID(ctx context.Context, ref string) (string, error) {
	return "sha256:" + ref, nil
}

// ranFn is the fn that call id ran on, if it ran.
func (f *secRuntime) ranFn(callID string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ran[callID]
}

func (f *secRuntime) lastHeader(fnID string) http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.last[fnID]; r != nil {
		return r.Header
	}
	return nil
}

// newSecEnv is a server on a fresh store whose calls run on a fake
// runtime, returned so tests see what reached the function.
func newSecEnv(t *testing.T, cfg Config) (*testEnv, *secRuntime) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "kiln.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rt := &secRuntime{}
	cfg.Store, cfg.Calls = st, newCalls(t, st, rt)
	if cfg.Logger == nil {
		cfg.Logger = quietLog()
	}
	return &testEnv{t: t, st: st, srv: New(cfg)}, rt
}

func (e *testEnv) secApp(name string, ann map[string]any) appJSON {
	e.t.Helper()
	return ok[appJSON](e, "POST", "/v2/apps", map[string]any{"name": name, "annotations": ann})
}

func (e *testEnv) secFn(appID, name string, ann map[string]any) fnJSON {
	e.t.Helper()
	return ok[fnJSON](e, "POST", "/v2/fns", map[string]any{"app_id": appID, "name": name, "image": "hello:1", "format": "default", "annotations": ann})
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

var testKey = bytes.Repeat([]byte("k"), 32)

// rawToken builds a JWT with any header and claims, for tokens kiln would
// never issue.
func rawToken(key []byte, header string, claims any) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	signed := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString(payload)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return signed + "." + b64.EncodeToString(m.Sum(nil))
}

func mustSign(t *testing.T, c tokenClaims) string {
	t.Helper()
	tok, err := signToken(testKey, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestIsPrivate(t *testing.T) {
	tests := []struct {
		value any
		want  bool
	}{
		{true, true}, {"true", true}, {"TRUE", true},
		{false, false}, {"false", false}, {" False ", false}, {nil, false},
		// Anything unclear fails closed.
		{"yes", true}, {"", true}, {float64(1), true}, {map[string]any{}, true},
	}
	for _, tt := range tests {
		if got := isPrivate(map[string]any{PrivateAnnotation: tt.value}); got != tt.want {
			t.Errorf("isPrivate(%#v) = %v, want %v", tt.value, got, tt.want)
		}
	}
	if isPrivate(nil) || isPrivate(map[string]any{"other": true}) {
		t.Error("no annotation must be public")
	}
}

func TestPrivateInvoke(t *testing.T) {
	e, rt := newSecEnv(t, Config{TokenKey: testKey})
	private := map[string]any{PrivateAnnotation: "true"}

	pubApp := e.secApp("pub", nil)
	open := e.secFn(pubApp.ID, "open", nil)
	app := e.secApp("sec", nil)
	a := e.secFn(app.ID, "a", private)
	b := e.secFn(app.ID, "b", map[string]any{PrivateAnnotation: true})
	e.trigger(a, "a", "/a")
	lockedApp := e.secApp("locked", private)
	c := e.secFn(lockedApp.ID, "c", nil)
	e.trigger(c, "c", "/c")

	exp := time.Now().Add(time.Hour).Unix()
	ownToken := mustSign(t, tokenClaims{AppID: app.ID, FnID: a.ID, Expires: exp})
	appToken := mustSign(t, tokenClaims{AppID: app.ID, Expires: exp})
	lockedToken := mustSign(t, tokenClaims{AppID: lockedApp.ID, Expires: exp})
	otherApp := mustSign(t, tokenClaims{AppID: pubApp.ID, Expires: exp})
	otherFn := mustSign(t, tokenClaims{AppID: app.ID, FnID: b.ID, Expires: exp})
	expired := mustSign(t, tokenClaims{AppID: app.ID, FnID: a.ID, Expires: time.Now().Add(-time.Second).Unix()})
	wrongKey := rawToken([]byte("another key of thirty-two bytes!"), tokenHeader, tokenClaims{AppID: app.ID, Expires: exp})
	algNone := rawToken(nil, `{"alg":"none","typ":"JWT"}`, tokenClaims{AppID: app.ID, Expires: exp})
	algNone = algNone[:strings.LastIndex(algNone, ".")+1]
	algHS512 := rawToken(testKey, `{"alg":"HS512","typ":"JWT"}`, tokenClaims{AppID: app.ID, Expires: exp})
	noExp := rawToken(testKey, tokenHeader, map[string]any{"app_id": app.ID})
	noApp := rawToken(testKey, tokenHeader, map[string]any{"exp": exp})
	notYet := rawToken(testKey, tokenHeader, map[string]any{"app_id": app.ID, "exp": exp, "nbf": exp - 60})

	// The payload of a token for app "pub" rewritten to claim app "sec",
	// keeping the signature.
	parts := strings.Split(otherApp, ".")
	forged, _ := json.Marshal(tokenClaims{AppID: app.ID, Expires: exp})
	tampered := parts[0] + "." + b64.EncodeToString(forged) + "." + parts[2]

	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	tests := []struct {
		name    string
		path    string
		header  []string
		status  int
		message string
	}{
		{"public fn needs nothing", "/invoke/" + open.ID, nil, 200, ""},
		{"public fn ignores a token", "/invoke/" + open.ID, bearer("whatever"), 200, ""},

		{"no token", "/invoke/" + a.ID, nil, 401, "Authorization: Bearer"},
		{"no token via trigger", "/t/sec/a", nil, 401, "Authorization: Bearer"},
		{"empty header", "/invoke/" + a.ID, []string{"Authorization", ""}, 401, "Authorization: Bearer"},
		{"basic scheme", "/invoke/" + a.ID, []string{"Authorization", "Basic dTpw"}, 401, "Bearer scheme"},
		{"bearer without token", "/invoke/" + a.ID, []string{"Authorization", "Bearer "}, 401, ""},
		{"malformed", "/invoke/" + a.ID, bearer("not-a-jwt"), 401, "malformed"},
		{"malformed parts", "/invoke/" + a.ID, bearer("a.b.c"), 401, "malformed"},
		{"too long", "/invoke/" + a.ID, bearer(strings.Repeat("a", maxTokenLen+1)), 401, "malformed"},
		{"tampered payload", "/invoke/" + a.ID, bearer(tampered), 401, "signature"},
		{"wrong key", "/invoke/" + a.ID, bearer(wrongKey), 401, "signature"},
		{"alg none", "/invoke/" + a.ID, bearer(algNone), 401, `alg "none"`},
		{"alg HS512", "/invoke/" + a.ID, bearer(algHS512), 401, `alg "HS512"`},
		{"expired", "/invoke/" + a.ID, bearer(expired), 401, "expired"},
		{"no exp", "/invoke/" + a.ID, bearer(noExp), 401, "no exp"},
		{"no app_id", "/invoke/" + a.ID, bearer(noApp), 401, "no app_id"},
		{"nbf in the future", "/invoke/" + a.ID, bearer(notYet), 401, "not valid before"},

		{"other app", "/invoke/" + a.ID, bearer(otherApp), 403, "app"},
		{"other fn", "/invoke/" + a.ID, bearer(otherFn), 403, "another fn"},
		{"other fn via trigger", "/t/sec/a", bearer(otherFn), 403, "another fn"},

		{"own token", "/invoke/" + a.ID, bearer(ownToken), 200, ""},
		{"own token via trigger", "/t/sec/a", bearer(ownToken), 200, ""},
		{"scheme is case-insensitive", "/invoke/" + a.ID, []string{"Authorization", "bearer " + ownToken}, 200, ""},
		{"app-wide token", "/invoke/" + a.ID, bearer(appToken), 200, ""},
		{"app-wide token, second fn", "/invoke/" + b.ID, bearer(appToken), 200, ""},

		{"private app, no token", "/t/locked/c", nil, 401, "Authorization: Bearer"},
		{"private app, fn's app token", "/t/locked/c", bearer(lockedToken), 200, ""},
		{"private app, other app's token", "/invoke/" + c.ID, bearer(appToken), 403, "app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do("POST", tt.path, "body", tt.header...)
			wantStatus(t, rec, tt.status, tt.message)
			if tt.status == 200 && rec.Body.String() != "ok" {
				t.Fatalf("body = %q", rec.Body)
			}
		})
	}

	t.Run("two Authorization headers", func(t *testing.T) {
		req := httptest.NewRequest("POST", "/invoke/"+a.ID, strings.NewReader(""))
		req.Header.Add("Authorization", "Bearer "+ownToken)
		req.Header.Add("Authorization", "Bearer "+otherFn)
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		wantStatus(t, rec, 401, "more than one")
	})

	t.Run("kiln token is not passed to the function", func(t *testing.T) {
		wantStatus(t, e.do("POST", "/invoke/"+a.ID, "x", "Authorization", "Bearer "+ownToken), 200)
		if got := rt.lastHeader(a.ID).Get("Authorization"); got != "" {
			t.Fatalf("private fn saw Authorization %q", got)
		}
		// Nor stored with a detached call, where it would outlive its use.
		rec := e.do("POST", "/invoke/"+a.ID, "x", "Authorization", "Bearer "+ownToken, "Fn-Invoke-Type", "detached")
		wantStatus(t, rec, 202)
		var ans struct {
			CallID string `json:"call_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
			t.Fatal(err)
		}
		c, err := e.st.GetCall(context.Background(), a.ID, ans.CallID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Request != nil && len(http.Header(c.Request.Header).Values("Authorization")) > 0 {
			t.Fatalf("stored detached call keeps Authorization %q", c.Request.Header["Authorization"])
		}
		// A public fn may do its own auth: its header goes through.
		wantStatus(t, e.do("POST", "/invoke/"+open.ID, "x", "Authorization", "Bearer mine"), 200)
		if got := rt.lastHeader(open.ID).Get("Authorization"); got != "Bearer mine" {
			t.Fatalf("public fn saw Authorization %q", got)
		}
	})
}

// TestAdminTokenOnInvoke: the CLI sends the admin token everywhere; it
// opens private fns and never reaches function code.
func TestAdminTokenOnInvoke(t *testing.T) {
	e, rt := newSecEnv(t, Config{TokenKey: testKey, AdminToken: "adm"})
	ctx := context.Background()
	app, err := e.st.CreateApp(ctx, &store.App{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, ann map[string]any) *store.Fn {
		fn, err := e.st.CreateFn(ctx, &store.Fn{AppID: app.ID, Name: name, Image: "i:1", Format: protocol.Default, Memory: 128, Timeout: 5, IdleTimeout: 5, Annotations: ann})
		if err != nil {
			t.Fatal(err)
		}
		return fn
	}
	pub, priv := mk("pub", nil), mk("priv", map[string]any{PrivateAnnotation: true})
	for _, fn := range []*store.Fn{pub, priv} {
		wantStatus(t, e.do("POST", "/invoke/"+fn.ID, "", "Authorization", "Bearer adm"), 200)
		if got := rt.lastHeader(fn.ID).Get("Authorization"); got != "" {
			t.Fatalf("fn %s saw the admin token: %q", fn.Name, got)
		}
	}
	wantStatus(t, e.do("POST", "/invoke/"+priv.ID, "", "Authorization", "Bearer adm2"), 401, "malformed")
	wantStatus(t, e.do("POST", "/invoke/"+priv.ID, "", "Authorization", "bearer adm"), 401)
}

// TestUnauthorizedChallenge: RFC 7235 wants a challenge on every 401.
// writeError (server.go) must add it, as it adds Retry-After to 503s:
//
//	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
//		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
//	}
func TestUnauthorizedChallenge(t *testing.T) {
	e, _ := newSecEnv(t, Config{TokenKey: testKey})
	app := e.secApp("sec", nil)
	a := e.secFn(app.ID, "a", map[string]any{PrivateAnnotation: true})
	rec := e.do("POST", "/invoke/"+a.ID, "")
	wantStatus(t, rec, 401)
	if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Fatalf("WWW-Authenticate = %q, want a Bearer challenge: writeError in server.go must set it on 401s (see the comment above)", got)
	}
}

func TestPrivateWithoutKey(t *testing.T) {
	e, _ := newSecEnv(t, Config{})
	app := e.secApp("sec", nil)
	pub := e.secFn(app.ID, "pub", nil)
	priv := e.secFn(app.ID, "priv", map[string]any{PrivateAnnotation: true})
	wantStatus(t, e.do("POST", "/invoke/"+pub.ID, ""), 200)
	// Even a token kiln could have signed once must not get through.
	tok := mustSign(t, tokenClaims{AppID: app.ID, Expires: time.Now().Add(time.Hour).Unix()})
	wantStatus(t, e.do("POST", "/invoke/"+priv.ID, "", "Authorization", "Bearer "+tok), 503, "private functions need a token key")
	wantStatus(t, e.do("POST", "/v2/tokens", map[string]any{"app_id": app.ID}), 503, "token key")
}

func TestCreateToken(t *testing.T) {
	e, _ := newSecEnv(t, Config{TokenKey: testKey})
	app := e.secApp("a", nil)
	f := e.secFn(app.ID, "f", map[string]any{PrivateAnnotation: true})
	other := e.secApp("b", nil)
	g := e.secFn(other.ID, "g", nil)

	tests := []struct {
		name    string
		body    any
		status  int
		message string
	}{
		{"empty body", "", 400, "empty body"},
		{"not an object", `[1]`, 400, "JSON object"},
		{"no app", map[string]any{"fn_id": f.ID}, 400, "app_id"},
		{"unknown app", map[string]any{"app_id": "nope"}, 404, `"nope"`},
		{"unknown fn", map[string]any{"app_id": app.ID, "fn_id": "nope"}, 404, `"nope"`},
		{"fn of another app", map[string]any{"app_id": app.ID, "fn_id": g.ID}, 400, "not in app"},
		{"zero ttl", map[string]any{"app_id": app.ID, "ttl": 0}, 400, "ttl"},
		{"negative ttl", map[string]any{"app_id": app.ID, "ttl": -5}, 400, "ttl"},
		{"ttl over 30 days", map[string]any{"app_id": app.ID, "ttl": 30*24*3600 + 1}, 400, "ttl"},
		{"ttl as a string", map[string]any{"app_id": app.ID, "ttl": "1h"}, 400, "ttl"},
		{"fractional ttl", `{"app_id": "` + app.ID + `", "ttl": 1.5}`, 400, "ttl"},
		{"ttl of 30 days", map[string]any{"app_id": app.ID, "ttl": 30 * 24 * 3600}, 200, ""},
		{"app token", map[string]any{"app_id": app.ID}, 200, ""},
		{"fn token", map[string]any{"app_id": app.ID, "fn_id": f.ID, "ttl": 60}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do("POST", "/v2/tokens", tt.body), tt.status, tt.message)
		})
	}

	before := time.Now()
	ans := ok[tokenAnswer](e, "POST", "/v2/tokens", map[string]any{"app_id": app.ID})
	expires, err := time.Parse(time.RFC3339, ans.ExpiresAt)
	if err != nil {
		t.Fatalf("expires_at %q: %v", ans.ExpiresAt, err)
	}
	if d := expires.Sub(before); d < time.Hour-2*time.Second || d > time.Hour+2*time.Second {
		t.Fatalf("default ttl gave expiry in %s, want 1h", d)
	}
	c, err := verifyToken(testKey, ans.Token, time.Now())
	if err != nil || c.AppID != app.ID || c.FnID != "" || c.Expires != expires.Unix() {
		t.Fatalf("claims %+v, %v", c, err)
	}
	wantStatus(t, e.do("POST", "/invoke/"+f.ID, "", "Authorization", "Bearer "+ans.Token), 200)

	ans = ok[tokenAnswer](e, "POST", "/v2/tokens", map[string]any{"app_id": app.ID, "fn_id": f.ID, "ttl": 60})
	if c, err := verifyToken(testKey, ans.Token, time.Now()); err != nil || c.FnID != f.ID {
		t.Fatalf("fn token claims %+v, %v", c, err)
	}
}

func TestCreateTokenNeedsAdmin(t *testing.T) {
	e, _ := newSecEnv(t, Config{TokenKey: testKey, AdminToken: "adm"})
	rec := e.do("POST", "/v2/apps", map[string]any{"name": "a"}, "Authorization", "Bearer adm")
	wantStatus(t, rec, 200)
	var app appJSON
	_ = json.Unmarshal(rec.Body.Bytes(), &app)
	wantStatus(t, e.do("POST", "/v2/tokens", map[string]any{"app_id": app.ID}), 401)
	wantStatus(t, e.do("POST", "/v2/tokens", map[string]any{"app_id": app.ID}, "Authorization", "Bearer adm"), 200)
}

func TestVerifyToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := mustSign(t, tokenClaims{AppID: "a", Expires: now.Unix() + 10})
	if _, err := verifyToken(testKey, good, now); err != nil {
		t.Fatalf("good token: %v", err)
	}
	// exp is the first second the token is refused.
	if _, err := verifyToken(testKey, good, now.Add(10*time.Second)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("token at its exp: %v", err)
	}
	// NumericDates may carry fractions (RFC 7519); kiln reads them to the
	// second.
	frac := rawToken(testKey, tokenHeader, map[string]any{"app_id": "a", "exp": float64(now.Unix()) + 1.5})
	if _, err := verifyToken(testKey, frac, now); err != nil {
		t.Fatalf("fractional exp: %v", err)
	}

	// The signature's last character has two unused bits; setting them
	// must not give a second valid spelling of the same token.
	i := strings.LastIndexByte(good, '.') + 1
	sig := good[i:]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	malleable := good[:len(good)-1] + string(alphabet[last^1])
	if _, err := base64.RawURLEncoding.DecodeString(malleable[i:]); err != nil {
		t.Fatalf("test is broken: %v", err)
	}
	if _, err := verifyToken(testKey, malleable, now); err == nil {
		t.Fatal("non-canonical signature accepted")
	}

	bad := []struct {
		name, token, want string
	}{
		{"two parts", "a.b", "malformed"},
		{"four parts", good + ".x", "malformed"},
		{"header not base64", "!!." + good[strings.IndexByte(good, '.')+1:], "malformed"},
		{"header not JSON", b64.EncodeToString([]byte("nope")) + ".e30.sig", "malformed"},
		{"padded header", b64.EncodeToString([]byte(tokenHeader)) + "=.e30.x", "malformed"},
		{"no alg", rawToken(testKey, `{"typ":"JWT"}`, tokenClaims{AppID: "a", Expires: now.Unix() + 10}), `alg ""`},
		{"lower-case alg", rawToken(testKey, `{"alg":"hs256"}`, tokenClaims{AppID: "a", Expires: now.Unix() + 10}), `alg "hs256"`},
		{"crit header", rawToken(testKey, `{"alg":"HS256","crit":["x"]}`, tokenClaims{AppID: "a", Expires: now.Unix() + 10}), "critical"},
		{"claims not an object", rawToken(testKey, tokenHeader, []int{1}), "malformed"},
		{"app_id not a string", rawToken(testKey, tokenHeader, map[string]any{"app_id": 1, "exp": now.Unix() + 10}), "malformed"},
		{"exp not a number", rawToken(testKey, tokenHeader, map[string]any{"app_id": "a", "exp": "soon"}), "malformed"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := verifyToken(testKey, tt.token, now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestLoadOrCreateTokenKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "token.key")
	key, err := LoadOrCreateTokenKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 || bytes.Equal(key, make([]byte, 32)) {
		t.Fatalf("key %x", key)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode())
	}
	again, err := LoadOrCreateTokenKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Fatalf("reload gave %x (%v), want %x", again, err, key)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("data dir holds %v, want only the key", entries)
	}
	other, err := LoadOrCreateTokenKey(filepath.Join(dir, "other.key"))
	if err != nil || bytes.Equal(other, key) {
		t.Fatalf("second key %x (%v) equals the first", other, err)
	}

	t.Run("readable by others", func(t *testing.T) {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(path, 0o600)
		if _, err := LoadOrCreateTokenKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("short key", func(t *testing.T) {
		p := filepath.Join(dir, "short.key")
		if err := os.WriteFile(p, []byte("short"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateTokenKey(p); err == nil || !strings.Contains(err.Error(), "delete it") {
			t.Fatalf("err = %v", err)
		}
		if b, _ := os.ReadFile(p); string(b) != "short" {
			t.Fatal("a bad key file was overwritten")
		}
	})
	t.Run("directory", func(t *testing.T) {
		p := filepath.Join(dir, "adir")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateTokenKey(p); err == nil {
			t.Fatal("a directory was accepted as a key")
		}
	})
	t.Run("rotation", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		fresh, err := LoadOrCreateTokenKey(path)
		if err != nil || bytes.Equal(fresh, key) {
			t.Fatalf("after delete: %x (%v)", fresh, err)
		}
	})
	t.Run("unwritable dir", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes anywhere")
		}
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateTokenKey(filepath.Join(ro, "token.key"))
		if !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestTokenAnswerShape pins the field names scripts read.
func TestTokenAnswerShape(t *testing.T) {
	b, _ := json.Marshal(tokenAnswer{Token: "t", ExpiresAt: "x"})
	if got := string(b); got != `{"token":"t","expires_at":"x"}` {
		t.Fatal(got)
	}
}
