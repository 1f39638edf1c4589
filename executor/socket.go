package executor

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// Fn's http-stream contract: the function listens for HTTP/1.1 on a unix
// socket in a directory kiln mounts into its container, and kiln sends it
// one call at a time over one keep-alive connection. Its stdout and
// stderr are both its log.
const (
	// socketMount is where the socket dir appears in the container; Fn
	// uses the same path, so a function that hard-codes it still runs.
	socketMount = "/tmp/iofs"
	socketName  = "lsnr.sock"
)

// DefaultListenTimeout bounds the wait for an http-stream function to
// listen. Fn allows 5 s; an interpreter's imports on a loaded 2-core node
// take longer than that now and then.
const DefaultListenTimeout = 10 * time.Second

// Instance is a warm container serving one call at a time, over stdio
// (Hot) or a socket (SocketHot).
type Instance interface {
	Done() <-chan struct{}
	Err() error
	Close(ctx context.Context) error
	Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error)
}

// SocketHot is a warm http-stream container.
type SocketHot struct {
	c        hotContainer
	dir      string
	grace    time.Duration
	maxBody  int64
	client   *http.Client
	tr       *http.Transport
	inCall   atomic.Bool
	current  atomic.Pointer[callSink]
	cancelIO context.CancelFunc // ends every request in flight
	ioCtx    context.Context
	// first is the connection waitListening made, until a call takes it.
	first atomic.Pointer[net.Conn]

	done     chan struct{}
	failOnce sync.Once
	failErr  error

	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (r *Runtime) startSocketHot(ctx context.Context, f *Function) (_ Instance, retErr error) {
	dir, err := newSocketDir(r.cfg.SocketDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	b, err := r.create(ctx, f, "hot", extras{
		env: []string{"FN_LISTENER=unix:" + socketMount + "/" + socketName},
		mounts: []specs.Mount{{
			Destination: socketMount,
			Type:        "bind",
			Source:      dir,
			Options:     []string{"rbind", "rw", "nosuid", "nodev", "noexec"},
		}},
	})
	if err != nil {
		return nil, err
	}
	h := newSocketHot(b, dir, r.cfg.StopGrace, r.cfg.MaxBody)
	if err := h.waitListening(ctx, r.cfg.ListenTimeout); err != nil {
		_ = h.Close(context.Background())
		return nil, err
	}
	return h, nil
}

// newSocketDir makes the per-container dir the function's socket goes in.
// Anyone may write it: the function runs as whatever user its image (or
// kiln) picks, and nothing else is in it.
func newSocketDir(parent string) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	dir := filepath.Join(parent, hex.EncodeToString(b[:]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return "", fmt.Errorf("socket dir: %w", err)
	}
	return dir, nil
}

func newSocketHot(c hotContainer, dir string, grace time.Duration, maxBody int64) *SocketHot {
	h := &SocketHot{c: c, dir: dir, grace: grace, maxBody: maxBody, done: make(chan struct{})}
	h.ioCtx, h.cancelIO = context.WithCancel(context.Background())
	h.tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// The connection that proved the function listens is the
			// first one calls use: Fn's contract is one at a time.
			if conn := h.first.Swap(nil); conn != nil {
				return *conn, nil
			}
			return dialSocket(ctx, dir)
		},
		// Fn's contract: never more than one connection to a function.
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     0,
		DisableCompression:  true,
		// Bytes go to the client as they arrive, and headers are small.
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         16 << 10,
		MaxResponseHeaderBytes: 1 << 20,
	}
	h.client = &http.Client{Transport: h.tr}
	h.wg.Add(2)
	// Both stdout and stderr are the function's log here, and both must
	// be drained or the function blocks writing them.
	for _, r := range []io.Reader{c.stdoutPipe(), c.stderrPipe()} {
		go func() {
			defer h.wg.Done()
			pumpStderr(r, c.logger(), h.sink)
		}()
	}
	c.onExit(func(code uint32) {
		h.fail(fmt.Errorf("%w: function exited with code %d", errdefs.ErrFunction, code))
	})
	return h
}

func (h *SocketHot) sink() *callSink { return h.current.Load() }

