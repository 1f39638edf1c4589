package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
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
	h := rt.lastHeader(f.ID)
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

// chanStream is a streamed body fed by a channel; an error value ends it
// with that error.
type chanStream struct {
	ch   chan any
	done bool
}

func (c *chanStream) Read(p []byte) (int, error) {
	v, ok := <-c.ch
	if !ok {
		c.done = true
		return 0, io.EOF
	}
	if err, isErr := v.(error); isErr {
		return 0, err
	}
	return copy(p, v.(string)), nil
}

func (c *chanStream) Close() error { return nil }

type chanHot struct{ body *chanStream }

func (h *chanHot) Done() <-chan struct{}       { return nil }
func (h *chanHot) Err() error                  { return nil }
func (h *chanHot) Close(context.Context) error { return nil }
func (h *chanHot) Call(context.Context, *protocol.Request, io.Writer) (*protocol.Response, error) {
	return &protocol.Response{Status: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Stream: h.body}, nil
}

// TestStreamedAnswers: each piece of a streamed answer is flushed to the
// client before the next exists; a stream that fails mid-way is cut, so
// the client sees an incomplete body rather than a clean end.
func TestStreamedAnswers(t *testing.T) {
	for _, fails := range []bool{false, true} {
		t.Run(fmt.Sprintf("fails=%v", fails), func(t *testing.T) {
			e, rt := newSecEnv(t, Config{})
			body := &chanStream{ch: make(chan any)}
			rt.hot = func() (calls.Instance, error) { return &chanHot{body: body}, nil }
			a := e.app("a")
			f := ok[fnJSON](e, "POST", "/v2/fns", map[string]any{"name": "s", "app_id": a.ID, "image": "img:1", "format": "http"})
			srv := httptest.NewServer(e.srv)
			defer srv.Close()
			resp, err := http.Post(srv.URL+"/invoke/"+f.ID, "text/plain", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Header.Get("X-Accel-Buffering") != "no" || resp.Header.Get("Content-Type") != "text/event-stream" || resp.ContentLength != -1 {
				t.Fatalf("head %v, length %d", resp.Header, resp.ContentLength)
			}
			buf := make([]byte, 64)
			for i := 0; i < 3; i++ {
				piece := fmt.Sprintf("data: %d\n\n", i)
				body.ch <- piece // the next piece exists only once this one is read
				n, err := io.ReadAtLeast(resp.Body, buf, len(piece))
				if err != nil || string(buf[:n]) != piece {
					t.Fatalf("piece %d: %q, %v", i, buf[:n], err)
				}
			}
			if fails {
				body.ch <- fmt.Errorf("%w: exited", errdefs.ErrFunction)
				if _, err := io.ReadAll(resp.Body); err == nil {
					t.Fatal("a failed stream ended cleanly for the client")
				}
				return
			}
			close(body.ch)
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Fatalf("end: %q, %v", rest, err)
			}
		})
	}
}
