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
	"runtime/debug"
	"strings"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// Handler serves one call. in is the request body; what the handler writes
// to out becomes the response body once it returns.
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
func Handle(h Handler) {
	err := serve(context.Background(), os.Getenv("FN_FORMAT"), os.Stdin, os.Stdout, os.Environ(), h)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fdk: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve is Handle without the process around it. It takes the whole
// environment rather than a lookup function because the default format
// passes request headers as FN_HEADER_* variables, which must be listed.
func serve(ctx context.Context, format string, stdin io.Reader, stdout io.Writer, environ []string, h Handler) error {
	if format == "" {
		format = protocol.Default
	}
	s := &server{format: format, stdout: stdout, config: configOf(environ), handler: h}
	if format == protocol.Default {
		return s.once(ctx, stdin, environ)
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
		resp, _ := s.call(ctx, req)
		if resp == nil {
			continue
		}
		if err := codec.WriteResponse(stdout, resp); err != nil {
			// The codec refuses before writing anything (bad status or
			// header, body over the limit), so kiln can still be told.
			fmt.Fprintf(os.Stderr, "fdk: cannot send the handler's response: %v\n", err)
			if err := codec.WriteResponse(stdout, errorResponse("fdk: cannot send the handler's response: "+err.Error())); err != nil {
				return fmt.Errorf("writing %s response: %w", format, err)
			}
		}
	}
}

type server struct {
	format  string
	stdout  io.Writer
	config  map[string]string
	handler Handler
}

// once serves the default format's single call: the request comes from
// the environment and stdin, the body goes to stdout, and kiln learns of a
// failure only from the exit code.
func (s *server) once(ctx context.Context, stdin io.Reader, environ []string) error {
	req, err := protocol.RequestFromEnv(environ)
	if err != nil {
		return err
	}
	// Read the body up front, as in the hot formats: a handler that ignores
	// its input must not leave kiln blocked writing it.
	if req.Body, err = io.ReadAll(stdin); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	resp, panicked := s.call(ctx, req)
	if resp == nil {
		return nil
	}
	if panicked {
		return errors.New(string(resp.Body))
	}
	if _, err := s.stdout.Write(resp.Body); err != nil {
		return fmt.Errorf("writing stdout: %w", err)
	}
	return nil
}

// call runs the handler on one request. It returns nil when the handler
// hijacked stdout, and turns a panic into a 500 so that one bad call does
// not take down a warm container.
func (s *server) call(ctx context.Context, req *protocol.Request) (resp *protocol.Response, panicked bool) {
	ctx = context.WithValue(ctx, contextKey{}, &callContext{req: req, format: s.format, config: s.config})
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	w := &response{header: make(http.Header), stdout: s.stdout}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		fmt.Fprintf(os.Stderr, "fdk: handler panic: %v\n%s", v, debug.Stack())
		resp, panicked = nil, true
		if !w.hijacked {
			resp = errorResponse(fmt.Sprintf("panic: %v", v))
		}
	}()
	s.handler.Serve(ctx, bytes.NewReader(req.Body), w)
	if w.hijacked {
		return nil, false
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	return &protocol.Response{Status: status, Header: w.header, Body: w.body.Bytes()}, false
}

func errorResponse(msg string) *protocol.Response {
	return &protocol.Response{
		Status: http.StatusInternalServerError,
		Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:   []byte(msg + "\n"),
	}
}

// response is the out a handler gets. It buffers the whole answer because
// every format sends status and headers before the body, and the handler
// may set them at any point before it returns. It has the methods of an
// http.ResponseWriter, so code written against that interface works too.
type response struct {
	status   int
	header   http.Header
	body     bytes.Buffer
	hijacked bool
	stdout   io.Writer
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) { w.status = code }

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, errors.New("fdk: write to a hijacked response")
	}
	return w.body.Write(p)
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
// sent before the handler returns. The default format has no status: it
// is dropped there.
func WriteStatus(out io.Writer, code int) {
	if w, ok := out.(interface{ WriteHeader(int) }); ok {
		w.WriteHeader(code)
	}
}

// Hijack takes over the function's stdout for the current call: the FDK
// then sends no response for it, and whatever was written to out is
// dropped. The caller must write a complete frame in the call's format
// itself, or kiln will discard the container. It exists for test functions
// that break the protocol on purpose; ok is false if out is not the FDK's.
func Hijack(out io.Writer) (stdout io.Writer, ok bool) {
	w, ok := out.(*response)
	if !ok {
		return nil, false
	}
	w.hijacked = true
	return w.stdout, true
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
