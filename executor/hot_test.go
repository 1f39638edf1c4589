package executor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// pipeContainer stands in for a container: the function's side of three
// OS pipes, which behave as the FIFOs do (bounded, blocking writes).
// Like a FIFO kiln opened read-write, stdin keeps its read end open after
// the "process" exits, so a write to a dead function blocks rather than
// failing: only the exit notice or a deadline can end it.
type pipeContainer struct {
	stdinR, stdinW   *os.File
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File

	mu       sync.Mutex
	hook     func(uint32)
	exitedCh chan struct{}
	code     uint32
	exitOnce sync.Once

	destroyed chan struct{}
	destroyOn sync.Once
}

func newPipeContainer(t *testing.T) *pipeContainer {
	t.Helper()
	c := &pipeContainer{exitedCh: make(chan struct{}), destroyed: make(chan struct{})}
	var err error
	for _, p := range []*[2]**os.File{
		{&c.stdinR, &c.stdinW}, {&c.stdoutR, &c.stdoutW}, {&c.stderrR, &c.stderrW},
	} {
		if *p[0], *p[1], err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c.exit(137)
		c.stdinR.Close()
		c.stdoutR.Close()
		c.stderrR.Close()
	})
	return c
}

// exit is the process ending: the exit is reported, and the shim closes
// the write ends of stdout and stderr.
func (c *pipeContainer) exit(code uint32) {
	c.exitOnce.Do(func() {
		c.mu.Lock()
		c.code = code
		hook := c.hook
		c.mu.Unlock()
		c.stdoutW.Close()
		c.stderrW.Close()
		if hook != nil {
			hook(code)
		}
		close(c.exitedCh)
	})
}

func (c *pipeContainer) stdinPipe() deadlineWriter { return c.stdinW }
func (c *pipeContainer) stdoutPipe() io.Reader     { return c.stdoutR }
func (c *pipeContainer) stderrPipe() io.Reader     { return c.stderrR }
func (c *pipeContainer) closeStdin()               { c.stdinW.Close() }
func (c *pipeContainer) logger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func (c *pipeContainer) onExit(f func(uint32)) {
	c.mu.Lock()
	c.hook = f
	c.mu.Unlock()
	select {
	case <-c.exitedCh:
		f(c.code)
	default:
	}
}

func (c *pipeContainer) exitCode(d time.Duration) (uint32, bool) {
	select {
	case <-c.exitedCh:
		return c.code, true
	case <-time.After(d):
		return 0, false
	}
}

func (c *pipeContainer) exitError(code uint32) error {
	return fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, code)
}

func (c *pipeContainer) kill() { go c.exit(137) }

func (c *pipeContainer) destroy(time.Duration) {
	c.destroyOn.Do(func() {
		c.exit(137)
		close(c.destroyed)
	})
}

// function is the program inside the fake container.
type function func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec)

// serveEcho answers every request with its body, as a good function does.
func serveEcho(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
	for {
		req, err := codec.ReadRequest(in)
		if err != nil {
			return
		}
		resp := &protocol.Response{Status: 200, Header: http.Header{}, Body: req.Body}
		if err := codec.WriteResponse(c.stdoutW, resp); err != nil {
			return
		}
	}
}

