package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	for _, f := range Formats() {
		c, err := New(f, Limits{})
		if Stdio(f) != (err == nil) {
			t.Errorf("New(%q): %v, want a codec exactly for stdio formats", f, err)
		}
		if err == nil && c.Format() != f {
			t.Errorf("New(%q).Format() = %q", f, c.Format())
		}
	}
	if _, err := New("xml", Limits{}); err == nil {
		t.Error("New(xml) succeeded")
	}
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestRoundTripRequest(t *testing.T) {
	binary := randomBytes(1 << 20)
	cases := []struct {
		name    string
		req     *Request
		formats []string // nil: every hot format
	}{
		{name: "sample", req: sampleRequest()},
		{name: "empty body", req: &Request{CallID: "c1", Method: "GET", URL: "http://h/", Deadline: time.Unix(1700000000, 0)}},
		{name: "no deadline", req: &Request{CallID: "c2", Method: "DELETE", URL: "http://h/x"}},
		{name: "multi-value headers", req: &Request{
			CallID: "c3", Method: "PUT", URL: "http://h:1/a%20b/c?q=%C3%A9&r",
			Header: http.Header{"X-A": {"1", "2", "3"}, "Cookie": {"a=b; c=d"}, "X-Empty": {""}, "X-Utf8": {"héllo"}},
			Body:   []byte("plain text\nwith lines\r\n"),
		}},
		{name: "escapes", req: &Request{
			CallID: `id"\`, Method: "POST", URL: "http://h/",
			Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
			Body:   []byte("quote\" backslash\\ tab\t nul\x00 ctl\x1f u2028\u2028 emoji😀 <&>"),
		}},
		{name: "json body", req: &Request{
			CallID: "c4", Method: "POST", URL: "http://h/",
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   []byte(`[1,"two",{"three":null}]`),
		}},
		{name: "binary 1MiB", req: &Request{
			CallID: "c5", Method: "POST", URL: "http://h/upload",
			Header: http.Header{"Content-Type": {"application/octet-stream"}},
			Body:   binary,
		}, formats: []string{HTTP, JSONHTTP}},
		{name: "hop-by-hop dropped", req: &Request{
			CallID: "c6", Method: "GET", URL: "http://h/",
			Header: http.Header{
				"Connection": {"keep-alive, X-Private"}, "X-Private": {"p"}, "Keep-Alive": {"300"},
				"Te": {"trailers"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"websocket"},
				"Proxy-Authorization": {"x"}, "Content-Length": {"99"}, "Expect": {"100-continue"},
				"X-Kept": {"k"},
			},
		}},
	}
	for _, tc := range cases {
		formats := tc.formats
		if formats == nil {
			formats = hotFormats
		}
		for _, format := range formats {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				c := newCodec(t, format, Limits{MaxBody: 2 << 20})
				got, err := c.ReadRequest(reader(encodeRequest(t, c, tc.req)))
				if err != nil {
					t.Fatal(err)
				}
				want := *tc.req
				want.Header = wantHeader(tc.req.Header)
				if err := diffRequest(got, &want); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

func TestRoundTripResponse(t *testing.T) {
	binary := randomBytes(1 << 20)
	cases := []struct {
		name     string
		resp     *Response
		want     *Response // nil: same as resp, minus dropped headers
		formats  []string
		skipHTTP bool
	}{
		{name: "sample", resp: sampleResponse()},
		{name: "zero status is 200", resp: &Response{Body: []byte("ok")}, want: &Response{Status: 200, Body: []byte("ok")}},
		{name: "empty body", resp: &Response{Status: 200}},
		{name: "404", resp: &Response{Status: 404, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("not found")}},
		{name: "500", resp: &Response{Status: 500, Body: []byte("boom")}},
		{name: "unusual status", resp: &Response{Status: 599, Body: []byte("x")}},
		{name: "redirect", resp: &Response{Status: 302, Header: http.Header{"Location": {"/elsewhere"}}}},
		{name: "204 with body", resp: &Response{Status: 204, Body: []byte("dropped")}, formats: []string{HTTP},
			want: &Response{Status: 204}},
		{name: "204 keeps body", resp: &Response{Status: 204, Body: []byte("kept")}, formats: []string{JSON, JSONHTTP, CloudEvent}},
		{name: "304", resp: &Response{Status: 304, Header: http.Header{"Etag": {`"v1"`}}}},
		{name: "multi-value headers", resp: &Response{Status: 200, Header: http.Header{
			"Set-Cookie": {"a=1; Path=/", "b=2"}, "Vary": {"Accept", "Origin"}, "X-Empty": {""},
		}}},
		{name: "hop-by-hop dropped", resp: &Response{Status: 200, Header: http.Header{
			"Connection": {"close"}, "Transfer-Encoding": {"chunked"}, "Content-Length": {"5"}, "X-Kept": {"k"},
		}, Body: []byte("12345")}},
		{name: "binary 1MiB", resp: &Response{Status: 200, Body: binary}, formats: []string{HTTP, JSONHTTP}},
		{name: "escapes", resp: &Response{Status: 200, Body: []byte("\"\\\x00\n\u2029é")}},
		{name: "json string body", resp: &Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(` "just a string"`)}},
	}
	for _, tc := range cases {
		formats := tc.formats
		if formats == nil {
			formats = hotFormats
		}
		for _, format := range formats {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				c := newCodec(t, format, Limits{MaxBody: 2 << 20})
				got, err := c.ReadResponse(reader(encodeResponse(t, c, tc.resp)))
				if err != nil {
					t.Fatal(err)
				}
				want := tc.want
				if want == nil {
					w := *tc.resp
					w.Header = wantHeader(w.Header)
					want = &w
				}
				if err := diffResponse(got, want); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// TestBackToBack checks the property hot containers depend on: a read
// consumes exactly one frame, leaving the next frame and any excess bytes
// in the shared reader.
func TestBackToBack(t *testing.T) {
	const excess = "GARBAGE\n"
	for _, format := range hotFormats {
		for _, d := range directions {
			t.Run(format+"/"+d.name, func(t *testing.T) {
				c := newCodec(t, format, Limits{})
				var values []any
				if d.name == "request" {
					r2 := sampleRequest()
					r2.CallID, r2.Body = "second", []byte("2")
					values = []any{sampleRequest(), r2}
				} else {
					values = []any{sampleResponse(), &Response{Status: 202, Body: []byte("second")}}
				}
				var buf bytes.Buffer
				for _, v := range values {
					if err := d.encode(c, &buf, v); err != nil {
						t.Fatal(err)
					}
				}
				buf.WriteString(excess)
				r := reader(buf.Bytes())
				for _, v := range values {
					got, err := d.decode(c, r)
					if err != nil {
						t.Fatal(err)
					}
					want := v
					if req, ok := v.(*Request); ok {
						w := *req
						w.Header = wantHeader(w.Header)
						want = &w
					}
					if err := d.diff(got, want); err != nil {
						t.Fatal(err)
					}
				}
				if r.Buffered() != len(excess) {
					t.Errorf("Buffered() = %d after two frames, want %d", r.Buffered(), len(excess))
				}
				rest, _ := io.ReadAll(r)
				if string(rest) != excess {
					t.Errorf("left %q, want %q", rest, excess)
				}
			})
		}
	}
}

// TestSplitReads feeds frames one byte per Read, the worst a pipe can do,
// and with a reader buffer smaller than the frame.
func TestSplitReads(t *testing.T) {
	for _, format := range hotFormats {
		for _, d := range directions {
			t.Run(format+"/"+d.name, func(t *testing.T) {
				c := newCodec(t, format, Limits{})
				var v any = sampleResponse()
				if d.name == "request" {
					v = sampleRequest()
				}
				var buf bytes.Buffer
				if err := d.encode(c, &buf, v); err != nil {
					t.Fatal(err)
				}
				if err := d.encode(c, &buf, v); err != nil {
					t.Fatal(err)
				}
				r := bufio.NewReaderSize(iotestOneByte{bytes.NewReader(buf.Bytes())}, 16)
				for range 2 {
					if _, err := d.decode(c, r); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := d.decode(c, r); err != io.EOF {
					t.Fatalf("after the last frame: %v, want io.EOF", err)
				}
			})
		}
	}
}

type iotestOneByte struct{ r io.Reader }

func (o iotestOneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestEOFAtFrameStart(t *testing.T) {
	for _, format := range hotFormats {
		for _, d := range directions {
			for _, in := range []string{"", "\n", "\r\n\r\n"} {
				t.Run(format+"/"+d.name, func(t *testing.T) {
					c := newCodec(t, format, Limits{})
					_, err := d.decode(c, reader([]byte(in)))
					if !errors.Is(err, io.EOF) || errors.Is(err, ErrProtocol) {
						t.Errorf("read of %q: %v, want io.EOF", in, err)
					}
				})
			}
		}
	}
}

// TestTruncated cuts valid frames at every length: each prefix must fail
// as a protocol error, never as a clean EOF, a hang or a success.
func TestTruncated(t *testing.T) {
	for _, format := range hotFormats {
		for _, d := range directions {
			t.Run(format+"/"+d.name, func(t *testing.T) {
				c := newCodec(t, format, Limits{})
				var v any = sampleResponse()
				if d.name == "request" {
					v = sampleRequest()
				}
				var buf bytes.Buffer
				if err := d.encode(c, &buf, v); err != nil {
					t.Fatal(err)
				}
				frame := buf.Bytes()
				// A JSON object is complete before its trailing newline.
				full := len(bytes.TrimRight(frame, "\n"))
				if format == HTTP || format == JSONHTTP {
					full = len(frame)
				}
				for n := 1; n < full; n++ {
					_, err := d.decode(c, reader(frame[:n]))
					if !errors.Is(err, ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("prefix of %d/%d bytes: %v, want ErrProtocol wrapping io.ErrUnexpectedEOF", n, len(frame), err)
					}
				}
			})
		}
	}
}

func TestGarbage(t *testing.T) {
	garbage := []string{
		"this is not a frame\n",
		"\x00\x01\x02\x03\n",
		"{\"unterminated\": [1, 2}\n",
		"[1,2,3]\n\n",
		"null\n\n",
		"HTTP/2 200 OK\r\n\r\n",
		"GET / HTTP/9.9\r\n\r\n",
		`{"status_code":"two hundred","body":5,"content_length":"x","data":{"x":1},"extensions":{"protocol":{"status_code":"x"}}}` + "\n\n",
	}
	for _, format := range hotFormats {
		for _, d := range directions {
			t.Run(format+"/"+d.name, func(t *testing.T) {
				c := newCodec(t, format, Limits{})
				for _, g := range garbage {
					_, err := d.decode(c, reader([]byte(g)))
					if !errors.Is(err, ErrProtocol) {
						t.Errorf("%q: %v, want ErrProtocol", g, err)
					}
				}
			})
		}
	}
}

// TestUnterminatedLine feeds megabytes without a frame end: the read must
// give up at its bound rather than buffer it all.
func TestUnterminatedLine(t *testing.T) {
	starts := map[string]string{HTTP: "HTTP/1.1 200 OK\r\nX-A: ", JSON: `{"body":"`, JSONHTTP: `{"headers":"`, CloudEvent: `{"data":"`}
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			c := newCodec(t, format, Limits{MaxBody: 1024})
			in := io.MultiReader(strings.NewReader(starts[format]), &endless{})
			_, err := c.ReadResponse(bufio.NewReader(in))
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("unterminated frame: %v, want ErrProtocol", err)
			}
		})
	}
}

// endless yields 'a' forever, failing the test by running out of memory
// (or time) if a reader has no bound.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	if e.n > 64<<20 {
		return 0, errors.New("reader is unbounded: read 64 MiB")
	}
	return len(p), nil
}

