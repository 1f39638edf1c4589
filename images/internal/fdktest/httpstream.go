package fdktest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// streamCall is one call as kilnd sends it in http-stream.
type streamCall struct {
	id, method, url string
	header          http.Header
	body            []byte
	// chunked sends the body without a length, as kilnd does when the
	// client did.
	chunked  bool
	deadline time.Time
}

func (c streamCall) request() *http.Request {
	req, _ := http.NewRequest(http.MethodPost, "http://localhost/call", bytes.NewReader(c.body))
	if c.chunked {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(c.body)), -1
	}
	if c.id == "" {
		c.id = "call-1"
	}
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.url == "" {
		c.url = "http://kiln.test/t/app/fn?q=1"
	}
	if c.deadline.IsZero() {
		c.deadline = time.Now().Add(time.Minute).UTC()
	}
	req.Header.Set("Fn-Call-Id", c.id)
	req.Header.Set("Fn-Deadline", c.deadline.Format(time.RFC3339Nano))
	req.Header.Set("Fn-Intent", "httprequest")
	req.Header.Set("Fn-Http-Method", c.method)
	req.Header.Set("Fn-Http-Request-Url", c.url)
	for k, vs := range c.header {
		if k == "Content-Type" {
			req.Header[k] = vs
			continue
		}
		for _, v := range vs {
			req.Header.Add("Fn-Http-H-"+k, v)
		}
	}
	return req
}

// streamProc is an FDK in http-stream mode.
type streamProc struct {
	*fdkProc
	dir, link string
}

// startStream starts fn in http-stream, with FN_LISTENER in a directory of
// its own as kilnd makes one per container, and waits for the socket.
func (rt Runtime) startStream(t *testing.T, fn string, env ...string) *streamProc {
	t.Helper()
	// Not t.TempDir: a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "fdk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sp := &streamProc{dir: dir, link: filepath.Join(dir, "lsnr.sock")}
	sp.fdkProc = rt.startFDK(t, "http-stream", fn, append([]string{"FN_LISTENER=unix:" + sp.link}, env...)...)
	waitListener(t, sp.fdkProc, sp.link)
	return sp
}

// waitListener waits (bounded, as kilnd does) for link to appear and checks
// it is what kilnd accepts: a symlink to a bare file name in the same
// directory, which is a socket anyone may connect to.
func waitListener(t *testing.T, p *fdkProc, link string) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Lstat(link); err == nil {
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("the FDK exited (%v) without creating %s; stderr:\n%s", p.waitErr, link, p.stderr.String())
		default:
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no %s after 30 s", link)
		}
	}
	fi, err := os.Lstat(link)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is not a symlink: %v %v", link, fi.Mode(), err)
	}
	target, err := os.Readlink(link)
	if err != nil || target == "" || strings.Contains(target, "/") {
		t.Fatalf("%s points to %q (%v), want a bare file name", link, target, err)
	}
	fi, err = os.Stat(link)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s -> %s is not a socket: %v %v", link, target, fi.Mode(), err)
	}
	if perm := fi.Mode().Perm(); perm != 0o666 {
		t.Errorf("socket mode %o, want 666", perm)
	}
}

// streamConn is kilnd's one connection to the function.
type streamConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dial(t *testing.T, link string) *streamConn {
	t.Helper()
	conn, err := net.Dial("unix", link)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(readBound))
	return &streamConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// send writes a call and reads the response head; the body is left to
// the caller.
func (c *streamConn) send(call streamCall) *http.Response {
	c.t.Helper()
	req := call.request()
	errc := make(chan error, 1)
	// Written alongside the read, as net/http's client does: an FDK that
	// answers before it has read everything must not deadlock the test.
	go func() { errc <- req.Write(c.conn) }()
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		c.t.Fatalf("reading the response: %v", err)
	}
	c.t.Cleanup(func() { <-errc })
	return resp
}

