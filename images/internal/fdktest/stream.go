package fdktest

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kiln-run/kiln/protocol"
)

var streamEvents = []string{"data: event 0\n\n", "data: event 1\n\n", "data: event 2\n\n"}

// ReadHead reads a response head from the http format's stdout, as it is
// on the wire: kiln's codec would hide how the body is framed.
func ReadHead(t *testing.T, br *bufio.Reader) (int, http.Header) {
	t.Helper()
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("reading the status line: %v", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if proto != "HTTP/1.1" || err != nil {
		t.Fatalf("status line %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("reading the head: %v", err)
	}
	return status, http.Header(h)
}

// ReadChunk reads one chunk of a chunked body; nil for the last chunk,
// whose trailer section it reads too.
func ReadChunk(t *testing.T, br *bufio.Reader) []byte {
	t.Helper()
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("reading a chunk size: %v", err)
	}
	hex, _, _ := strings.Cut(line, ";")
	n, err := strconv.ParseInt(strings.TrimSpace(hex), 16, 64)
	if err != nil || n < 0 {
		t.Fatalf("chunk size line %q", line)
	}
	if n == 0 {
		for {
			l, err := tp.ReadLine()
			if err != nil {
				t.Fatalf("reading the trailer: %v", err)
			}
			if l == "" {
				return nil
			}
		}
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("reading a chunk of %d bytes: %v", n, err)
	}
	if string(b[n:]) != "\r\n" {
		t.Fatalf("chunk %q not followed by CRLF", b)
	}
	return b[:n]
}

// checkChunkedHead checks a streamed head of the http format.
func checkChunkedHead(t *testing.T, h http.Header) {
	t.Helper()
	if te := h.Values("Transfer-Encoding"); !reflect.DeepEqual(te, []string{"chunked"}) || h.Get("Content-Length") != "" {
		t.Fatalf("a flushed response has Transfer-Encoding %q, Content-Length %q; want chunked and no length",
			te, h.Get("Content-Length"))
	}
}

// CheckStreaming checks that what StreamFunc flushes reaches kilnd while the
// handler runs, in the formats that stream, and that the others still get
// the whole body.
func (rt Runtime) CheckStreaming(t *testing.T) {
	fn := rt.file(t, rt.StreamFunc)
	all := strings.Join(streamEvents, "")
	t.Run("http", func(t *testing.T) {
		p := rt.startFDK(t, protocol.HTTP, fn)
		codec, _ := protocol.New(protocol.HTTP, protocol.Limits{})
		send := func(h http.Header) {
			t.Helper()
			if err := codec.WriteRequest(p.stdin, request("", h)); err != nil {
				t.Fatal(err)
			}
		}
		g := newGate(t)
		send(http.Header{"X-Gate": {g.path}})
		status, h := ReadHead(t, p.stdout)
		if status != 201 || h.Get("X-Stream") != "yes" || h.Get("Content-Type") != "text/event-stream" {
			t.Errorf("streamed head: %d %v", status, h)
		}
		checkChunkedHead(t, h)
		if c := ReadChunk(t, p.stdout); string(c) != streamEvents[0] {
			t.Fatalf("first chunk %q, want %q", c, streamEvents[0])
		}
		g.open(t)
		for _, want := range streamEvents[1:] {
			if c := ReadChunk(t, p.stdout); string(c) != want {
				t.Fatalf("chunk %q, want %q: each flush is one chunk", c, want)
			}
		}
		if c := ReadChunk(t, p.stdout); c != nil {
			t.Fatalf("chunk %q after the last event, want the terminating chunk", c)
		}

		// The same process serves on: a handler that never flushes gets
		// today's Content-Length response.
		send(nil)
		status, h = ReadHead(t, p.stdout)
		if status != 200 || h.Get("Content-Length") != "5" || h.Get("Transfer-Encoding") != "" {
			t.Fatalf("unflushed response head: %d %v", status, h)
		}
		body := make([]byte, 5)
		if _, err := io.ReadFull(p.stdout, body); err != nil || string(body) != "whole" {
			t.Fatalf("unflushed body %q, %v", body, err)
		}
		// And kilnd's own reader takes a streamed response (the gate is
		// open now, so the handler runs through).
		send(http.Header{"X-Gate": {g.path}})
		resp, err := codec.ReadResponse(p.stdout)
		if err != nil || resp.Status != 201 || string(resp.Body) != all {
			t.Fatalf("streamed response through the codec: %v %v", resp, err)
		}
	})
	t.Run("http-stream", func(t *testing.T) {
		sp := rt.startStream(t, fn)
		c := dial(t, sp.link)
		g := newGate(t)
		resp := c.send(streamCall{header: http.Header{"X-Gate": {g.path}}})
		if resp.StatusCode != 200 || resp.Header.Get("Fn-Http-Status") != "201" ||
			resp.Header.Get("Fn-Http-H-X-Stream") != "yes" || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("streamed head: %d %v", resp.StatusCode, resp.Header)
		}
		if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) {
			t.Errorf("a flushed response has Transfer-Encoding %q, want chunked", resp.TransferEncoding)
		}
		first := make([]byte, len(streamEvents[0]))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != streamEvents[0] {
			t.Fatalf("first event %q, %v", first, err)
		}
		g.open(t)
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != strings.Join(streamEvents[1:], "") {
			t.Fatalf("rest of the stream %q, %v", rest, err)
		}
		r, body := c.do(streamCall{})
		if r.Header.Get("Fn-Http-Status") != "200" || string(body) != "whole" || r.ContentLength != 5 {
			t.Errorf("unflushed response on the same connection: %v %d %q", r.Header, r.ContentLength, body)
		}
		if r, body := c.do(streamCall{header: http.Header{"X-Gate": {g.path}}}); r.Header.Get("Fn-Http-Status") != "201" || string(body) != all {
			t.Errorf("second stream: %v %q", r.Header, body)
		}
	})
	t.Run("formats that cannot stream", func(t *testing.T) {
		g := newGate(t)
		g.open(t)
		for _, format := range []string{protocol.JSONHTTP, protocol.JSON} {
			p := rt.startFDK(t, format, fn)
			codec, _ := protocol.New(format, protocol.Limits{})
			if err := codec.WriteRequest(p.stdin, request("", http.Header{"X-Gate": {g.path}})); err != nil {
				t.Fatal(err)
			}
			resp, err := codec.ReadResponse(p.stdout)
			if err != nil || resp.Status != 201 || resp.Header.Get("X-Stream") != "yes" || string(resp.Body) != all {
				t.Errorf("%s: %v %v, want the whole body at once", format, resp, err)
			}
		}
	})
}

