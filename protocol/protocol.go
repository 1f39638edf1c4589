// Package protocol holds the frame codecs kiln speaks with a function over
// its stdin and stdout. It imports only the standard library so that the
// same code serves both sides: kilnd writes requests and reads responses,
// and the Go FDK inside a container reads requests and writes responses.
package protocol

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Format names, as they appear in a fn's "format" field and in FN_FORMAT.
const (
	Default    = "default"
	HTTP       = "http"
	JSON       = "json"
	JSONHTTP   = "json-http"
	CloudEvent = "cloudevent"
	// HTTPStream is Fn's current contract: HTTP/1.1 over a unix socket the
	// function listens on, not stdio, so it has no Codec here; the
	// executor speaks it with net/http.
	HTTPStream = "http-stream"
)

// DefaultMaxBody is the body limit applied when Limits.MaxBody is zero.
const DefaultMaxBody = 6 << 20

// ErrProtocol marks a frame that could not be parsed. A container that
// produced one is out of step with kiln and must never serve again.
var ErrProtocol = errors.New("function wrote an invalid response")

// ErrBodyTooLarge marks a body over Limits.MaxBody, in either direction.
var ErrBodyTooLarge = errors.New("body too large")

// Request is one call as it travels to a function.
type Request struct {
	CallID   string
	Deadline time.Time
	Method   string
	// URL is the request URL as the client sent it, with scheme and host.
	URL    string
	Header http.Header
	Body   []byte
	// BodyStream, when set, is the body as it arrives from the client,
	// copied into the frame as it is written (Body is then unused), so a
	// large body is never held whole. BodyLength is its length, or -1
	// when unknown (the http format then sends it chunked). Only the http
	// and json-http formats stream bodies (json-http needs the length);
	// see StreamsRequest.
	BodyStream io.Reader
	BodyLength int64
}

// StreamsRequest reports whether format can take a request body as a
// stream of length n (-1: unknown); otherwise the caller reads it whole.
func StreamsRequest(format string, n int64) bool {
	switch format {
	case HTTP, HTTPStream:
		return true
	case JSONHTTP:
		return n >= 0
	}
	return false
}

// Response is one function answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Stream, when set, is the body as it arrives from the function (Body
	// is then nil). Its reader must read it to io.EOF or Close it: the
	// container is busy until then, and a stream closed early, or one
	// that fails, leaves the container out of step for good.
	Stream io.ReadCloser
}

// Limits bounds what a codec accepts.
type Limits struct {
	MaxBody int64
	// MaxStream bounds a streamed (chunked) response body; 0 means no
	// bound, since kilnd holds none of it.
	MaxStream int64
}

// Streamer is a Codec whose responses may stream: the http format's
// chunked responses.
type Streamer interface {
	// ReadResponseStream reads one response frame's head. A chunked body
	// comes back as body, a reader that ends with the frame: each Read
	// returns bytes of one chunk as they arrive, and io.EOF once the
	// terminating chunk and trailers are read. Any other body is read
	// whole into the Response, and body is nil.
	ReadResponseStream(r *bufio.Reader) (resp *Response, body io.Reader, err error)
}

// Codec frames calls for one hot format. A codec is stateless; the caller
// owns the long-lived bufio.Reader of a container's stdout and passes it
// to every read, so bytes read ahead are never lost between frames.
type Codec interface {
	// Format is the format's name.
	Format() string
	// WriteRequest writes one request frame, in a single Write when it can.
	WriteRequest(w io.Writer, req *Request) error
	// ReadRequest reads exactly one request frame (the function side).
	ReadRequest(r *bufio.Reader) (*Request, error)
	// WriteResponse writes one response frame (the function side).
	WriteResponse(w io.Writer, resp *Response) error
	// ReadResponse reads exactly one response frame. Errors from a
	// malformed frame wrap ErrProtocol; an oversized body wraps
	// ErrBodyTooLarge (and ErrProtocol, since the stream is then out of step).
	ReadResponse(r *bufio.Reader) (*Response, error)
}

// Hot reports whether format keeps a container across calls.
func Hot(format string) bool {
	switch format {
	case HTTP, JSON, JSONHTTP, CloudEvent, HTTPStream:
		return true
	}
	return false
}

// Stdio reports whether format frames calls on stdin and stdout, with a
// Codec from New: every hot format but http-stream.
func Stdio(format string) bool { return format != HTTPStream && Hot(format) }

// Valid reports whether format is one kiln knows.
func Valid(format string) bool { return format == Default || Hot(format) }

// Formats lists every known format.
func Formats() []string { return []string{Default, HTTP, JSON, JSONHTTP, CloudEvent, HTTPStream} }

// New returns the codec for a hot format.
func New(format string, limits Limits) (Codec, error) {
	if limits.MaxBody <= 0 {
		limits.MaxBody = DefaultMaxBody
	}
	switch format {
	case HTTP:
		return &httpCodec{limits: limits}, nil
	case JSON:
		return &jsonCodec{limits: limits}, nil
	case JSONHTTP:
		return &jsonHTTPCodec{limits: limits}, nil
	case CloudEvent:
		return &cloudEventCodec{limits: limits}, nil
	}
	return nil, fmt.Errorf("format %q has no stdio codec", format)
}