// do is send plus the whole body, and checks the connection stays open.
func (c *streamConn) do(call streamCall) (*http.Response, []byte) {
	c.t.Helper()
	resp := c.send(call)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading the response body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		c.t.Errorf("the response's own status is %d, want 200 (the client's goes in Fn-Http-Status)", resp.StatusCode)
	}
	if resp.Close {
		c.t.Errorf("the FDK closes the connection after a call: %v", resp.Header)
	}
	return resp, body
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// CheckHTTPStream checks the http-stream format with EchoFunc: the socket, the
// mapping of a call to and from Fn-* headers over one keep-alive
// connection, and the shutdown.
func (rt Runtime) CheckHTTPStream(t *testing.T) {
	echo := rt.file(t, rt.EchoFunc)
	t.Run("calls over one connection", func(t *testing.T) {
		sp := rt.startStream(t, echo, "ENV1=config-value")
		c := dial(t, sp.link)
		deadline := time.Now().Add(time.Minute).UTC()
		calls := []struct {
			call   streamCall
			status string
		}{
			{streamCall{id: "c1", method: "PUT", url: "http://kiln.test/t/app/fn?a=1&b=2", deadline: deadline,
				header: http.Header{"X-Test": {"a", "b"}, "Content-Type": {"text/plain"}, "X-Status": {"201"}},
				body:   []byte("hello")}, "201"},
			{streamCall{id: "c2", header: http.Header{"Content-Type": {"application/octet-stream"}}, body: randomBytes(1 << 20)}, "200"},
			{streamCall{id: "c3", method: "GET", header: http.Header{"X-Test": {"only"}}}, "200"},
			{streamCall{id: "c4", body: randomBytes(100 << 10), chunked: true}, "200"},
			{streamCall{id: "c5", body: []byte("dropped"), header: http.Header{"X-Status": {"204"}}}, "204"},
			{streamCall{id: "c6", body: randomBytes(1000), header: http.Header{"X-Status": {"404"}}}, "404"},
		}
		for i, tc := range calls {
			resp, body := c.do(tc.call)
			got := func(k string) string { return resp.Header.Get("Fn-Http-H-" + k) }
			if s := resp.Header.Get("Fn-Http-Status"); s != tc.status {
				t.Errorf("call %d: Fn-Http-Status %q, want %q", i, s, tc.status)
			}
			wantBody := tc.call.body
			if tc.status == "204" {
				wantBody = nil
			}
			if !bytes.Equal(body, wantBody) {
				t.Errorf("call %d: body of %d bytes differs from the %d sent", i, len(body), len(wantBody))
			}
			if tc.status != "204" && (resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0) {
				t.Errorf("call %d: a handler that never flushes answered length %d, %v", i, resp.ContentLength, resp.TransferEncoding)
			}
			method, url := tc.call.method, tc.call.url
			if method == "" {
				method = "POST"
			}
			if url == "" {
				url = "http://kiln.test/t/app/fn?q=1"
			}
			want := map[string]string{
				"X-Call-Id": tc.call.id, "X-Method": method, "X-Url": url, "X-Format": "http-stream",
				"X-Config": "config-value", "X-Got-Header": strings.Join(tc.call.header["X-Test"], "|"),
				"X-Content-Type": tc.call.header.Get("Content-Type"),
			}
			for k, v := range want {
				if got(k) != v {
					t.Errorf("call %d: Fn-Http-H-%s = %q, want %q", i, k, got(k), v)
				}
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("call %d: Content-Type %q, want the function's as itself", i, ct)
			}
			if vs := resp.Header.Values("Fn-Http-H-X-Multi"); !reflect.DeepEqual(vs, []string{"1", "2"}) {
				t.Errorf("call %d: Fn-Http-H-X-Multi %q, want both values", i, vs)
			}
			if resp.Header.Get("X-Call-Id") != "" || resp.Header.Get("Fn-Http-H-Content-Type") != "" {
				t.Errorf("call %d: headers outside the mapping: %v", i, resp.Header)
			}
			if i == 0 {
				dl, err := time.Parse(time.RFC3339Nano, got("X-Deadline"))
				if err != nil || !dl.Equal(deadline) {
					t.Errorf("deadline %q (%v), want %v", got("X-Deadline"), err, deadline)
				}
			}
		}
	})
	t.Run("SIGTERM removes the socket", func(t *testing.T) {
		sp := rt.startStream(t, echo)
		// kilnd holds its connection open between calls; the FDK must
		// not wait for it to close.
		c := dial(t, sp.link)
		if _, body := c.do(streamCall{body: []byte("one")}); string(body) != "one" {
			t.Fatalf("body %q", body)
		}
		if err := sp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := sp.wait(30 * time.Second); err != nil {
			t.Fatalf("after SIGTERM: %v, want exit 0", err)
		}
		if left, _ := os.ReadDir(sp.dir); len(left) != 0 {
			t.Errorf("left in the socket directory: %v", left)
		}
		if out, _ := io.ReadAll(sp.stdout); len(out) != 0 {
			t.Errorf("the FDK wrote %q to stdout in http-stream", out)
		}
	})
	t.Run("FN_LISTENER must be unix:PATH", func(t *testing.T) {
		for _, l := range []string{"", "tcp:127.0.0.1:9000", "/tmp/lsnr.sock"} {
			env := []string{}
			if l != "" {
				env = append(env, "FN_LISTENER="+l)
			}
			p := rt.startFDK(t, "http-stream", echo, env...)
			if err := p.wait(30 * time.Second); err == nil || err == errStillRunning {
				t.Errorf("FN_LISTENER=%q: %v, want a non-zero exit", l, err)
			}
			if !strings.Contains(p.stderr.String(), "FN_LISTENER") {
				t.Errorf("FN_LISTENER=%q: stderr %q does not say what is wrong", l, p.stderr.String())
			}
		}
	})
}

