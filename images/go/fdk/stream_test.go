package fdk

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/images/internal/fdktest"
	"github.com/kiln-run/kiln/protocol"
)

// send writes req without waiting for the response, which the test reads
// raw; the pipe blocks until serve reads the frame.
func (hs *harness) send(req *protocol.Request) {
	go func() {
		if err := hs.codec.WriteRequest(hs.stdin, req); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			hs.t.Errorf("writing request: %v", err)
		}
	}()
}

func plainRequest(body string) *protocol.Request {
	return &protocol.Request{Method: "POST", URL: "http://h/", Body: []byte(body)}
}

func TestFlushStreamsHTTP(t *testing.T) {
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
		if GetContext(ctx).Header().Get("X-Stream") == "" {
			io.Copy(out, in)
			return
		}
		WriteStatus(out, 201)
		SetHeader(out, "X-A", "1")
		io.WriteString(out, "one")
		Flush(out)
		// The head is out: these come too late, as in net/http.
		SetHeader(out, "X-Late", "1")
		WriteStatus(out, 500)
		<-release
		io.WriteString(out, "two")
		if err := http.NewResponseController(out.(http.ResponseWriter)).Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
		io.WriteString(out, "three") // sent when the handler returns
	})
	hs := start(t, protocol.HTTP, nil, h)
	req := plainRequest("")
	req.Header = http.Header{"X-Stream": {"1"}}
	hs.send(req)
	status, head := fdktest.ReadHead(t, hs.stdout)
	if status != 201 || head.Get("X-A") != "1" || head.Get("X-Late") != "" ||
		head.Get("Transfer-Encoding") != "chunked" || head.Get("Content-Length") != "" {
		t.Fatalf("head %d %v", status, head)
	}
	// The handler is blocked until release: this chunk was sent mid-call.
	if c := fdktest.ReadChunk(t, hs.stdout); string(c) != "one" {
		t.Fatalf("first chunk %q", c)
	}
	close(release)
	for _, want := range []string{"two", "three"} {
		if c := fdktest.ReadChunk(t, hs.stdout); string(c) != want {
			t.Fatalf("chunk %q, want %q", c, want)
		}
	}
	if c := fdktest.ReadChunk(t, hs.stdout); c != nil {
		t.Fatalf("chunk %q, want the last chunk", c)
	}
	if resp := hs.call(plainRequest("next")); resp.Status != 200 || string(resp.Body) != "next" {
		t.Errorf("next call: %d %q", resp.Status, resp.Body)
	}
	if err := hs.stop(); err != nil {
		t.Error(err)
	}
}

func TestFlushIsANoOpWhereFormatsCannotStream(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
		WriteStatus(out, 201)
		io.WriteString(out, "a")
		if err := Flush(out); err != nil {
			t.Errorf("flush: %v", err)
		}
		io.WriteString(out, "b")
	})
	for _, format := range []string{protocol.JSON, protocol.JSONHTTP, protocol.CloudEvent} {
		hs := start(t, format, nil, h)
		if resp := hs.call(plainRequest("")); resp.Status != 201 || string(resp.Body) != "ab" {
			t.Errorf("%s: %d %q", format, resp.Status, resp.Body)
		}
		if err := hs.stop(); err != nil {
			t.Error(err)
		}
	}
	var out strings.Builder
	if err := serve(context.Background(), protocol.Default, strings.NewReader(""), &out, nil, h); err != nil || out.String() != "ab" {
		t.Errorf("default: %v %q", err, out.String())
	}
}

func TestStreamedResponseEdges(t *testing.T) {
	writeErr := make(chan error, 1)
	release := make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
		switch GetContext(ctx).Header().Get("X-Case") {
		case "panic":
			io.WriteString(out, "partial")
			Flush(out)
			panic("after the head")
		case "bad-status":
			WriteStatus(out, 42)
			io.WriteString(out, "x")
			Flush(out)
			_, err := io.WriteString(out, "more")
			writeErr <- err
		case "no-body":
			WriteStatus(out, 204)
			Flush(out)
			_, err := io.WriteString(out, "more")
			writeErr <- err
		case "big":
			Flush(out)
			// Far more than the buffer between flushes: it must go out on
			// its own, not pile up until the handler flushes or returns.
			for range 3 * streamBuffer / 1024 {
				out.Write(make([]byte, 1024))
			}
			<-release
		case "hijack-late":
			Flush(out)
			if _, ok := Hijack(out); ok {
				t.Error("Hijack after Flush succeeded")
			}
		}
	})
	hs := start(t, protocol.HTTP, nil, h)
	withCase := func(c string) *protocol.Request {
		r := plainRequest("")
		r.Header = http.Header{"X-Case": {c}}
		return r
	}

	// A panic once the head is out ends the body cleanly.
	if resp := hs.call(withCase("panic")); resp.Status != 200 || string(resp.Body) != "partial" {
		t.Errorf("panic after flush: %d %q", resp.Status, resp.Body)
	}
	// A head no format can carry is refused at the flush, as at the end.
	if resp := hs.call(withCase("bad-status")); resp.Status != 500 || !strings.Contains(string(resp.Body), "status 42") {
		t.Errorf("bad status at flush: %d %q", resp.Status, resp.Body)
	}
	if err := <-writeErr; err == nil {
		t.Error("writing after a refused head succeeded")
	}
	// 204 has no body: its head alone is the frame.
	if resp := hs.call(withCase("no-body")); resp.Status != 204 || len(resp.Body) != 0 {
		t.Errorf("204 after flush: %d %q", resp.Status, resp.Body)
	}
	if err := <-writeErr; !errors.Is(err, http.ErrBodyNotAllowed) {
		t.Errorf("writing a 204's body: %v", err)
	}
	hs.send(withCase("big"))
	if status, _ := fdktest.ReadHead(t, hs.stdout); status != 200 {
		t.Fatalf("status %d", status)
	}
	got := 0
	for got < 2*streamBuffer {
		got += len(fdktest.ReadChunk(t, hs.stdout))
	}
	close(release)
	for c := fdktest.ReadChunk(t, hs.stdout); c != nil; c = fdktest.ReadChunk(t, hs.stdout) {
		got += len(c)
	}
	if got != 3*streamBuffer {
		t.Errorf("streamed %d bytes, want %d", got, 3*streamBuffer)
	}
	if resp := hs.call(withCase("hijack-late")); resp.Status != 200 {
		t.Errorf("hijack after flush: %d", resp.Status)
	}
	if resp := hs.call(plainRequest("")); resp.Status != 200 {
		t.Errorf("still serving: %d", resp.Status)
	}
	if err := hs.stop(); err != nil {
		t.Error(err)
	}
}

