package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"
)

var hotFormats = []string{HTTP, JSON, JSONHTTP, CloudEvent}

// fixedNow pins cloudevent's eventTime so frames are byte-stable.
var fixedNow = time.Date(2024, 5, 6, 7, 8, 0, 0, time.UTC)

func newCodec(t testing.TB, format string, limits Limits) Codec {
	t.Helper()
	c, err := New(format, limits)
	if err != nil {
		t.Fatal(err)
	}
	if ce, ok := c.(*cloudEventCodec); ok {
		ce.now = func() time.Time { return fixedNow }
	}
	return c
}

func sampleRequest() *Request {
	return &Request{
		CallID:   "01HXYZCALL0000000000000000",
		Deadline: time.Date(2024, 5, 6, 7, 8, 9, 500_000_000, time.UTC),
		Method:   http.MethodPost,
		URL:      "http://fn.example:8080/t/app/hello?x=1&y=two",
		Header: http.Header{
			"Content-Type": {"application/json"},
			"Accept":       {"text/plain", "application/json"},
			"X-Multi":      {"a", "b, c"},
			"Connection":   {"keep-alive"},
			"User-Agent":   {"kiln-test/1.0"},
		},
		Body: []byte(`{"name":"kiln"}`),
	}
}

func sampleResponse() *Response {
	return &Response{
		Status: http.StatusCreated,
		Header: http.Header{
			"Content-Type": {"application/json"},
			"Set-Cookie":   {"a=1", "b=2"},
			"X-Custom":     {"yes"},
		},
		Body: []byte(`{"greeting":"hello, kiln"}`),
	}
}

func encodeRequest(t testing.TB, c Codec, req *Request) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := c.WriteRequest(&buf, req); err != nil {
		t.Fatalf("%s WriteRequest: %v", c.Format(), err)
	}
	return buf.Bytes()
}

func encodeResponse(t testing.TB, c Codec, resp *Response) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := c.WriteResponse(&buf, resp); err != nil {
		t.Fatalf("%s WriteResponse: %v", c.Format(), err)
	}
	return buf.Bytes()
}

func reader(b []byte) *bufio.Reader { return bufio.NewReaderSize(bytes.NewReader(b), 64<<10) }

// wantHeader is what a decoder should give back for h: the same fields
// without those that describe the connection or the framing.
func wantHeader(h http.Header) http.Header {
	return cleanHeader(h.Clone())
}

func diffRequest(got, want *Request) error {
	switch {
	case got.CallID != want.CallID:
		return fmt.Errorf("call id %q, want %q", got.CallID, want.CallID)
	case !got.Deadline.Equal(want.Deadline):
		return fmt.Errorf("deadline %v, want %v", got.Deadline, want.Deadline)
	case got.Method != want.Method:
		return fmt.Errorf("method %q, want %q", got.Method, want.Method)
	case got.URL != want.URL:
		return fmt.Errorf("url %q, want %q", got.URL, want.URL)
	case !headerEqual(got.Header, want.Header):
		return fmt.Errorf("header %v, want %v", got.Header, want.Header)
	case !bytes.Equal(got.Body, want.Body):
		return fmt.Errorf("body %s, want %s", clip(string(got.Body)), clip(string(want.Body)))
	}
	return nil
}

func diffResponse(got, want *Response) error {
	switch {
	case got.Status != want.Status:
		return fmt.Errorf("status %d, want %d", got.Status, want.Status)
	case !headerEqual(got.Header, want.Header):
		return fmt.Errorf("header %v, want %v", got.Header, want.Header)
	case !bytes.Equal(got.Body, want.Body):
		return fmt.Errorf("body %q, want %q", clip(string(got.Body)), clip(string(want.Body)))
	}
	return nil
}

func headerEqual(a, b http.Header) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// readRequestOf and readResponseOf give the fuzz and table tests one shape
// for both directions.
type direction struct {
	name   string
	encode func(c Codec, w io.Writer, v any) error
	decode func(c Codec, r *bufio.Reader) (any, error)
	diff   func(got, want any) error
}

var directions = []direction{
	{
		name:   "request",
		encode: func(c Codec, w io.Writer, v any) error { return c.WriteRequest(w, v.(*Request)) },
		decode: func(c Codec, r *bufio.Reader) (any, error) { return c.ReadRequest(r) },
		diff:   func(got, want any) error { return diffRequest(got.(*Request), want.(*Request)) },
	},
	{
		name:   "response",
		encode: func(c Codec, w io.Writer, v any) error { return c.WriteResponse(w, v.(*Response)) },
		decode: func(c Codec, r *bufio.Reader) (any, error) { return c.ReadResponse(r) },
		diff:   func(got, want any) error { return diffResponse(got.(*Response), want.(*Response)) },
	},
}

// checkReadError asserts that a failed read is classified: EOF before a
// frame, a protocol error, or (requests only) a plain size error. Anything
// else would leave a caller unable to tell what happened.
func checkReadError(t testing.TB, err error, response bool) {
	t.Helper()
	switch {
	case errors.Is(err, io.EOF) && !errors.Is(err, ErrProtocol):
	case errors.Is(err, ErrProtocol):
	case !response && errors.Is(err, ErrBodyTooLarge):
	default:
		t.Fatalf("unclassified read error: %v", err)
	}
}