func frame(t *testing.T, codec protocol.Codec, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := codec.WriteResponse(&b, &protocol.Response{Status: 200, Header: http.Header{}, Body: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func startFake(t *testing.T, fn function) (*Hot, *pipeContainer) {
	t.Helper()
	codec, err := protocol.New(protocol.JSONHTTP, protocol.Limits{MaxBody: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := newPipeContainer(t)
	go fn(c, bufio.NewReader(c.stdinR), codec)
	h := newHot(c, codec, 0)
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { _ = h.Close(context.Background()); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Error("Close did not return: a stdio goroutine is stuck")
		}
	})
	return h, c
}

func request(body []byte) *protocol.Request {
	return &protocol.Request{CallID: "call-1", Method: "POST", URL: "http://x/t/a/b", Header: http.Header{}, Body: body}
}

// TestHotCallEndsByItsDeadline: whatever the function does, a call ends by
// its deadline plus a small grace, with one status per kind of failure, and
// the instance never serves again.
func TestHotCallEndsByItsDeadline(t *testing.T) {
	const deadline = 400 * time.Millisecond
	const grace = 300 * time.Millisecond
	big := bytes.Repeat([]byte("x"), 1<<20) // far more than a pipe holds
	cases := []struct {
		name string
		body []byte
		fn   function
		// want is the sentinel the error must wrap; msg a part of its text.
		want error
		msg  string
		// early: the failure is known before the deadline and must be
		// reported at once, not at it.
		early bool
	}{
		{
			name: "exits at start, big body",
			body: big,
			fn:   func(c *pipeContainer, _ *bufio.Reader, _ protocol.Codec) { c.exit(3) },
			want: errdefs.ErrFunction, msg: "exited with code 3", early: true,
		},
		{
			name: "exits at start, small body",
			body: []byte("hi"),
			fn: func(c *pipeContainer, _ *bufio.Reader, _ protocol.Codec) {
				time.Sleep(20 * time.Millisecond)
				c.exit(4)
			},
			want: errdefs.ErrFunction, msg: "exited with code 4", early: true,
		},
		{
			name: "never reads stdin",
			body: big,
			fn:   func(*pipeContainer, *bufio.Reader, protocol.Codec) {},
			want: errdefs.ErrTimeout, msg: "did not read its request",
		},
		{
			name: "reads half the body, then stops",
			body: big,
			fn: func(_ *pipeContainer, in *bufio.Reader, _ protocol.Codec) {
				_, _ = io.CopyN(io.Discard, in, int64(len(big)/2))
			},
			want: errdefs.ErrTimeout,
		},
		{
			name: "reads the request, writes half a frame, stays alive",
			body: []byte("hi"),
			fn: func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
				if _, err := codec.ReadRequest(in); err == nil {
					f := frame(t, codec, "half")
					_, _ = c.stdoutW.Write(f[:len(f)/2])
				}
			},
			want: errdefs.ErrTimeout, msg: "no response before the deadline",
		},
		{
			name: "writes half a frame, then exits",
			body: []byte("hi"),
			fn: func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
				if _, err := codec.ReadRequest(in); err == nil {
					f := frame(t, codec, "half")
					_, _ = c.stdoutW.Write(f[:len(f)/2])
					// containerd reports an exit after the shim has
					// copied the output that came before it.
					time.Sleep(20 * time.Millisecond)
					c.exit(0)
				}
			},
			want: errdefs.ErrFunction, msg: "in the middle of its response", early: true,
		},
		{
			name: "exits mid-body",
			body: big,
			fn: func(c *pipeContainer, in *bufio.Reader, _ protocol.Codec) {
				_, _ = io.CopyN(io.Discard, in, 100<<10)
				c.exit(2)
			},
			want: errdefs.ErrFunction, msg: "exited with code 2", early: true,
		},
		{
			name: "hangs after reading",
			body: []byte("hi"),
			fn: func(_ *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
				_, _ = codec.ReadRequest(in)
			},
			want: errdefs.ErrTimeout,
		},
		{
			name: "garbage after a frame",
			body: []byte("hi"),
			fn: func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
				if _, err := codec.ReadRequest(in); err == nil {
					_, _ = c.stdoutW.Write(append(frame(t, codec, "ok"), "GARBAGE\n"...))
				}
			},
			want: protocol.ErrProtocol, msg: "after the response frame", early: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := startFake(t, tc.fn)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			resp, err := h.Call(ctx, request(tc.body), io.Discard)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("call answered %d %q, want an error", resp.Status, resp.Body)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q: want one wrapping %q and containing %q", err, tc.want, tc.msg)
			}
			limit := deadline + grace
			if tc.early {
				limit = deadline / 2
			}
			if took > limit {
				t.Fatalf("call ended after %s, want within %s", took, limit)
			}
			select {
			case <-h.Done():
			default:
				t.Fatal("a failed call left the instance serving")
			}
			if _, err := h.Call(context.Background(), request([]byte("again")), io.Discard); err == nil {
				t.Fatal("a broken instance served another call")
			}
		})
	}
}

// TestHotServesCallsInOrder: a healthy instance answers each call with
// that call's own bytes, many times over one stdout reader.
func TestHotServesCallsInOrder(t *testing.T) {
	h, _ := startFake(t, serveEcho)
	for i := 0; i < 50; i++ {
		body := fmt.Sprintf("call-%d-%s", i, strings.Repeat("y", i*997))
		resp, err := h.Call(context.Background(), request([]byte(body)), io.Discard)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if string(resp.Body) != body {
			t.Fatalf("call %d got %d bytes, want its own %d", i, len(resp.Body), len(body))
		}
	}
	if err := h.Err(); err != nil {
		t.Fatalf("healthy instance reports %v", err)
	}
}