func TestBodyTooLarge(t *testing.T) {
	const limit = 16
	big := bytes.Repeat([]byte("x"), limit+1)
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			small := newCodec(t, format, Limits{MaxBody: limit})
			large := newCodec(t, format, Limits{})

			var buf bytes.Buffer
			err := small.WriteRequest(&buf, &Request{Method: "POST", URL: "http://h/", Body: big})
			if !errors.Is(err, ErrBodyTooLarge) || buf.Len() != 0 {
				t.Errorf("WriteRequest over limit: %v, %d bytes written; want ErrBodyTooLarge and nothing", err, buf.Len())
			}
			err = small.WriteResponse(&buf, &Response{Body: big})
			if !errors.Is(err, ErrBodyTooLarge) || buf.Len() != 0 {
				t.Errorf("WriteResponse over limit: %v, %d bytes written", err, buf.Len())
			}

			frame := encodeResponse(t, large, &Response{Status: 200, Body: big})
			_, err = small.ReadResponse(reader(frame))
			if !errors.Is(err, ErrBodyTooLarge) || !errors.Is(err, ErrProtocol) {
				t.Errorf("ReadResponse over limit: %v, want ErrBodyTooLarge and ErrProtocol", err)
			}
			frame = encodeRequest(t, large, &Request{Method: "POST", URL: "http://h/", Body: big})
			_, err = small.ReadRequest(reader(frame))
			if !errors.Is(err, ErrBodyTooLarge) {
				t.Errorf("ReadRequest over limit: %v, want ErrBodyTooLarge", err)
			}

			// At the limit exactly is fine.
			frame = encodeResponse(t, large, &Response{Status: 200, Body: big[:limit]})
			if _, err := small.ReadResponse(reader(frame)); err != nil {
				t.Errorf("body at the limit: %v", err)
			}
		})
	}
}

