package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/url"
	"testing"
)

// Each decoder gets its own target so `go test -fuzz` can run them one at
// a time; anchor the name (-fuzz='^FuzzHTTPReadRequest$') since some are
// prefixes of others.

func FuzzHTTPReadRequest(f *testing.F)        { fuzzRead(f, HTTP, false) }
func FuzzHTTPReadResponse(f *testing.F)       { fuzzRead(f, HTTP, true) }
func FuzzJSONReadRequest(f *testing.F)        { fuzzRead(f, JSON, false) }
func FuzzJSONReadResponse(f *testing.F)       { fuzzRead(f, JSON, true) }
func FuzzJSONHTTPReadRequest(f *testing.F)    { fuzzRead(f, JSONHTTP, false) }
func FuzzJSONHTTPReadResponse(f *testing.F)   { fuzzRead(f, JSONHTTP, true) }
func FuzzCloudEventReadRequest(f *testing.F)  { fuzzRead(f, CloudEvent, false) }
func FuzzCloudEventReadResponse(f *testing.F) { fuzzRead(f, CloudEvent, true) }

// fuzzLimit keeps allocations per input small; the bounds scale with it.
const fuzzLimit = 64 << 10

var fuzzSeeds = map[string][]string{
	HTTP: {
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.0 204 No Content\nX: a\n  folded\n\n",
		"GET /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: X-Y\r\nX-Y: z\r\n\r\nabc",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
	},
	JSON: {
		`{"body":"\u00e9\ud83d\ude00","protocol":{"status_code":201,"headers":{"a":"b","C":["d","e"]}}}`,
		`{"call_id":"x","deadline":"2024-01-01T00:00:00+05:00","body":"b","content_type":"text/plain","protocol":{"method":"GET","request_url":"u","headers":{"content-type":["x"]}}}`,
		"\n\n{ \"body\" : \"}\" }\n",
	},
	JSONHTTP: {
		`{"status_code":200,"headers":{"X":["1"]},"content_length":3}` + "\n\nabc",
		`{"call_id":"c","method":"PUT","request_url":"http://h/","content_length":0}` + "\r\n\r\n",
	},
	CloudEvent: {
		`{"contentType":"application/json","data":{"a" : [1, "x"]},"extensions":{"protocol":{"status_code":500}}}`,
		`{"eventID":"e","source":"http://s/","contentType":"text/plain","extensions":{"deadline":"2030-01-01T00:00:00Z","protocol":{"method":"GET","headers":{"A":["b"]}}},"data":"text"}`,
		`{"contentType":"application/json","data":null}`,
		`{"contentType":"application/json","data":"{ \"a\": 1 }"}`,
	},
}

func fuzzRead(f *testing.F, format string, response bool) {
	golden := newCodec(f, format, Limits{})
	var seed bytes.Buffer
	if response {
		if err := golden.WriteResponse(&seed, sampleResponse()); err != nil {
			f.Fatal(err)
		}
	} else if err := golden.WriteRequest(&seed, sampleRequest()); err != nil {
		f.Fatal(err)
	}
	f.Add(seed.Bytes())
	f.Add(append(bytes.Clone(seed.Bytes()), seed.Bytes()...))
	f.Add(seed.Bytes()[:seed.Len()/2])
	f.Add([]byte("this is not a frame\n"))
	for _, s := range fuzzSeeds[format] {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCodec(t, format, Limits{MaxBody: fuzzLimit})
		// A small buffer drives the paths that assemble a frame from
		// several fills.
		r := bufio.NewReaderSize(bytes.NewReader(data), 64)
		for range 3 {
			var (
				v   any
				err error
			)
			if response {
				v, err = c.ReadResponse(r)
			} else {
				v, err = c.ReadRequest(r)
			}
			if err != nil {
				checkReadError(t, err, response)
				return
			}
			checkReencode(t, c, v)
		}
	})
}