// TestHotWatcher: what happens on stdout or to the process while no call
// is in flight breaks the instance at once, with a reason that says which.
func TestHotWatcher(t *testing.T) {
	cases := []struct {
		name string
		act  func(c *pipeContainer)
		want error
		msg  string
	}{
		{"output while idle", func(c *pipeContainer) { _, _ = c.stdoutW.Write([]byte("surprise\n")) }, protocol.ErrProtocol, "no call was in flight"},
		{"exit while idle", func(c *pipeContainer) { c.exit(9) }, errdefs.ErrFunction, "exited with code 9"},
		{"stdout closed while idle", func(c *pipeContainer) { c.stdoutW.Close() }, errdefs.ErrFunction, "stdout closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, c := startFake(t, func(*pipeContainer, *bufio.Reader, protocol.Codec) {})
			tc.act(c)
			select {
			case <-h.Done():
			case <-time.After(2 * time.Second):
				t.Fatal("instance still serving after the fault")
			}
			// The reason may sharpen a moment later (stdout closing is
			// seen before the exit status), never change kind.
			deadline := time.Now().Add(time.Second)
			for {
				err := h.Err()
				if !errors.Is(err, tc.want) {
					t.Fatalf("Err() = %v, want %q", err, tc.want)
				}
				if strings.Contains(err.Error(), tc.msg) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Err() = %v, want it to mention %q", err, tc.msg)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestHotCancelledCall: a caller that goes away ends its call at once, and
// the instance, whose stream is now out of step, is broken.
func TestHotCancelledCall(t *testing.T) {
	h, _ := startFake(t, func(_ *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
		_, _ = codec.ReadRequest(in)
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := h.Call(ctx, request([]byte("x")), io.Discard)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("cancelled call ended after %s", took)
	}
	if h.Err() == nil {
		t.Fatal("instance still serving after a cancelled call")
	}
}

// TestHotLogsGoToTheCall: stderr written during a call lands in that
// call's log.
func TestHotLogsGoToTheCall(t *testing.T) {
	h, _ := startFake(t, func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
		for {
			req, err := codec.ReadRequest(in)
			if err != nil {
				return
			}
			fmt.Fprintf(c.stderrW, "log of %s\n", req.Body)
			// Give the stderr pump the line before the answer goes out.
			time.Sleep(20 * time.Millisecond)
			_ = codec.WriteResponse(c.stdoutW, &protocol.Response{Status: 200, Header: http.Header{}, Body: req.Body})
		}
	})
	for _, name := range []string{"first", "second"} {
		var log lockedBuffer
		if _, err := h.Call(context.Background(), request([]byte(name)), &log); err != nil {
			t.Fatal(err)
		}
		if got, want := log.String(), "log of "+name+"\n"; got != want {
			t.Fatalf("log %q, want %q", got, want)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startHTTPFake is startFake for the http format.
func startHTTPFake(t *testing.T, fn function) (*Hot, *pipeContainer) {
	t.Helper()
	codec, err := protocol.New(protocol.HTTP, protocol.Limits{MaxBody: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := newPipeContainer(t)
	go fn(c, bufio.NewReader(c.stdinR), codec)
	h := newHot(c, codec, 0)
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h, c
}

const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// sseFunction streams n events, each only once next lets it, then ends
// the frame and serves the next call the same way.
func sseFunction(n int, next <-chan struct{}) function {
	return func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
		for {
			if _, err := codec.ReadRequest(in); err != nil {
				return
			}
			io.WriteString(c.stdoutW, sseHead)
			for i := 0; i < n; i++ {
				<-next
				io.WriteString(c.stdoutW, chunk(fmt.Sprintf("data: event %d\n\n", i)))
			}
			io.WriteString(c.stdoutW, "0\r\n\r\n")
		}
	}
}

// TestHotStreamsChunkedResponses: each chunk reaches the caller before
// the function writes the next, the stream ends with the frame, and the
// container then serves the next call.
func TestHotStreamsChunkedResponses(t *testing.T) {
	next := make(chan struct{})
	h, _ := startHTTPFake(t, sseFunction(5, next))
	for call := 0; call < 2; call++ {
		resp, err := h.Call(context.Background(), request([]byte("x")), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Stream == nil || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("call %d: %+v, want a stream", call, resp)
		}
		buf := make([]byte, 256)
		for i := 0; i < 5; i++ {
			next <- struct{}{}
			n, err := resp.Stream.Read(buf)
			if want := fmt.Sprintf("data: event %d\n\n", i); err != nil || string(buf[:n]) != want {
				t.Fatalf("call %d event %d: %q, %v", call, i, buf[:n], err)
			}
		}
		if n, err := resp.Stream.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("after the last event: %d, %v", n, err)
		}
		resp.Stream.Close()
		if err := h.Err(); err != nil {
			t.Fatalf("after a clean stream the instance is broken: %v", err)
		}
	}
}

// TestHotStreamFaults: a stream cut by the deadline, the function's
// exit, a bad chunk or the caller going away ends at once with the right
// error, and the instance never serves again.
func TestHotStreamFaults(t *testing.T) {
	cases := []struct {
		name    string
		after   func(c *pipeContainer) // once the first event is out
		closeIt bool
		want    error
		msg     string
	}{
		{"deadline mid-stream", func(*pipeContainer) {}, false, errdefs.ErrTimeout, "deadline passed in the middle of its streamed response"},
		{"exit mid-stream", func(c *pipeContainer) { c.exit(3) }, false, errdefs.ErrFunction, "exited with code 3"},
		{"bad chunk", func(c *pipeContainer) { io.WriteString(c.stdoutW, "zz\r\nnot a chunk\r\n") }, false, protocol.ErrProtocol, "chunk size"},
		{"caller closes early", func(*pipeContainer) {}, true, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			firstRead := make(chan struct{})
			h, _ := startHTTPFake(t, func(c *pipeContainer, in *bufio.Reader, codec protocol.Codec) {
				if _, err := codec.ReadRequest(in); err != nil {
					return
				}
				io.WriteString(c.stdoutW, sseHead+chunk("data: first\n\n"))
				// The fault comes once the first event is through, as in
				// a function that fails some time into its stream.
				<-firstRead
				tc.after(c)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
			defer cancel()
			resp, err := h.Call(ctx, request([]byte("x")), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 256)
			if n, err := resp.Stream.Read(buf); err != nil || string(buf[:n]) != "data: first\n\n" {
				t.Fatalf("first event: %q, %v", buf[:n], err)
			}
			close(firstRead)
			start := time.Now()
			if tc.closeIt {
				resp.Stream.Close()
			} else {
				_, err = io.ReadAll(resp.Stream)
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("stream error %v, want %q mentioning %q", err, tc.want, tc.msg)
				}
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("the stream took %s to end", took)
			}
			select {
			case <-h.Done():
			case <-time.After(time.Second):
				t.Fatal("the instance still serves after a broken stream")
			}
		})
	}
}

// TestHotStreamedRequestBody: a body handed over as a stream reaches the
// function whole; one over its limit is the client's 413, and the
// instance, which got half a frame, is broken.
func TestHotStreamedRequestBody(t *testing.T) {
	h, _ := startHTTPFake(t, serveEcho)
	body := bytes.Repeat([]byte("s"), 3<<20)
	req := request(nil)
	req.BodyStream, req.BodyLength = bytes.NewReader(body), int64(len(body))
	resp, err := h.Call(context.Background(), req, io.Discard)
	if err != nil || !bytes.HasSuffix(resp.Body, body) {
		t.Fatalf("streamed body: %d bytes back, %v", len(resp.Body), err)
	}
	req = request(nil)
	rec := httptestRecorder{}
	req.BodyStream, req.BodyLength = http.MaxBytesReader(rec, io.NopCloser(bytes.NewReader(body)), 1<<20), -1
	_, err = h.Call(context.Background(), req, io.Discard)
	if !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
	if h.Err() == nil {
		t.Fatal("an instance that got half a frame still serves")
	}
}

// httptestRecorder is the ResponseWriter http.MaxBytesReader wants; it
// is never written to.
type httptestRecorder struct{}

func (httptestRecorder) Header() http.Header         { return http.Header{} }
func (httptestRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (httptestRecorder) WriteHeader(int)             {}
