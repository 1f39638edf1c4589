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
}

// Response is one function answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Limits bounds what a codec accepts.
type Limits struct {
	MaxBody int64
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
	case HTTP, JSON, JSONHTTP, CloudEvent:
		return true
	}
	return false
}

// Valid reports whether format is one kiln knows.
func Valid(format string) bool { return format == Default || Hot(format) }

// Formats lists every known format.
func Formats() []string { return []string{Default, HTTP, JSON, JSONHTTP, CloudEvent} }

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
	return nil, fmt.Errorf("format %q has no hot codec", format)
}