// TestHugeLengthNoAllocation announces an enormous body and sends none: the
// refusal must come before any allocation of that size.
func TestHugeLengthNoAllocation(t *testing.T) {
	frames := map[string]string{
		HTTP + "/length":  "HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
		HTTP + "/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n",
		JSONHTTP:          `{"status_code":200,"content_length":999999999999}` + "\n\n",
	}
	for name, frame := range frames {
		format, _, _ := strings.Cut(name, "/")
		t.Run(name, func(t *testing.T) {
			c := newCodec(t, format, Limits{})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := c.ReadResponse(reader([]byte(frame)))
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrBodyTooLarge) || !errors.Is(err, ErrProtocol) {
				t.Errorf("%v, want ErrBodyTooLarge", err)
			}
			if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
				t.Errorf("allocated %d bytes refusing the frame", d)
			}
		})
	}
	// A plausible length that never arrives costs at most one read step.
	t.Run("announced but absent", func(t *testing.T) {
		c := newCodec(t, JSONHTTP, Limits{MaxBody: 512 << 20})
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := c.ReadResponse(reader([]byte(`{"content_length":500000000}` + "\n\nabc")))
		runtime.ReadMemStats(&after)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%v, want unexpected EOF", err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 4<<20 {
			t.Errorf("allocated %d bytes for a body that never came", d)
		}
	})
}

