// Package fdk runs a Go function inside a kiln container. A function is a
// Handler passed to Handle from main; the FDK speaks the format kiln asks
// for in FN_FORMAT, so the same binary works in all of them:
//
//	func main() {
//		fdk.Handle(fdk.HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
//			fdk.SetHeader(out, "Content-Type", "text/plain")
//			io.Copy(out, in)
//		}))
//	}
//
// In the hot formats one process serves call after call, so a handler must
// not keep per-call state in globals by accident, and must not write to
// os.Stdout: that is the channel to kiln, and stray bytes on it end the
// container. Log to os.Stderr instead; kiln keeps those lines with the call.
//
// The out writer is an http.Flusher: Flush (or fdk.Flush(out)) sends what
// was written so far, in the formats that can stream a body (http, as a
// chunked response on stdout, and Fn's http-stream, over a unix socket).
// Elsewhere flushing does nothing and the body goes whole when the
// handler returns.
package fdk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// Handler serves one call. in is the request body; what the handler writes
// to out becomes the response body: once it returns, or piece by piece as
// it flushes in the formats that stream (see Flush).
type Handler interface {
	Serve(ctx context.Context, in io.Reader, out io.Writer)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, in io.Reader, out io.Writer)

// Serve calls f.
func (f HandlerFunc) Serve(ctx context.Context, in io.Reader, out io.Writer) { f(ctx, in, out) }

// Handle serves calls with h until kiln closes stdin, then exits the
// process: 0 when the input ended cleanly, 1 (after a line on stderr) when
// it could not be read or the response could not be written, because a
// function that lost its place in the stream can only be replaced.
//
// In the http-stream format calls come over the unix socket FN_LISTENER
// names rather than stdin, and the process serves until SIGTERM (or
// SIGINT): it then removes its socket, finishes the call in progress and
// exits 0.
func Handle(h Handler) {
	var err error
	if format := os.Getenv("FN_FORMAT"); format == formatHTTPStream {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err = serveHTTPStream(ctx, os.Getenv("FN_LISTENER"), os.Environ(), h)
		stop()
	} else {
		err = serve(context.Background(), format, os.Stdin, os.Stdout, os.Environ(), h)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "fdk: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve is Handle without the process around it, for the formats on
// stdin and stdout. It takes the whole environment rather than a lookup
// function because the default format passes request headers as
// FN_HEADER_* variables, which must be listed.
func serve(ctx context.Context, format string, stdin io.Reader, stdout io.Writer, environ []string, h Handler) error {
	if format == "" {
		format = protocol.Default
	}
	s := &server{format: format, config: configOf(environ), handler: h}
	if format == protocol.Default {
		return s.once(ctx, stdin, stdout, environ)
	}
	codec, err := protocol.New(format, protocol.Limits{})
	if err != nil {
		return err
	}
	// One reader for the life of the process: a frame may arrive in the
	// same read as the end of the previous one.
	r := bufio.NewReaderSize(stdin, 64<<10)
	for {
		req, err := codec.ReadRequest(r)
		if errors.Is(err, io.EOF) && !errors.Is(err, protocol.ErrProtocol) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s request: %w", format, err)
		}
		w := newResponse(&stdioSink{codec: codec, stdout: stdout, chunked: format == protocol.HTTP})
		w.hijack = func() (io.Writer, error) { return stdout, nil }
		s.run(ctx, req, bytes.NewReader(req.Body), w)
		if err := w.finish(); err != nil {
			return fmt.Errorf("writing %s response: %w", format, err)
		}
	}
}

type server struct {
	format  string
	config  map[string]string
	handler Handler
	// mu keeps calls one at a time in http-stream, where each connection
	// has its own goroutine; a handler may count on it as on stdin's order.
	mu sync.Mutex
}

// once serves the default format's single call: the request comes from
// the environment and stdin, the body goes to stdout, and kiln learns of a
// failure only from the exit code.
func (s *server) once(ctx context.Context, stdin io.Reader, stdout io.Writer, environ []string) error {
	req, err := protocol.RequestFromEnv(environ)
	if err != nil {
		return err
	}
	// Read the body up front, as in the hot formats: a handler that ignores
	// its input must not leave kiln blocked writing it.
	if req.Body, err = io.ReadAll(stdin); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	w := newResponse(nil)
	w.hijack = func() (io.Writer, error) { return stdout, nil }
	s.run(ctx, req, bytes.NewReader(req.Body), w)
	switch {
	case w.hijacked:
		return nil
	case w.panicMsg != "":
		return errors.New(w.panicMsg)
	}
	if _, err := stdout.Write(w.body.Bytes()); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	return nil
}

// run runs the handler on one request, and turns a panic into a 500 (or,
// once the response has begun, into its end) so that one bad call does
// not take down a warm container.
func (s *server) run(ctx context.Context, req *protocol.Request, in io.Reader, w *response) {
	ctx = context.WithValue(ctx, contextKey{}, &callContext{req: req, format: s.format, config: s.config})
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "fdk: handler panic: %v\n%s", v, debug.Stack())
			w.mu.Lock()
			w.panicMsg = fmt.Sprintf("panic: %v", v)
			w.mu.Unlock()
		}
	}()
	s.handler.Serve(ctx, in, w)
}

