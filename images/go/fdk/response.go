package fdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/kiln-run/kiln/protocol"
)

// streamBuffer is how much a streaming response holds between flushes
// before it sends a piece on its own, so a handler that writes a large
// body after its first Flush does not buffer all of it.
const streamBuffer = 64 << 10

var (
	errCallOver  = errors.New("fdk: write after the handler returned")
	errHijacked  = errors.New("fdk: write to a hijacked response")
	errNoHijack  = errors.New("fdk: the channel to kiln cannot be taken over")
	errRefusedAt = "fdk: cannot send the handler's response: "
)

// A sink sends one call's response in the call's format: whole, or, where
// the format allows it, as a head with a first piece, more pieces and an
// end.
type sink interface {
	// streams reports whether the format can send a body in pieces.
	streams() bool
	// whole sends a complete response; one the format refuses (a bad
	// status or header) becomes a 500 that says why.
	whole(resp *protocol.Response) error
	// start sends status and headers, which checkHead accepted, and the
	// first piece of the body (which may be empty).
	start(status int, h http.Header, first []byte) error
	piece(p []byte) error
	end() error
}

type respState int

const (
	// buffering: nothing is sent; status and headers may still change.
	buffering respState = iota
	// streaming: the head is out and pieces follow.
	streaming
	// sent: the frame is complete (an error answer, or a streamed head
	// that carries no body), though the handler may still be running.
	sent
)

// response is the out a handler gets. It buffers the answer because every
// format sends status and headers before the body and the handler may set
// them at any point before it returns or flushes. It has the methods of an
// http.ResponseWriter and an http.Flusher, so code written against those
// interfaces works too. Its methods may be called from several goroutines.
type response struct {
	mu     sync.Mutex
	status int
	header http.Header
	body   bytes.Buffer
	// sink is nil in the default format, whose body is written by once.
	sink  sink
	state respState
	// hijack hands over the raw channel to kiln.
	hijack   func() (io.Writer, error)
	hijacked bool
	panicMsg string
	// err is what Write and Flush report once the response takes no more;
	// fatal is a failed send, after which the channel to kiln is unusable.
	err, fatal error
}

func newResponse(s sink) *response {
	return &response{header: make(http.Header), sink: s}
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == buffering {
		w.status = code
	}
}

func (w *response) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.hijacked:
		return 0, errHijacked
	case w.err != nil:
		return 0, w.err
	}
	w.body.Write(p)
	if w.state == streaming && w.body.Len() >= streamBuffer {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush implements http.Flusher.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush reporting a failed send; http.ResponseController
// finds it.
func (w *response) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.hijacked:
		return errHijacked
	case w.err != nil:
		return w.err
	case w.sink == nil || !w.sink.streams():
		return nil
	}
	return w.flushLocked()
}

func (w *response) flushLocked() error {
	if w.state == buffering {
		status := w.status
		if status == 0 {
			status = http.StatusOK
		}
		if err := checkHead(status, w.header); err != nil {
			// Nothing is out yet, so kiln can still be told.
			fmt.Fprintf(os.Stderr, "%s%v\n", errRefusedAt, err)
			w.state, w.err = sent, fmt.Errorf("%s%w", errRefusedAt, err)
			w.body.Reset()
			if err := w.sink.whole(errorResponse(errRefusedAt + err.Error())); err != nil {
				return w.fail(err)
			}
			return w.err
		}
		first := w.body.Bytes()
		if !bodyAllowed(status) {
			first = nil
			w.state, w.err = sent, http.ErrBodyNotAllowed
		} else {
			w.state = streaming
		}
		// The head is fixed from here on, as in net/http: later changes
		// to the map must not reach a sink that still reads it.
		err := w.sink.start(status, w.header.Clone(), first)
		w.body.Reset()
		if err != nil {
			return w.fail(err)
		}
		return nil
	}
	if w.body.Len() == 0 {
		return nil
	}
	err := w.sink.piece(w.body.Bytes())
	w.body.Reset()
	if err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *response) fail(err error) error {
	w.fatal, w.err = err, err
	return err
}