func TestWriteIsOneCall(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			c := newCodec(t, format, Limits{})
			var w countingWriter
			if err := c.WriteRequest(&w, sampleRequest()); err != nil {
				t.Fatal(err)
			}
			if err := c.WriteResponse(&w, sampleResponse()); err != nil {
				t.Fatal(err)
			}
			if w.calls != 2 {
				t.Errorf("%d Write calls for two frames", w.calls)
			}
		})
	}
}

type countingWriter struct{ calls int }

func (w *countingWriter) Write(p []byte) (int, error) { w.calls++; return len(p), nil }

// TestWriteRefusesInjection: no header, method or URL may smuggle a line
// break into a frame, which would let a client forge a second frame.
func TestWriteRefusesInjection(t *testing.T) {
	bad := []*Request{
		{Method: "GET", URL: "http://h/", Header: http.Header{"X-A": {"v\r\nX-B: forged"}}},
		{Method: "GET", URL: "http://h/", Header: http.Header{"Bad Name": {"v"}}},
		{Method: "GET", URL: "http://h/", Header: http.Header{"X-A\n": {"v"}}},
	}
	for _, format := range hotFormats {
		c := newCodec(t, format, Limits{})
		for _, req := range bad {
			var buf bytes.Buffer
			if err := c.WriteRequest(&buf, req); err == nil || buf.Len() != 0 {
				t.Errorf("%s: WriteRequest(%v) = %v, %d bytes; want an error and nothing written", format, req.Header, err, buf.Len())
			}
			resp := &Response{Status: 200, Header: req.Header}
			if err := c.WriteResponse(&buf, resp); err == nil || buf.Len() != 0 {
				t.Errorf("%s: WriteResponse(%v) = %v; want an error", format, req.Header, err)
			}
		}
		for _, status := range []int{-1, 100, 101, 1000} {
			if err := c.WriteResponse(io.Discard, &Response{Status: status}); err == nil {
				t.Errorf("%s: status %d accepted", format, status)
			}
		}
	}
	c := newCodec(t, HTTP, Limits{})
	for _, req := range []*Request{
		{Method: "GET /x HTTP/1.1\r\n", URL: "http://h/"},
		{Method: "GET", URL: "http://h/\r\nX: y"},
		{Method: "GET", URL: "http://h/", CallID: "a\nb"},
	} {
		if err := c.WriteRequest(io.Discard, req); err == nil {
			t.Errorf("http: WriteRequest(%q %q) accepted", req.Method, req.URL)
		}
	}
	// A raw space in a query cannot split the request line.
	frame := encodeRequest(t, c, &Request{Method: "GET", URL: "http://h/p?a b"})
	if line, _, _ := strings.Cut(string(frame), "\r\n"); line != "GET /p?a%20b HTTP/1.1" {
		t.Errorf("request line %q", line)
	}
}

