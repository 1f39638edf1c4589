package protocol

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// BenchmarkCall measures kilnd's side of one call: writing the request
// frame and reading the response frame from a long-lived reader.
func BenchmarkCall(b *testing.B) {
	for _, size := range []int{0, 1 << 10, 1 << 20} {
		body := []byte(strings.Repeat("kiln body text. ", size/16+1)[:size])
		req := &Request{
			CallID:   "01HXYZCALL0000000000000000",
			Deadline: time.Now().Add(30 * time.Second),
			Method:   "POST",
			URL:      "http://localhost:8080/t/app/hello?x=1",
			Header: http.Header{
				"Content-Type": {"text/plain"}, "Accept": {"*/*"},
				"User-Agent": {"bench/1.0"}, "X-Request-Id": {"abc123"},
			},
			Body: body,
		}
		resp := &Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}, "X-A": {"1"}}, Body: body}
		for _, format := range hotFormats {
			b.Run(fmt.Sprintf("%s/%d", format, size), func(b *testing.B) {
				c := newCodec(b, format, Limits{MaxBody: 2 << 20})
				var frame bytes.Buffer
				if err := c.WriteResponse(&frame, resp); err != nil {
					b.Fatal(err)
				}
				src := bytes.NewReader(frame.Bytes())
				r := bufio.NewReaderSize(src, 64<<10)
				b.SetBytes(int64(2 * size))
				b.ReportAllocs()
				for b.Loop() {
					if err := c.WriteRequest(io.Discard, req); err != nil {
						b.Fatal(err)
					}
					src.Reset(frame.Bytes())
					r.Reset(src)
					if _, err := c.ReadResponse(r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkFunctionSide measures the FDK's side: read a request, write a
// response.
func BenchmarkFunctionSide(b *testing.B) {
	req := sampleRequest()
	resp := sampleResponse()
	for _, format := range hotFormats {
		b.Run(format, func(b *testing.B) {
			c := newCodec(b, format, Limits{})
			var frame bytes.Buffer
			if err := c.WriteRequest(&frame, req); err != nil {
				b.Fatal(err)
			}
			src := bytes.NewReader(frame.Bytes())
			r := bufio.NewReaderSize(src, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(frame.Bytes())
				r.Reset(src)
				if _, err := c.ReadRequest(r); err != nil {
					b.Fatal(err)
				}
				if err := c.WriteResponse(io.Discard, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriteRequest isolates the writer, whose frame buffer comes from
// a pool: in steady state a frame costs no allocation beyond header
// sorting, whatever the body size.
func BenchmarkWriteRequest(b *testing.B) {
	req := sampleRequest()
	for _, format := range hotFormats {
		b.Run(format, func(b *testing.B) {
			c := newCodec(b, format, Limits{})
			b.ReportAllocs()
			for b.Loop() {
				if err := c.WriteRequest(io.Discard, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