// CheckSSE checks the runtime's example SSE function, shortened.
func (rt Runtime) CheckSSE(t *testing.T) {
	events := func(n int) []string {
		var es []string
		for i := 1; i <= n; i++ {
			es = append(es, "data: event "+strconv.Itoa(i)+"\n\n")
		}
		return es
	}
	t.Run("http", func(t *testing.T) {
		p := rt.startFDK(t, protocol.HTTP, rt.SSE)
		codec, _ := protocol.New(protocol.HTTP, protocol.Limits{})
		for _, tc := range []struct {
			header http.Header
			want   []string
		}{
			{http.Header{"X-Events": {"3"}, "X-Gap-Ms": {"0"}}, events(3)},
			{http.Header{"X-Gap-Ms": {"1"}}, events(5)},
		} {
			if err := codec.WriteRequest(p.stdin, request("", tc.header)); err != nil {
				t.Fatal(err)
			}
			status, h := ReadHead(t, p.stdout)
			if status != 200 || h.Get("Content-Type") != "text/event-stream" {
				t.Errorf("head %d %v", status, h)
			}
			checkChunkedHead(t, h)
			var got []string
			for c := ReadChunk(t, p.stdout); c != nil; c = ReadChunk(t, p.stdout) {
				got = append(got, string(c))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%v: chunks %q, want %q", tc.header, got, tc.want)
			}
		}
	})
	t.Run("http-stream", func(t *testing.T) {
		sp := rt.startStream(t, rt.SSE)
		c := dial(t, sp.link)
		resp, body := c.do(streamCall{header: http.Header{"X-Events": {"4"}, "X-Gap-Ms": {"0"}}})
		if resp.Header.Get("Fn-Http-Status") != "200" || resp.Header.Get("Content-Type") != "text/event-stream" ||
			!reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) {
			t.Errorf("head %v %v", resp.Header, resp.TransferEncoding)
		}
		if want := strings.Join(events(4), ""); string(body) != want {
			t.Errorf("body %s, want %q", shortDump(body), want)
		}
	})
}
