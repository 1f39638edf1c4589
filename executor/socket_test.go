package executor

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// socketFunction stands in for an http-stream FDK: it listens the way
// Fn's FDKs do (a socket under another name, then lsnr.sock as a relative
// link to it) and serves handler. conns counts connections accepted.
type socketFunction struct {
	ln    net.Listener
	conns atomic.Int32
	srv   *http.Server
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	// A unix socket path must fit in 107 bytes; t.TempDir's may not.
	dir, err := os.MkdirTemp("", "ks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func listenLikeAnFDK(t *testing.T, dir string, handler http.HandlerFunc) *socketFunction {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, "phonylsnr.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("phonylsnr.sock", filepath.Join(dir, socketName)); err != nil {
		t.Fatal(err)
	}
	f := &socketFunction{ln: ln}
	f.srv = &http.Server{Handler: handler, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}}
	go func() { _ = f.srv.Serve(ln) }()
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func startSocketFake(t *testing.T, handler http.HandlerFunc) (*SocketHot, *pipeContainer, *socketFunction) {
	t.Helper()
	dir := shortTempDir(t)
	f := listenLikeAnFDK(t, dir, handler)
	c := newPipeContainer(t)
	h := newSocketHot(c, dir, 0, 8<<20)
	if err := h.waitListening(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h, c, f
}

// echoFn answers as an Fn FDK does: the client's status and headers in
// Fn-Http-Status and Fn-Http-H-*, the body back.
func echoFn(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := w.Header()
	h.Set("Fn-Http-Status", "201")
	h.Set("Fn-Http-H-X-Seen-Method", r.Header.Get("Fn-Http-Method"))
	h.Set("Fn-Http-H-X-Seen-Url", r.Header.Get("Fn-Http-Request-Url"))
	h.Set("Fn-Http-H-X-Seen-Custom", r.Header.Get("Fn-Http-H-X-Custom"))
	h.Set("Fn-Http-H-X-Seen-Call", r.Header.Get("Fn-Call-Id"))
	h.Set("Fn-Http-H-X-Seen-Intent", r.Header.Get("Fn-Intent"))
	h.Set("Fn-Http-H-X-Seen-Path", r.URL.Path)
	h.Set("X-Not-For-The-Client", "1")
	h.Set("Content-Type", r.Header.Get("Content-Type"))
	_, _ = w.Write(body)
}

// TestSocketCallsMapFnsContract: a call reaches the function as Fn's
// POST /call with Fn's headers, and its answer comes back with the status
// and headers the function set through them, binary safe, over one
// keep-alive connection.
func TestSocketCallsMapFnsContract(t *testing.T) {
	h, _, f := startSocketFake(t, echoFn)
	for i := 0; i < 5; i++ {
		body := make([]byte, 300<<10)
		_, _ = rand.Read(body)
		req := &protocol.Request{CallID: fmt.Sprintf("call-%d", i), Method: "PUT", URL: "http://h/t/app/x?q=1",
			Header: http.Header{"X-Custom": {"yes"}, "Content-Type": {"application/octet-stream"}}, Body: body,
			Deadline: time.Now().Add(time.Minute)}
		resp, err := h.Call(context.Background(), req, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Stream != nil {
			// Go's server chunks any answer past its buffer.
			if resp.Body, err = io.ReadAll(resp.Stream); err != nil {
				t.Fatal(err)
			}
		}
		want := map[string]string{
			"X-Seen-Method": "PUT", "X-Seen-Url": "http://h/t/app/x?q=1", "X-Seen-Custom": "yes",
			"X-Seen-Call": req.CallID, "X-Seen-Intent": "httprequest", "X-Seen-Path": "/call",
			"Content-Type": "application/octet-stream",
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("call %d: %s = %q, want %q", i, k, got, v)
			}
		}
		if resp.Status != 201 || !bytes.Equal(resp.Body, body) || resp.Header.Get("X-Not-For-The-Client") != "" {
			t.Fatalf("call %d: %d, %d bytes (equal %v), headers %v", i, resp.Status, len(resp.Body), bytes.Equal(resp.Body, body), resp.Header)
		}
	}
	if n := f.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 calls, want 1 (keep-alive)", n)
	}
}

// TestSocketStreams: a chunked answer reaches the caller chunk by chunk,
// and the next call works on the same connection.
func TestSocketStreams(t *testing.T) {
	next := make(chan struct{})
	h, _, _ := startSocketFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		// The head goes out at once, as an SSE function's does.
		w.(http.Flusher).Flush()
		for i := 0; i < 3; i++ {
			<-next
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	})
	for call := 0; call < 2; call++ {
		resp, err := h.Call(context.Background(), &protocol.Request{CallID: "c", Method: "GET", URL: "http://h/"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Stream == nil {
			t.Fatalf("call %d: no stream: %+v", call, resp)
		}
		buf := make([]byte, 64)
		for i := 0; i < 3; i++ {
			next <- struct{}{}
			n, err := resp.Stream.Read(buf)
			if want := fmt.Sprintf("data: event %d\n\n", i); err != nil || string(buf[:n]) != want {
				t.Fatalf("call %d event %d: %q, %v", call, i, buf[:n], err)
			}
		}
		if _, err := io.ReadAll(resp.Stream); err != nil {
			t.Fatalf("end of stream: %v", err)
		}
		if h.Err() != nil {
			t.Fatalf("instance broken after a clean stream: %v", h.Err())
		}
	}
}

// TestSocketFaults: hang, crash, garbage and a bad status get the same
// statuses as the stdio formats, and the instance is broken.
func TestSocketFaults(t *testing.T) {
	cases := []struct {
		name    string
		handler func(c *pipeContainer) http.HandlerFunc
		want    error
		msg     string
	}{
		{"hang", func(*pipeContainer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
		}, errdefs.ErrTimeout, "deadline"},
		{"crash mid-call", func(c *pipeContainer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				c.exit(3)
				if hj, ok := w.(http.Hijacker); ok {
					conn, _, _ := hj.Hijack()
					conn.Close()
				}
			}
		}, errdefs.ErrFunction, "exited with code 3"},
		{"garbage", func(*pipeContainer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Write([]byte("this is not HTTP\r\n\r\n"))
				conn.Close()
			}
		}, errdefs.ErrFunction, "malformed"},
		{"bad Fn-Http-Status", func(*pipeContainer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { w.Header().Set("Fn-Http-Status", "abc") }
		}, protocol.ErrProtocol, "Fn-Http-Status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortTempDir(t)
			c := newPipeContainer(t)
			listenLikeAnFDK(t, dir, tc.handler(c))
			h := newSocketHot(c, dir, 0, 1<<20)
			defer h.Close(context.Background())
			if err := h.waitListening(context.Background(), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := h.Call(ctx, &protocol.Request{CallID: "c", Method: "POST", URL: "http://h/"}, io.Discard)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %v, want %q mentioning %q", err, tc.want, tc.msg)
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("took %s", took)
			}
			if h.Err() == nil {
				t.Fatal("instance still serving")
			}
		})
	}
}

