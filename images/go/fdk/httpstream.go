package fdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// formatHTTPStream is Fn's http-stream format: calls arrive as HTTP/1.1
// requests on a unix socket the function listens on, not on stdin.
const formatHTTPStream = protocol.HTTPStream

// The http-stream headers. The client's request and response headers
// travel under hdrPrefix, so that they cannot be taken for the
// connection's own; only Content-Type goes as itself.
const (
	hdrPrefix     = "Fn-Http-H-"
	hdrCallID     = "Fn-Call-Id"
	hdrDeadline   = "Fn-Deadline"
	hdrMethod     = "Fn-Http-Method"
	hdrRequestURL = "Fn-Http-Request-Url"
	hdrStatus     = "Fn-Http-Status"
)

// serveHTTPStream serves calls on the socket FN_LISTENER names until ctx
// ends, then removes the socket, lets the call in progress finish, and
// returns nil.
func serveHTTPStream(ctx context.Context, listener string, environ []string, h Handler) error {
	if listener == "" {
		return errors.New("http-stream needs FN_LISTENER=unix:/path/to/lsnr.sock")
	}
	path, ok := strings.CutPrefix(listener, "unix:")
	if !ok || path == "" {
		return fmt.Errorf("FN_LISTENER %q is not unix:PATH", listener)
	}
	l, err := listenSocket(path)
	if err != nil {
		return err
	}
	defer l.removeFiles()
	s := &server{format: formatHTTPStream, config: configOf(environ), handler: h}
	srv := &http.Server{
		Handler: s,
		// A call in progress at shutdown may finish: its ctx ends with its
		// connection or deadline, not with the signal.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:    log.New(os.Stderr, "fdk: ", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving %s: %w", path, err)
	case <-ctx.Done():
	}
	// kilnd must not find a socket that is going away.
	l.removeFiles()
	err = srv.Shutdown(context.WithoutCancel(ctx))
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving %s: %w", path, err)
	}
	return err
}

// socketListener is the function's listener and the two names it has in
// kilnd's directory.
type socketListener struct {
	net.Listener
	link, phony string
}

// listenSocket listens on a socket beside path, then makes path a relative
// symlink to it: kilnd waits for path, and a symlink appears at once, with
// the socket behind it already accepting. kilnd follows only a bare file
// name, so the link cannot point it anywhere outside the directory.
func listenSocket(path string) (*socketListener, error) {
	dir, name := filepath.Split(path)
	l := &socketListener{link: path, phony: filepath.Join(dir, "phony"+name)}
	// Leftovers of an earlier process in the same directory would make
	// the bind or the link fail.
	l.removeFiles()
	var err error
	if l.Listener, err = net.Listen("unix", l.phony); err != nil {
		return nil, err
	}
	// kilnd need not run as the function's user.
	if err = os.Chmod(l.phony, 0o666); err == nil {
		err = os.Symlink(filepath.Base(l.phony), l.link)
	}
	if err != nil {
		l.Close()
		l.removeFiles()
		return nil, err
	}
	return l, nil
}

func (l *socketListener) removeFiles() {
	for _, p := range []string{l.link, l.phony} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "fdk: %v\n", err)
		}
	}
}

// ServeHTTP serves one http-stream call.
func (s *server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	req, err := requestOf(r)
	if err != nil {
		// Not a call kilnd would send: its own status says so.
		http.Error(rw, "fdk: "+err.Error(), http.StatusBadRequest)
		return
	}
	sk := &socketSink{rw: rw, rc: http.NewResponseController(rw)}
	// A handler may write its answer while it still reads the request.
	_ = sk.rc.EnableFullDuplex()
	w := newResponse(sk)
	w.hijack = sk.hijack
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run(r.Context(), req, r.Body, w)
	if sk.conn != nil {
		w.finish()
		sk.conn.Close()
		return
	}
	// What the handler left unread stays between this call and the next
	// on the connection; net/http would give up on the connection instead
	// beyond a few hundred KiB.
	_, _ = io.Copy(io.Discard, r.Body)
	if err := w.finish(); err != nil {
		fmt.Fprintf(os.Stderr, "fdk: writing the http-stream response: %v\n", err)
	}
}

// requestOf reads the client's request out of kilnd's.
func requestOf(r *http.Request) (*protocol.Request, error) {
	req := &protocol.Request{
		CallID: r.Header.Get(hdrCallID),
		Method: r.Header.Get(hdrMethod),
		URL:    r.Header.Get(hdrRequestURL),
		Header: make(http.Header),
	}
	if req.Method == "" {
		req.Method = r.Method
	}
	if req.URL == "" {
		req.URL = "http://" + r.Host + r.RequestURI
	}
	if dl := r.Header.Get(hdrDeadline); dl != "" {
		t, err := time.Parse(time.RFC3339Nano, dl)
		if err != nil {
			return nil, fmt.Errorf("%s %q is not RFC 3339", hdrDeadline, dl)
		}
		req.Deadline = t
	}
	for k, vs := range r.Header {
		if name, ok := strings.CutPrefix(k, hdrPrefix); ok && name != "" {
			name = textproto.CanonicalMIMEHeaderKey(name)
			req.Header[name] = append(req.Header[name], vs...)
		}
	}
	if vs := r.Header.Values("Content-Type"); len(vs) > 0 {
		req.Header["Content-Type"] = vs
	}
	return req, nil
}

// socketSink answers on the call's connection: always status 200 of its
// own, the client's status and headers in Fn-Http-* headers.
type socketSink struct {
	rw   http.ResponseWriter
	rc   *http.ResponseController
	conn net.Conn
}

func (s *socketSink) streams() bool { return true }

func (s *socketSink) head(status int, h http.Header) {
	out := s.rw.Header()
	// Without a Content-Type net/http would guess one, and the client
	// would get a header the function never set.
	out["Content-Type"] = nil
	for k, vs := range wireHeader(h) {
		if k == "Content-Type" {
			out[k] = vs
		} else {
			out[hdrPrefix+k] = vs
		}
	}
	out.Set(hdrStatus, strconv.Itoa(status))
}

func (s *socketSink) whole(resp *protocol.Response) error {
	if err := checkHead(resp.Status, resp.Header); err != nil {
		fmt.Fprintf(os.Stderr, "%s%v\n", errRefusedAt, err)
		resp = errorResponse(errRefusedAt + err.Error())
	}
	body := resp.Body
	if !bodyAllowed(resp.Status) {
		body = nil
	}
	s.head(resp.Status, resp.Header)
	s.rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	s.rw.WriteHeader(http.StatusOK)
	_, err := s.rw.Write(body)
	return err
}

// start leaves the length out, so net/http sends the body chunked, and
// flushes at once: the head is news to the client too.
func (s *socketSink) start(status int, h http.Header, first []byte) error {
	s.head(status, h)
	s.rw.WriteHeader(http.StatusOK)
	if len(first) > 0 {
		if _, err := s.rw.Write(first); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

func (s *socketSink) piece(p []byte) error {
	if _, err := s.rw.Write(p); err != nil {
		return err
	}
	return s.rc.Flush()
}

// end has nothing to do: net/http ends the chunked body when ServeHTTP
// returns.
func (s *socketSink) end() error { return nil }

func (s *socketSink) hijack() (io.Writer, error) {
	conn, _, err := s.rc.Hijack()
	if err != nil {
		return nil, err
	}
	s.conn = conn
	return conn, nil
}