// socketDir is a directory for a listener; t.TempDir's path can be too
// long for a socket.
func socketDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "fdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startStream runs serveHTTPStream until the test ends or stop is called.
func startStream(t *testing.T, h Handler) (link string, stop func() error) {
	t.Helper()
	link = filepath.Join(socketDir(t), "lsnr.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveHTTPStream(ctx, "unix:"+link, environ, h) }()
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Lstat(link); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serveHTTPStream: %v", err)
		default:
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("no listener")
		}
	}
	var stopErr error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() { stop() })
	return link, stop
}

func TestHTTPStreamShutdownFinishesTheCall(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	link, stop := startStream(t, HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
		close(entered)
		<-release
		io.WriteString(out, "finished")
	}))
	phony := filepath.Join(filepath.Dir(link), "phonylsnr.sock")
	conn, err := net.Dial("unix", link)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("POST", "http://localhost/call", nil)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The link goes at once, while the call is still running.
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the link is still there after the signal")
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("serveHTTPStream returned (%v) with a call in progress", err)
	default:
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "finished" || resp.Header.Get("Fn-Http-Status") != "200" {
		t.Errorf("the call in progress got %v %q", resp.Header, body)
	}
	if err := <-stopped; err != nil {
		t.Errorf("serveHTTPStream: %v", err)
	}
	if _, err := os.Lstat(phony); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is left behind: %v", err)
	}
}

func TestHTTPStreamRequests(t *testing.T) {
	link, _ := startStream(t, HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
		if GetContext(ctx).Header().Get("X-Hijack") == "" {
			SetHeader(out, "X-Content-Type", GetContext(ctx).Header().Get("Content-Type"))
			return
		}
		raw, ok := Hijack(out)
		if !ok {
			t.Error("Hijack refused in http-stream")
			return
		}
		io.WriteString(raw, "HTTP/1.1 200 OK\r\nFn-Http-Status: 299\r\nContent-Length: 2\r\n\r\nhi")
	}))
	conn, err := net.Dial("unix", link)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	do := func(h http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://localhost/call", nil)
		req.Header = h
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		return resp
	}
	// A deadline kilnd would never send: the request's own status says so.
	if resp := do(http.Header{"Fn-Deadline": {"tomorrow"}}); resp.StatusCode != 400 {
		t.Errorf("bad Fn-Deadline: %d", resp.StatusCode)
	}
	// Content-Type is the client's as itself; a prefixed one does not win.
	resp := do(http.Header{"Content-Type": {"text/csv"}, "Fn-Http-H-Content-Type": {"text/html"}})
	if got := resp.Header.Get("Fn-Http-H-X-Content-Type"); got != "text/csv" {
		t.Errorf("Content-Type seen by the handler: %q", got)
	}
	// A handler that sets no Content-Type gets none, not net/http's guess.
	if _, ok := resp.Header["Content-Type"]; ok {
		t.Errorf("Content-Type %q appeared", resp.Header.Get("Content-Type"))
	}
	if resp := do(http.Header{"Fn-Http-H-X-Hijack": {"1"}}); resp.Header.Get("Fn-Http-Status") != "299" {
		t.Errorf("hijacked answer: %v", resp.Header)
	}
	// The FDK closes a hijacked connection once the handler returns.
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after a hijacked call: %d %v, want EOF", n, err)
	}
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("kiln is gone") }

func TestFlushReportsAFailedSend(t *testing.T) {
	var flushErr, writeErr error
	h := HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
		io.WriteString(out, "x")
		flushErr = Flush(out)
		_, writeErr = io.WriteString(out, "y")
	})
	codec, _ := protocol.New(protocol.HTTP, protocol.Limits{})
	var in strings.Builder
	if err := codec.WriteRequest(&in, plainRequest("")); err != nil {
		t.Fatal(err)
	}
	err := serve(context.Background(), protocol.HTTP, strings.NewReader(in.String()), brokenWriter{}, nil, h)
	if flushErr == nil || writeErr == nil || err == nil {
		t.Errorf("flush %v, write %v, serve %v: want all to fail", flushErr, writeErr, err)
	}
}