// waitListening waits until the function's socket is there and takes a
// connection, or it exits, or the time is up.
func (h *SocketHot) waitListening(ctx context.Context, limit time.Duration) error {
	if limit <= 0 {
		limit = DefaultListenTimeout
	}
	deadline := time.Now().Add(limit)
	wait := time.Millisecond
	for {
		conn, err := dialSocket(ctx, h.dir)
		if err == nil {
			h.first.Store(&conn)
			return nil
		}
		if errors.Is(err, errUnsafeSocket) {
			h.fail(fmt.Errorf("%w: %v", errdefs.ErrFunction, err))
			return h.failErr
		}
		select {
		case <-h.done:
			if code, ok := h.c.exitCode(500 * time.Millisecond); ok {
				return fmt.Errorf("%w: function exited with code %d before it listened on %s", errdefs.ErrFunction, code, socketMount+"/"+socketName)
			}
			return h.failErr
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("%w: the function did not listen on FN_LISTENER (%s) within %s", errdefs.ErrFunction, socketMount+"/"+socketName, limit)
			h.fail(err)
			return err
		}
		wait = min(wait*2, 20*time.Millisecond)
	}
}

var errUnsafeSocket = errors.New("unsafe socket")

// dialSocket connects to the function's socket in dir. The function owns
// dir and could point lsnr.sock anywhere on the node (kilnd's own socket,
// containerd's) and have kilnd, as root, talk to it; so lsnr.sock must be
// a socket, or a symlink to a bare name in the same dir that is one, and
// the connection goes to the inode checked, through /proc/self/fd, so a
// swap after the check changes nothing. That also keeps the path within
// the 107 bytes a unix socket address allows, however deep the data dir.
func dialSocket(ctx context.Context, dir string) (net.Conn, error) {
	name := socketName
	if target, err := os.Readlink(filepath.Join(dir, name)); err == nil {
		if target == "" || strings.ContainsRune(target, '/') || target == "." || target == ".." {
			return nil, fmt.Errorf("%w: %s links to %q; only a file in the same directory is accepted", errUnsafeSocket, name, target)
		}
		name = target
	}
	fd, err := unix.Open(filepath.Join(dir, name), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a link to a link", errUnsafeSocket, name)
		}
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%w: %s is not a socket", errUnsafeSocket, name)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", "/proc/self/fd/"+strconv.Itoa(fd))
}

// Done is closed when the instance can no longer serve.
func (h *SocketHot) Done() <-chan struct{} { return h.done }

// Err says why the instance can no longer serve; nil while it can.
func (h *SocketHot) Err() error {
	select {
	case <-h.done:
		return h.failErr
	default:
		return nil
	}
}

func (h *SocketHot) fail(err error) {
	h.failOnce.Do(func() {
		h.failErr = err
		close(h.done)
		h.cancelIO()
	})
}

// Close stops and removes the container and its socket dir. Idempotent.
func (h *SocketHot) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		grace := h.grace
		select {
		case <-h.done:
			grace = 0
		default:
		}
		h.fail(fmt.Errorf("container closed: %w", errdefs.ErrUnavailable))
		if conn := h.first.Swap(nil); conn != nil {
			_ = (*conn).Close()
		}
		h.tr.CloseIdleConnections()
		h.c.destroy(grace)
		h.wg.Wait()
		_ = os.RemoveAll(h.dir)
	})
	return nil
}

// Call sends req as Fn's POST /call and maps the answer back. On any
// error the instance is broken and must be discarded.
func (h *SocketHot) Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	if err := h.Err(); err != nil {
		return nil, h.callError(ctx, err)
	}
	if !h.inCall.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("instance is already serving a call")
	}
	h.current.Store(&callSink{id: req.CallID, logs: logs})
	// The request runs until the call's deadline or the instance breaks.
	rctx, cancel := context.WithCancel(ctx)
	stopIO := context.AfterFunc(h.ioCtx, cancel)
	streamed := false
	defer func() {
		if !streamed {
			stopIO()
			cancel()
		}
	}()
	hreq, err := socketRequest(rctx, req)
	if err != nil {
		h.fail(fmt.Errorf("%w: %v", errdefs.ErrInvalid, err))
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalid, err)
	}
	resp, err := h.client.Do(hreq)
	if err != nil {
		var src *protocol.BodyError
		if errors.As(err, &src) {
			h.fail(fmt.Errorf("%w: the request body could not be read: %v", errdefs.ErrUnavailable, src.Err))
			return nil, bodyError(src)
		}
		err = h.callError(ctx, err)
		h.fail(err)
		return nil, err
	}
	out := &protocol.Response{Status: resp.StatusCode, Header: responseHeader(resp.Header)}
	if s := resp.Header.Get("Fn-Http-Status"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil || code < 100 || code > 999 {
			resp.Body.Close()
			err := fmt.Errorf("%w: %w: Fn-Http-Status %q is not a status code", errdefs.ErrFunction, protocol.ErrProtocol, s)
			h.fail(err)
			return nil, err
		}
		out.Status = code
	}
	if resp.ContentLength < 0 && len(resp.TransferEncoding) > 0 {
		// Chunked: stream it as it comes.
		streamed = true
		out.Stream = &socketStream{h: h, body: resp.Body, ctx: ctx, cancel: func() { stopIO(); cancel() }}
		return out, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, h.maxBody+1))
	resp.Body.Close()
	if err != nil {
		err = h.callError(ctx, err)
		h.fail(err)
		return nil, err
	}
	if int64(len(body)) > h.maxBody {
		err := fmt.Errorf("%w: %w: response over %d bytes", errdefs.ErrFunction, protocol.ErrBodyTooLarge, h.maxBody)
		h.fail(err)
		return nil, err
	}
	out.Body = body
	h.inCall.Store(false)
	return out, nil
}