func TestHTTPResponses(t *testing.T) {
	cases := []struct {
		name  string
		frame string
		want  *Response
		err   error
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
			&Response{Status: 200, Header: http.Header{"X-A": {"1"}}, Body: []byte("hello, world")}, nil},
		{"chunked empty", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &Response{Status: 200}, nil},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", &Response{Status: 200, Body: []byte("ok")}, nil},
		{"HTTP/1.0 with length", "HTTP/1.0 201 Created\r\nContent-Length: 0\r\n\r\n", &Response{Status: 201}, nil},
		{"no reason", "HTTP/1.1 299\r\nContent-Length: 0\r\n\r\n", &Response{Status: 299}, nil},
		{"204 without length", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", &Response{Status: 204, Header: http.Header{"X-A": {"1"}}}, nil},
		{"304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", &Response{Status: 304}, nil},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\nContent-Length: 0\r\n\r\n", &Response{Status: 200, Header: http.Header{"X-A": {"one two"}}}, nil},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", &Response{Status: 200, Body: []byte("x")}, nil},
		{"lower-case names", "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\nx",
			&Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("x")}, nil},
		{"read until EOF", "HTTP/1.1 200 OK\r\n\r\nbody", nil, ErrProtocol},
		{"HTTP/1.0 until EOF", "HTTP/1.0 200 OK\r\n\r\nbody", nil, ErrProtocol},
		{"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", nil, ErrProtocol},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", nil, ErrProtocol},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", nil, ErrProtocol},
		{"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nx", nil, ErrProtocol},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", nil, ErrProtocol},
		{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n", nil, ErrProtocol},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n", nil, ErrProtocol},
		{"fold at start", "HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 0\r\n\r\n", nil, ErrProtocol},
		{"status letters", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", nil, ErrProtocol},
	}
	c := newCodec(t, HTTP, Limits{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.ReadResponse(reader([]byte(tc.frame)))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("%v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := diffResponse(got, tc.want); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestHTTPRequests(t *testing.T) {
	c := newCodec(t, HTTP, Limits{})
	// What a plain HTTP client would send, without kiln's headers.
	got, err := c.ReadRequest(reader([]byte("PUT /a?b=c HTTP/1.1\r\nHost: example\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{Method: "PUT", URL: "http://example/a?b=c", Header: http.Header{"X-A": {"1"}}, Body: []byte("abc")}
	if err := diffRequest(got, want); err != nil {
		t.Error(err)
	}
	// Without a length a request simply has no body.
	got, err = c.ReadRequest(reader([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n")))
	if err != nil || len(got.Body) != 0 {
		t.Errorf("bodyless request: %v, %q", err, got.Body)
	}
	for _, bad := range []string{
		"GET  / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1 extra\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nFn_deadline: tomorrow\r\n\r\n",
	} {
		if _, err := c.ReadRequest(reader([]byte(bad))); !errors.Is(err, ErrProtocol) {
			t.Errorf("%q: %v, want ErrProtocol", bad, err)
		}
	}
}

// TestHTTPInterop parses our frames with net/http, an independent reader.
func TestHTTPInterop(t *testing.T) {
	c := newCodec(t, HTTP, Limits{})
	r := reader(encodeRequest(t, c, sampleRequest()))
	req, err := http.ReadRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if req.Method != "POST" || req.Host != "fn.example:8080" || req.RequestURI != "/t/app/hello?x=1&y=two" ||
		req.Header.Get("Fn_call_id") != sampleRequest().CallID || string(body) != string(sampleRequest().Body) {
		t.Errorf("net/http read %s %s %s %v %q", req.Method, req.Host, req.RequestURI, req.Header, body)
	}

	r = reader(encodeResponse(t, c, sampleResponse()))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 201 || resp.Header.Values("Set-Cookie")[1] != "b=2" || string(body) != string(sampleResponse().Body) {
		t.Errorf("net/http read %d %v %q", resp.StatusCode, resp.Header, body)
	}

	// And the other way: a response written by net/http, chunked.
	var buf bytes.Buffer
	hr := &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1, TransferEncoding: []string{"chunked"},
		Header: http.Header{"X-A": {"1"}}, Body: io.NopCloser(strings.NewReader("streamed body"))}
	if err := hr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadResponse(reader(buf.Bytes()))
	if err != nil {
		t.Fatalf("%q: %v", buf.Bytes(), err)
	}
	if string(got.Body) != "streamed body" || got.Header.Get("X-A") != "1" {
		t.Errorf("read %+v", got)
	}
}

func TestJSONResponses(t *testing.T) {
	cases := []struct {
		name  string
		frame string
		want  *Response
	}{
		{"missing status", `{"body":"hi"}`, &Response{Status: 200, Body: []byte("hi")}},
		{"content_type wins", `{"body":"{}","content_type":"application/json","protocol":{"status_code":202,"headers":{"Content-Type":["text/plain"]}}}`,
			&Response{Status: 202, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte("{}")}},
		{"string header values", `{"protocol":{"headers":{"x-one":"1","X-Two":["2","3"],"X-Null":null}}}`,
			&Response{Status: 200, Header: http.Header{"X-One": {"1"}, "X-Two": {"2", "3"}}}},
		{"multi-line, unknown fields", "\n{\n  \"body\": \"a}b{\\\"\",\n  \"extra\": [1, {\"x\": \"}\"}]\n}\n",
			&Response{Status: 200, Body: []byte("a}b{\"")}},
		{"hop-by-hop dropped", `{"protocol":{"headers":{"Connection":["close"],"Content-Length":["3"],"X-A":["1"]}}}`,
			&Response{Status: 200, Header: http.Header{"X-A": {"1"}}}},
	}
	c := newCodec(t, JSON, Limits{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.ReadResponse(reader([]byte(tc.frame)))
			if err != nil {
				t.Fatal(err)
			}
			if err := diffResponse(got, tc.want); err != nil {
				t.Error(err)
			}
		})
	}
	for _, bad := range []string{
		`{"body":5}`,
		`{"protocol":{"status_code":100}}`,
		`{"protocol":{"status_code":1000}}`,
		`{"protocol":{"headers":{"Bad Name":["x"]}}}`,
		`{"protocol":{"headers":{"X":["a\r\nb"]}}}`,
		`{"content_type":"a\nb"}`,
		`"a string"`,
	} {
		if _, err := c.ReadResponse(reader([]byte(bad))); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", bad, err)
		}
	}
}

func TestCloudEventData(t *testing.T) {
	c := newCodec(t, CloudEvent, Limits{})
	cases := []struct {
		name, ct, body, data, back string
	}{
		{"json object embedded", "application/json", `{"a":1}`, `{"a":1}`, `{"a":1}`},
		{"json compacted", "application/json; charset=utf-8", "{\n  \"a\": [1, 2],\n  \"s\": \"x y\"\n}\n", `{"a":[1,2],"s":"x y"}`, `{"a":[1,2],"s":"x y"}`},
		{"vendor json", "application/vnd.api+json", `[1]`, `[1]`, `[1]`},
		{"json null", "application/json", `null`, `null`, `null`},
		{"json string stays a string", "application/json", `"hi"`, `"\"hi\""`, `"hi"`},
		{"invalid json is a string", "application/json", `{"a":`, `"{\"a\":"`, `{"a":`},
		{"text is a string", "text/plain", `{"a":1}`, `"{\"a\":1}"`, `{"a":1}`},
		{"empty", "application/json", ``, `""`, ``},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &Request{Method: "POST", URL: "http://h/", Header: http.Header{"Content-Type": {tc.ct}}, Body: []byte(tc.body)}
			frame := encodeRequest(t, c, req)
			if bytes.Count(frame, []byte("\n")) != 1 {
				t.Errorf("frame is not one line: %q", frame)
			}
			_, data, ok := bytes.Cut(frame, []byte(`"data":`))
			if !ok || string(bytes.TrimSuffix(data, []byte("}\n"))) != tc.data {
				t.Errorf("data %s, want %s", data, tc.data)
			}
			got, err := c.ReadRequest(reader(frame))
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Body) != tc.back {
				t.Errorf("read back %q, want %q", got.Body, tc.back)
			}
		})
	}
	// A function's answer: string data is text, other data raw JSON.
	for frame, want := range map[string]string{
		`{"contentType":"text/plain","data":"hello"}`:                                       "hello",
		`{"contentType":"application/json","data":{"k": "v"}}`:                              `{"k": "v"}`,
		`{"contentType":"application/json","data":null}`:                                    "null",
		`{"contentType":"text/plain","data":null}`:                                          "",
		`{"contentType":"text/plain"}`:                                                      "",
		`{"extensions":{"protocol":{"status_code":404,"headers":{"X":["y"]}}},"data":"nf"}`: "nf",
	} {
		got, err := c.ReadResponse(reader([]byte(frame)))
		if err != nil {
			t.Errorf("%s: %v", frame, err)
			continue
		}
		if string(got.Body) != want {
			t.Errorf("%s: body %q, want %q", frame, got.Body, want)
		}
	}
	got, err := c.ReadResponse(reader([]byte(`{"contentType":"text/html","extensions":{"protocol":{"status_code":404}}}`)))
	if err != nil || got.Status != 404 || got.Header.Get("Content-Type") != "text/html" {
		t.Errorf("status and content type: %+v, %v", got, err)
	}
}

func TestStripHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":          {"close, X-Private", "Upgrade"},
		"X-Private":           {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Authenticate":  {"Basic"},
		"Proxy-Authorization": {"Basic x"},
		"Proxy-Connection":    {"keep-alive"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-T"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"h2c"},
		"Content-Type":        {"text/plain"},
		"Content-Length":      {"5"},
	}
	StripHopByHop(h)
	want := http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"5"}}
	if !headerEqual(h, want) {
		t.Errorf("got %v, want %v", h, want)
	}
}