// TestSocketListenFaults: a function that never listens, or exits first,
// fails its launch with ErrFunction, not a wait to the caller's deadline.
func TestSocketListenFaults(t *testing.T) {
	t.Run("never listens", func(t *testing.T) {
		c := newPipeContainer(t)
		h := newSocketHot(c, shortTempDir(t), 0, 1<<20)
		defer h.Close(context.Background())
		err := h.waitListening(context.Background(), 200*time.Millisecond)
		if !errors.Is(err, errdefs.ErrFunction) || !strings.Contains(err.Error(), "did not listen") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("exits first", func(t *testing.T) {
		c := newPipeContainer(t)
		h := newSocketHot(c, shortTempDir(t), 0, 1<<20)
		defer h.Close(context.Background())
		go func() { time.Sleep(50 * time.Millisecond); c.exit(7) }()
		err := h.waitListening(context.Background(), 5*time.Second)
		if !errors.Is(err, errdefs.ErrFunction) || !strings.Contains(err.Error(), "exited with code 7") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestDialSocketRefusesWhatTheFunctionCouldAimElsewhere: the function owns
// its socket dir; kilnd connects only to a socket in it.
func TestDialSocketRefusesWhatTheFunctionCouldAimElsewhere(t *testing.T) {
	outside := shortTempDir(t)
	victim, err := net.Listen("unix", filepath.Join(outside, "victim.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	cases := []struct {
		name  string
		setup func(dir string) error
	}{
		{"absolute link", func(dir string) error {
			return os.Symlink(filepath.Join(outside, "victim.sock"), filepath.Join(dir, socketName))
		}},
		{"relative link out", func(dir string) error {
			rel, _ := filepath.Rel(dir, filepath.Join(outside, "victim.sock"))
			return os.Symlink(rel, filepath.Join(dir, socketName))
		}},
		{"link to a link", func(dir string) error {
			if err := os.Symlink(filepath.Join(outside, "victim.sock"), filepath.Join(dir, "hop")); err != nil {
				return err
			}
			return os.Symlink("hop", filepath.Join(dir, socketName))
		}},
		{"a plain file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, socketName), []byte("x"), 0o644)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortTempDir(t)
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			conn, err := dialSocket(context.Background(), dir)
			if err == nil {
				conn.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, errUnsafeSocket) {
				t.Fatalf("error %v, want errUnsafeSocket", err)
			}
		})
	}
}
