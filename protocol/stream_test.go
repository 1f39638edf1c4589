package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// TestReadResponseStreamChunkByChunk: each chunk is readable as soon as
// it has arrived, before the next one is written; the reader ends with
// the frame and the next frame is untouched.
func TestReadResponseStreamChunkByChunk(t *testing.T) {
	pr, pw := io.Pipe()
	c := &httpCodec{limits: Limits{MaxBody: 1 << 10}}
	br := bufio.NewReader(pr)
	heads := make(chan error, 1)
	var body io.Reader
	var resp *Response
	go func() {
		var err error
		resp, body, err = c.ReadResponseStream(br)
		heads <- err
	}()
	// Writes happen off the test goroutine; a failed one shows up as the
	// read that never gets its bytes.
	write := func(s string) { _, _ = io.WriteString(pw, s) }
	go write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	if err := <-heads; err != nil {
		t.Fatal(err)
	}
	if body == nil || resp.Body != nil || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("head %+v, body reader %v", resp, body)
	}
	if _, ok := resp.Header["Transfer-Encoding"]; ok {
		t.Fatal("the framing header reached the response")
	}
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		event := fmt.Sprintf("data: event %d\n\n", i)
		// Written and read in lockstep: a reader that waited for more
		// than the chunk would block here.
		go write(fmt.Sprintf("%x\r\n%s\r\n", len(event), event))
		n, err := body.Read(buf)
		if err != nil || string(buf[:n]) != event {
			t.Fatalf("chunk %d: %q, %v", i, buf[:n], err)
		}
	}
	go write("0\r\nX-Trailer: dropped\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
	if n, err := body.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the last chunk: %d, %v, want EOF", n, err)
	}
	next, err := c.ReadResponse(br)
	if err != nil || next.Status != 204 {
		t.Fatalf("next frame: %+v, %v", next, err)
	}
}

func TestReadResponseStreamFaults(t *testing.T) {
	for _, tt := range []struct {
		name, frame string
		max         int64
		want        error
	}{
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", 0, ErrProtocol},
		{"no CRLF after the chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 0, ErrProtocol},
		{"cut off mid-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", 0, io.ErrUnexpectedEOF},
		{"over the stream cap", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", 6, ErrBodyTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &httpCodec{limits: Limits{MaxBody: 1 << 10, MaxStream: tt.max}}
			_, body, err := c.ReadResponseStream(bufio.NewReader(strings.NewReader(tt.frame)))
			if err == nil {
				_, err = io.ReadAll(body)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

// TestContentLengthResponseIsNotStreamed: a response with Content-Length
// is read whole, as before.
func TestContentLengthResponseIsNotStreamed(t *testing.T) {
	c := &httpCodec{limits: Limits{MaxBody: 1 << 10}}
	resp, body, err := c.ReadResponseStream(bufio.NewReader(strings.NewReader("HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc")))
	if err != nil || body != nil || resp.Status != 201 || string(resp.Body) != "abc" {
		t.Fatalf("%+v, %v, %v", resp, body, err)
	}
}

// TestStreamedRequestBodies: a request body given as a stream reaches the
// function byte for byte, with Content-Length when its length is known
// and chunked when not, read back by the function side's own decoder.
func TestStreamedRequestBodies(t *testing.T) {
	body := randomBytes(300 << 10)
	for _, tt := range []struct {
		format string
		length int64
		te     string
	}{
		{HTTP, int64(len(body)), ""},
		{HTTP, -1, "chunked"},
		{JSONHTTP, int64(len(body)), ""},
	} {
		t.Run(fmt.Sprintf("%s/%d", tt.format, tt.length), func(t *testing.T) {
			c := newCodec(t, tt.format, Limits{MaxBody: 1 << 20})
			req := sampleRequest()
			req.Body = nil
			// One byte per Read: the worst case for chunk framing.
			req.BodyStream, req.BodyLength = iotest.OneByteReader(bytes.NewReader(body[:4096])), tt.length
			if tt.length >= 0 {
				req.BodyStream, req.BodyLength = bytes.NewReader(body), tt.length
			}
			var frame bytes.Buffer
			if err := c.WriteRequest(&frame, req); err != nil {
				t.Fatal(err)
			}
			if tt.te != "" && !bytes.Contains(frame.Bytes(), []byte("Transfer-Encoding: chunked\r\n")) {
				t.Fatalf("frame head %q", frame.Bytes()[:200])
			}
			got, err := c.ReadRequest(bufio.NewReader(&frame))
			if err != nil {
				t.Fatal(err)
			}
			want := body
			if tt.length < 0 {
				want = body[:4096]
			}
			if !bytes.Equal(got.Body, want) {
				t.Fatalf("function got %d bytes, want %d", len(got.Body), len(want))
			}
		})
	}
}

// TestStreamedRequestSourceErrors: a source that fails or ends early is
// a BodyError (the client's fault), not a write failure.
func TestStreamedRequestSourceErrors(t *testing.T) {
	tooBig := &http.MaxBytesError{Limit: 10}
	for _, tt := range []struct {
		name   string
		src    io.Reader
		length int64
		want   error
	}{
		{"source fails, chunked", iotest.ErrReader(tooBig), -1, tooBig},
		{"source fails, known length", io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(tooBig)), 5, tooBig},
		{"source ends early", strings.NewReader("ab"), 5, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCodec(t, HTTP, Limits{})
			req := sampleRequest()
			req.BodyStream, req.BodyLength = tt.src, tt.length
			err := c.WriteRequest(io.Discard, req)
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %v, want a BodyError", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v does not wrap %v", err, tt.want)
			}
		})
	}
}

func TestStreamsRequest(t *testing.T) {
	for _, tt := range []struct {
		format string
		n      int64
		want   bool
	}{
		{HTTP, -1, true}, {HTTP, 5, true}, {HTTPStream, -1, true},
		{JSONHTTP, 5, true}, {JSONHTTP, -1, false},
		{JSON, 5, false}, {CloudEvent, 5, false}, {Default, 5, false},
	} {
		if got := StreamsRequest(tt.format, tt.n); got != tt.want {
			t.Errorf("StreamsRequest(%s, %d) = %v", tt.format, tt.n, got)
		}
	}
}