// callError explains a failed call: its deadline or cancellation first,
// then the function's exit, then what broke.
func (h *SocketHot) callError(ctx context.Context, cause error) error {
	if ctx.Err() != nil {
		return callAborted(ctx)
	}
	if code, ok := h.c.exitCode(500 * time.Millisecond); ok {
		return h.c.exitError(code)
	}
	return fmt.Errorf("%w: %w: %v", errdefs.ErrFunction, protocol.ErrProtocol, unwrapURLError(cause))
}

// unwrapURLError drops net/http's "Post \"http://function/call\":"
// prefix, which names kiln's side of the socket, not anything the user
// wrote.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// socketRequest is req as Fn sends it to an http-stream function.
func socketRequest(ctx context.Context, req *protocol.Request) (*http.Request, error) {
	var body io.Reader = http.NoBody
	length := int64(len(req.Body))
	switch {
	case req.BodyStream != nil:
		body, length = &bodySource{req.BodyStream}, req.BodyLength
	case length > 0:
		body = bytes.NewReader(req.Body)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://function/call", body)
	if err != nil {
		return nil, err
	}
	hreq.ContentLength = length
	if length == 0 {
		hreq.Body = http.NoBody
	}
	h := hreq.Header
	for k, vs := range req.Header {
		if k == "Content-Type" {
			h[k] = vs
			continue
		}
		h["Fn-Http-H-"+k] = vs
	}
	h.Set("Fn-Call-Id", req.CallID)
	if !req.Deadline.IsZero() {
		h.Set("Fn-Deadline", req.Deadline.UTC().Format(time.RFC3339Nano))
	}
	h.Set("Fn-Intent", "httprequest")
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	h.Set("Fn-Http-Method", method)
	h.Set("Fn-Http-Request-Url", req.URL)
	return hreq, nil
}

// bodySource marks read errors of the client's body, so they are told
// apart from the function's failures.
type bodySource struct{ r io.Reader }

func (b *bodySource) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &protocol.BodyError{Err: err}
	}
	return n, err
}

// responseHeader is what the client gets: Fn-Http-H-X as X, and
// Content-Type; the rest is between kiln and the function.
func responseHeader(in http.Header) http.Header {
	out := make(http.Header, len(in))
	for k, vs := range in {
		switch {
		case k == "Content-Type":
			out[k] = vs
		case strings.HasPrefix(k, "Fn-Http-H-") && len(k) > len("Fn-Http-H-"):
			out[http.CanonicalHeaderKey(strings.TrimPrefix(k, "Fn-Http-H-"))] = vs
		}
	}
	protocol.StripHopByHop(out)
	return out
}

// socketStream is a chunked answer from an http-stream function: at its
// end the instance takes the next call; a failure or an early Close
// breaks it.
type socketStream struct {
	h      *SocketHot
	body   io.ReadCloser
	ctx    context.Context
	cancel func()
	once   sync.Once
	err    error
}

func (s *socketStream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.body.Read(p)
	switch {
	case err == io.EOF && n > 0:
		// Data first, the end at the next Read, as a chunk-per-Read
		// reader of the stdio formats has it.
		return n, nil
	case err == io.EOF:
		s.end(nil)
		s.err = io.EOF
	case err != nil:
		s.h.fail(fmt.Errorf("%w: stream cut: %v", errdefs.ErrFunction, err))
		s.end(streamCut(s.ctx, func(ctx context.Context) error {
			return fmt.Errorf("%w, in the middle of its streamed response", s.h.callError(ctx, err))
		}))
	}
	return n, s.err
}

func (s *socketStream) Close() error {
	if s.err == nil {
		s.end(fmt.Errorf("%w: the stream was closed before its end", errdefs.ErrUnavailable))
	}
	return nil
}

func (s *socketStream) end(err error) {
	s.once.Do(func() {
		if err != nil {
			s.err = err
			s.h.fail(err)
		}
		_ = s.body.Close()
		s.cancel()
		if err == nil {
			s.h.inCall.Store(false)
		}
	})
}

// Both kinds serve as an Instance.
var (
	_ Instance = (*Hot)(nil)
	_ Instance = (*SocketHot)(nil)
)