func (rt Runtime) statusHTTPStream(t *testing.T) {
	sp := rt.startStream(t, rt.file(t, rt.StatusFunc))
	c := dial(t, sp.link)
	call := func(body string) (*http.Response, []byte) {
		t.Helper()
		return c.do(streamCall{id: "call-1", body: []byte(body)})
	}
	r, body := call("hi")
	if r.Header.Get("Fn-Http-Status") != "202" || !reflect.DeepEqual(r.Header.Values("Fn-Http-H-X-Out"), []string{"1", "2"}) ||
		string(body) != "text POST http://kiln.test/t/app/fn?q=1 call-1" {
		t.Errorf("set status and headers: %v %q", r.Header, body)
	}
	r, body = call("boom")
	if r.Header.Get("Fn-Http-Status") != "500" || !strings.Contains(string(body), "boom") {
		t.Errorf("handler exception: %v %q", r.Header, body)
	}
	r, body = call("resp")
	if r.Header.Get("Fn-Http-Status") != "201" || string(body) != "\x00\xffbin" ||
		!reflect.DeepEqual(r.Header.Values("Fn-Http-H-X-Multi"), []string{"a", "b"}) ||
		r.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("Response object: %v %q", r.Header, body)
	}
	if r, _ := call("again"); r.Header.Get("Fn-Http-Status") != "202" {
		t.Errorf("after an exception: %v", r.Header)
	}
}

func (rt Runtime) conformanceHTTPStream(t *testing.T) {
	sp := rt.startStream(t, rt.Conformance, "ENV1=config-value")
	c := dial(t, sp.link)
	for i, tc := range []struct {
		body    string
		header  http.Header
		payload any
		hdr     *string
	}{
		{`{"name":"kiln"}`, http.Header{"X-Test": {"one"}, "Content-Type": {"application/json"}}, map[string]any{"name": "kiln"}, ptr("one")},
		{"plain text", nil, "plain text", nil},
		{"", http.Header{"X-Test": {"a", "b"}}, "", ptr("a")},
	} {
		resp, body := c.do(streamCall{header: tc.header, body: []byte(tc.body)})
		if resp.Header.Get("Fn-Http-Status") != "200" || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("call %d: %v %q", i, resp.Header, body)
		}
		var got conformance
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("call %d: %q: %v", i, body, err)
		}
		want := conformance{Normal: "Hello World!", Env1: ptr("config-value"), Payload: tc.payload, Header: tc.hdr}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("call %d: got %s, want %s", i, show(got), show(want))
		}
	}
}

// chunkedRequest sends the http format's request with a chunked body, as
// kilnd does when it streams the client's body through.
func (rt Runtime) chunkedRequest(t *testing.T) {
	p := rt.startFDK(t, "http", rt.Conformance, "ENV1=v")
	codec, _ := protocol.New(protocol.HTTP, protocol.Limits{})
	frame := "POST /t/app/fn HTTP/1.1\r\nHost: kiln.test\r\nFn_call_id: c1\r\n" +
		"Fn_deadline: " + time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano) + "\r\n" +
		"Fn_method: POST\r\nFn_request_url: http://kiln.test/t/app/fn\r\nX-Test: chunked\r\n" +
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\n{\"nam\r\n" + "a;ext=1\r\ne\":\"kiln\"}\r\n" + "0\r\nX-Trailer: t\r\n\r\n"
	for i := range 2 {
		if _, err := io.WriteString(p.stdin, frame); err != nil {
			t.Fatal(err)
		}
		resp, err := codec.ReadResponse(p.stdout)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		var got conformance
		if err := json.Unmarshal(resp.Body, &got); err != nil {
			t.Fatalf("call %d: %q: %v", i, resp.Body, err)
		}
		want := conformance{Normal: "Hello World!", Env1: ptr("v"), Payload: map[string]any{"name": "kiln"}, Header: ptr("chunked")}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("call %d: got %s, want %s", i, show(got), show(want))
		}
	}
}

// gate is the file a streaming handler waits for: until it exists, the
// handler cannot finish, so whatever the test reads before opening it was
// sent while the handler was still running.
type gate struct {
	path  string
	timer *time.Timer
	// byWatchdog is closed when the gate opened because the test waited
	// too long for the first event, which is then no proof of streaming.
	byWatchdog chan struct{}
}

func newGate(t *testing.T) *gate {
	g := &gate{path: filepath.Join(t.TempDir(), "gate"), byWatchdog: make(chan struct{})}
	// Without this bound a response held back until the handler returns
	// would hang the test rather than fail it.
	g.timer = time.AfterFunc(30*time.Second, func() {
		close(g.byWatchdog)
		_ = os.WriteFile(g.path, nil, 0o644)
	})
	t.Cleanup(func() { g.timer.Stop() })
	return g
}

// open lets the handler finish; it fails the test if the watchdog had to.
func (g *gate) open(t *testing.T) {
	t.Helper()
	if !g.timer.Stop() {
		<-g.byWatchdog
		t.Fatal("the first event came only once the handler could finish: the response was not streamed")
	}
	if err := os.WriteFile(g.path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func shortDump(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q...", b[:200])
	}
	return fmt.Sprintf("%q", b)
}