// finish completes the response once the handler has returned. Its error
// is a failed send: the channel to kiln can no longer be trusted.
func (w *response) finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer func() {
		if w.err == nil {
			w.err = errCallOver
		}
	}()
	switch {
	case w.hijacked:
		return nil
	case w.fatal != nil:
		return w.fatal
	case w.state == sent:
		return nil
	case w.state == streaming:
		if w.panicMsg != "" {
			// The status is out: the best left is a well-formed end, so
			// the container can serve the next call.
			fmt.Fprintln(os.Stderr, "fdk: the response had begun; its body ends where the handler stopped")
		}
		if err := w.flushLocked(); err != nil {
			return err
		}
		if err := w.sink.end(); err != nil {
			return w.fail(err)
		}
		return nil
	}
	resp := &protocol.Response{Status: w.status, Header: w.header, Body: w.body.Bytes()}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	if w.panicMsg != "" {
		resp = errorResponse(w.panicMsg)
	}
	if err := w.sink.whole(resp); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *response) takeOver() (io.Writer, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hijack == nil || w.state != buffering || w.err != nil {
		return nil, false
	}
	raw, err := w.hijack()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fdk: hijack: %v\n", err)
		return nil, false
	}
	w.hijacked = true
	w.body.Reset()
	return raw, true
}

// headCheck is the http codec, used only to ask whether a status and
// header could be written: it refuses exactly what does not fit an HTTP
// head before writing anything, and asking it keeps one definition of
// that for whole and streamed responses alike.
var headCheck, _ = protocol.New(protocol.HTTP, protocol.Limits{})

func checkHead(status int, h http.Header) error {
	return headCheck.WriteResponse(io.Discard, &protocol.Response{Status: status, Header: h})
}

// bodyAllowed follows RFC 9112 section 6.3, as the codecs do.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// wireHeader is h without what describes a connection or a frame rather
// than the message, as the codecs leave them out.
func wireHeader(h http.Header) http.Header {
	h = h.Clone()
	protocol.StripHopByHop(h)
	for _, k := range []string{"Content-Length", "Host", "Expect"} {
		delete(h, k)
	}
	return h
}

// stdioSink sends responses on stdout with the call's codec; in the http
// format it can also stream them, as a chunked response the codec does
// not write.
type stdioSink struct {
	codec   protocol.Codec
	stdout  io.Writer
	chunked bool
	buf     []byte
}

func (s *stdioSink) streams() bool { return s.chunked }

func (s *stdioSink) whole(resp *protocol.Response) error {
	err := s.codec.WriteResponse(s.stdout, resp)
	if err == nil {
		return nil
	}
	// The codec refuses before writing anything (bad status or header,
	// body over the limit), so kiln can still be told; if the error was a
	// failed write, this one fails too.
	fmt.Fprintf(os.Stderr, "%s%v\n", errRefusedAt, err)
	return s.codec.WriteResponse(s.stdout, errorResponse(errRefusedAt+err.Error()))
}

// start writes the head with Transfer-Encoding: chunked and no length, and
// the first piece in the same write; a status without a body (204, 304)
// is a complete frame with its head alone.
func (s *stdioSink) start(status int, h http.Header, first []byte) error {
	b := append(s.buf[:0], "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\n"...)
	h = wireHeader(h)
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	if bodyAllowed(status) {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = appendChunk(b, first)
	s.buf = b
	_, err := s.stdout.Write(b)
	return err
}

func (s *stdioSink) piece(p []byte) error {
	s.buf = appendChunk(s.buf[:0], p)
	_, err := s.stdout.Write(s.buf)
	return err
}

func (s *stdioSink) end() error {
	_, err := io.WriteString(s.stdout, "0\r\n\r\n")
	return err
}

// appendChunk appends p as one chunk; nothing for an empty p, whose chunk
// would be the last one.
func appendChunk(b, p []byte) []byte {
	if len(p) == 0 {
		return b
	}
	b = strconv.AppendInt(b, int64(len(p)), 16)
	b = append(b, "\r\n"...)
	b = append(b, p...)
	return append(b, "\r\n"...)
}