func errorResponse(msg string) *protocol.Response {
	return &protocol.Response{
		Status: http.StatusInternalServerError,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:   []byte(msg + "\n"),
	}
}

// SetHeader sets a response header. out must be the writer the FDK passed
// to the handler (or another with a Header() http.Header method);
// otherwise the call does nothing.
func SetHeader(out io.Writer, key, value string) {
	if h, ok := out.(interface{ Header() http.Header }); ok {
		h.Header().Set(key, value)
	}
}

// AddHeader adds a value to a response header, as SetHeader.
func AddHeader(out io.Writer, key, value string) {
	if h, ok := out.(interface{ Header() http.Header }); ok {
		h.Header().Add(key, value)
	}
}

// WriteStatus sets the response status (200 unless set). Unlike in
// net/http it may come after the body has been written, since nothing is
// sent before the handler returns or first flushes; after a flush it is
// ignored. The default format has no status: it is dropped there.
func WriteStatus(out io.Writer, code int) {
	if w, ok := out.(interface{ WriteHeader(int) }); ok {
		w.WriteHeader(code)
	}
}

// Flush sends what the handler has written to out so far, status and
// headers first on the first flush, when the format can stream a body
// (http, http-stream); elsewhere it does nothing and returns nil. The
// error is a failed send: kiln, or the client behind it, is gone, and the
// handler may as well stop. out is also an http.Flusher, and an
// http.ResponseController over it finds the error too.
func Flush(out io.Writer) error {
	switch f := out.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
	}
	return nil
}

// Hijack takes over the function's channel to kiln for the current call:
// stdout, or in http-stream the call's connection, which the FDK closes
// when the handler returns. The FDK then sends no response for the call,
// and whatever was written to out is dropped. The caller must write a
// complete frame in the call's format itself, or kiln will discard the
// container. It exists for test functions that break the protocol on
// purpose; ok is false if out is not the FDK's or was already flushed.
func Hijack(out io.Writer) (stdout io.Writer, ok bool) {
	w, ok := out.(*response)
	if !ok {
		return nil, false
	}
	return w.takeOver()
}

// Context describes the call being served.
type Context interface {
	// CallID is kiln's id for the call, as in the Fn-Call-Id response header.
	CallID() string
	// Deadline is when kiln gives up on the call; zero if none was sent.
	// The handler's ctx carries the same deadline.
	Deadline() time.Time
	// Method and RequestURL are the client's HTTP method and full URL.
	Method() string
	RequestURL() string
	// Header is the client's request headers. In the default format each
	// header has one value, the client's values joined with ", ".
	Header() http.Header
	// Config is the function's configuration: the container's environment
	// (app and fn config, FN_APP_NAME, FN_FORMAT and so on) without the
	// per-call variables of the default format. It is a copy.
	Config() map[string]string
	// Format is the wire format in use, as in FN_FORMAT.
	Format() string
}

type contextKey struct{}

// GetContext returns the call described by ctx, or an empty Context if
// ctx does not come from the FDK.
func GetContext(ctx context.Context) Context {
	if c, ok := ctx.Value(contextKey{}).(*callContext); ok {
		return c
	}
	return &callContext{req: &protocol.Request{}}
}

type callContext struct {
	req    *protocol.Request
	format string
	config map[string]string
}

func (c *callContext) CallID() string      { return c.req.CallID }
func (c *callContext) Deadline() time.Time { return c.req.Deadline }
func (c *callContext) Method() string      { return c.req.Method }
func (c *callContext) RequestURL() string  { return c.req.URL }
func (c *callContext) Format() string      { return c.format }

func (c *callContext) Header() http.Header {
	if c.req.Header == nil {
		c.req.Header = make(http.Header)
	}
	return c.req.Header
}

func (c *callContext) Config() map[string]string {
	m := make(map[string]string, len(c.config))
	for k, v := range c.config {
		m[k] = v
	}
	return m
}

// configOf keeps the environment minus what describes one call, which in
// the default format would otherwise look like configuration.
func configOf(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		switch {
		case k == protocol.EnvCallID, k == protocol.EnvDeadline, k == protocol.EnvMethod,
			k == protocol.EnvRequestURL, strings.HasPrefix(k, protocol.EnvHeaderPrefix):
			continue
		}
		m[k] = v
	}
	return m
}