func TestDefaultEnv(t *testing.T) {
	req := sampleRequest()
	req.Header.Set("Bad=Name", "x")
	req.Header.Set("X-Nul", "a\x00b")
	env := DefaultEnv(req)
	for _, kv := range env {
		if strings.Contains(kv, "Bad=Name") || strings.Contains(kv, "\x00") {
			t.Errorf("unsafe variable %q", kv)
		}
	}
	back, err := RequestFromEnv(append([]string{"PATH=/bin", "FN_FORMAT=default", "FN_HEADER_=x", "junk"}, env...))
	if err != nil {
		t.Fatal(err)
	}
	want := sampleRequest()
	want.Body = nil
	want.Header = http.Header{
		"Accept":       {"text/plain, application/json"},
		"Content-Type": {"application/json"},
		"User-Agent":   {"kiln-test/1.0"},
		"X-Multi":      {"a, b, c"},
	}
	if err := diffRequest(back, want); err != nil {
		t.Error(err)
	}
	if _, err := RequestFromEnv([]string{"FN_DEADLINE=soon"}); err == nil {
		t.Error("bad FN_DEADLINE accepted")
	}
}

func TestDeadlineRange(t *testing.T) {
	// In range locally but not in UTC: refused rather than re-encoded as a
	// year no reader accepts.
	if _, err := parseDeadline("0000-01-01T00:00:00+01:00"); err == nil {
		t.Error("deadline before year 1 UTC accepted")
	}
	d, err := parseDeadline("2024-05-06T09:08:09.25+02:00")
	if err != nil || !d.Equal(time.Date(2024, 5, 6, 7, 8, 9, 250e6, time.UTC)) {
		t.Errorf("%v, %v", d, err)
	}
}