// checkReencode writes a decoded value and reads it back twice. The first
// pass may normalise (a cloudevent JSON body is compacted, invalid UTF-8
// in a string becomes U+FFFD), after which writing and reading must be
// exact; for the other formats it must be exact from the start.
func checkReencode(t *testing.T, c Codec, v any) {
	t.Helper()
	if req, ok := v.(*Request); ok && c.Format() == HTTP {
		if _, err := url.Parse(req.URL); err != nil {
			return // Fn_request_url may hold any text; the http writer needs a URL.
		}
	}
	once := roundTrip(t, c, v)
	twice := roundTrip(t, c, once)
	if err := diffValue(twice, once); err != nil {
		t.Fatalf("second round trip changed the value: %v", err)
	}
	if c.Format() == CloudEvent {
		if err := diffValue(once, withBody(v, bodyOf(once))); err != nil {
			t.Fatalf("round trip changed more than the body: %v", err)
		}
		return
	}
	if err := diffValue(once, v); err != nil {
		t.Fatalf("round trip changed the value: %v", err)
	}
}

func roundTrip(t *testing.T, c Codec, v any) any {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch v := v.(type) {
	case *Request:
		err = c.WriteRequest(&buf, v)
	case *Response:
		err = c.WriteResponse(&buf, v)
	}
	if err != nil {
		t.Fatalf("cannot write what was read: %v\nvalue: %+v", err, v)
	}
	r := bufio.NewReader(&buf)
	var got any
	switch v.(type) {
	case *Request:
		got, err = c.ReadRequest(r)
	case *Response:
		got, err = c.ReadResponse(r)
	}
	if err != nil {
		t.Fatalf("cannot read what was written: %v\nframe: %q", err, buf.Bytes())
	}
	if r.Buffered() != 0 {
		t.Fatalf("%d bytes left after the frame", r.Buffered())
	}
	return got
}

func diffValue(got, want any) error {
	switch g := got.(type) {
	case *Request:
		return diffRequest(g, want.(*Request))
	case *Response:
		return diffResponse(g, want.(*Response))
	}
	return errors.New("unknown value")
}

func bodyOf(v any) []byte {
	if r, ok := v.(*Request); ok {
		return r.Body
	}
	return v.(*Response).Body
}

func withBody(v any, body []byte) any {
	switch v := v.(type) {
	case *Request:
		c := *v
		c.Body = body
		return &c
	case *Response:
		c := *v
		c.Body = body
		return &c
	}
	return nil
}

// FuzzHTTPReadResponseStream: whatever a function writes, the streaming
// reader of the http format either fails or yields exactly the body the
// buffered reader yields for the same bytes, and leaves the stream at the
// same place: the two must agree on where a frame ends.
func FuzzHTTPReadResponseStream(f *testing.F) {
	for _, s := range fuzzSeeds[HTTP] {
		f.Add([]byte(s))
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\nNEXT"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &httpCodec{limits: Limits{MaxBody: fuzzLimit, MaxStream: fuzzLimit}}
		whole, errWhole := c.ReadResponse(bufio.NewReader(bytes.NewReader(data)))
		br := bufio.NewReader(bytes.NewReader(data))
		resp, body, err := c.ReadResponseStream(br)
		if err == nil && body != nil {
			resp.Body, err = io.ReadAll(body)
		}
		if (err == nil) != (errWhole == nil) {
			t.Fatalf("stream: %v, whole: %v", err, errWhole)
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, io.EOF) {
				t.Fatalf("error %v wraps neither ErrProtocol nor io.EOF", err)
			}
			return
		}
		if resp.Status != whole.Status || !bytes.Equal(resp.Body, whole.Body) {
			t.Fatalf("stream read %d %q, whole %d %q", resp.Status, resp.Body, whole.Status, whole.Body)
		}
		rest, _ := io.ReadAll(br)
		br2 := bufio.NewReader(bytes.NewReader(data))
		_, _ = c.ReadResponse(br2)
		rest2, _ := io.ReadAll(br2)
		if !bytes.Equal(rest, rest2) {
			t.Fatalf("stream left %q, whole left %q", rest, rest2)
		}
	})
}
