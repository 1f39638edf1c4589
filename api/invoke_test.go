package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// headerHook runs before the status line is written.
type headerHook struct {
	*httptest.ResponseRecorder
	before func(h http.Header, code int)
}

func (w *headerHook) WriteHeader(code int) {
	w.before(w.Header(), code)
	w.ResponseRecorder.WriteHeader(code)
}

// TestDetachedInvoke: a detached invoke answers 202 with the call id only
// after the call is stored, and what reaches the function is the request
// without hop-by-hop headers.
func TestDetachedInvoke(t *testing.T) {
	e, rt := newSecEnv(t, Config{})
	a := e.app("a")
	f := e.fn(a.ID, "f")
	e.trigger(f, "f", "/f")

	var storedFirst bool
	rec := &headerHook{ResponseRecorder: httptest.NewRecorder(), before: func(h http.Header, code int) {
		c, err := e.st.GetCall(context.Background(), f.ID, h.Get("Fn-Call-Id"))
		storedFirst = code == http.StatusAccepted && err == nil && c.Request != nil && string(c.Request.Body) == "payload"
	}}
	req := httptest.NewRequest("PUT", "/t/a/f?q=1", strings.NewReader("payload"))
	req.Header.Set("Fn-Invoke-Type", "detached")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("Keep-Alive", "timeout=5")
	e.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted || !storedFirst {
		t.Fatalf("answered %d %s; stored before the answer: %v", rec.Code, rec.Body, storedFirst)
	}
	id := rec.Header().Get("Fn-Call-Id")
	if !strings.Contains(rec.Body.String(), `"call_id":"`+id+`"`) {
		t.Fatalf("body %s", rec.Body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for rt.ranFn(id) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the detached call never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h := rt.lastHeader()
	if h.Get("X-Custom") != "kept" || h.Get("X-Hop") != "" || h.Get("Keep-Alive") != "" || h.Get("Connection") != "" {
		t.Fatalf("function got headers %v", h)
	}
}

// TestErrorStatuses: the one table maps every kind of error to its
// status, and a 503 always carries Retry-After (longer for a full queue).
func TestErrorStatuses(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		retry  string
	}{
		{fmt.Errorf("fn %q %w", "x", errdefs.ErrNotFound), 404, ""},
		{fmt.Errorf("%w fn memory: too big", errdefs.ErrInvalid), 400, ""},
		{fmt.Errorf("%w: name taken", errdefs.ErrConflict), 409, ""},
		{fmt.Errorf("body: %w", errdefs.ErrTooLarge), 413, ""},
		{errdefs.Errorf(errdefs.ErrUnauthorized, "no token"), 401, ""},
		{errdefs.Errorf(errdefs.ErrForbidden, "other app"), 403, ""},
		{errdefs.Errorf(errdefs.ErrTimeout, "fn %q timed out after 1s", "x"), 504, ""},
		{fmt.Errorf("%w: function exited with code 3", errdefs.ErrFunction), 502, ""},
		{errdefs.Errorf(errdefs.ErrUpstream, "pulling"), 502, ""},
		{errdefs.Errorf(errdefs.ErrUnavailable, "no capacity"), 503, "1"},
		{fmt.Errorf("queue: %w", &store.QueueFullError{FnID: "f", Waiting: 3, PerFn: true}), 503, "5"},
		{errors.New("disk on fire"), 500, ""},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, tt.err)
		wantStatus(t, rec, tt.status, tt.err.Error())
		if got := rec.Header().Get("Retry-After"); got != tt.retry {
			t.Errorf("%v: Retry-After %q, want %q", tt.err, got, tt.retry)
		}
	}
}
