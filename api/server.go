// Package api is kiln's HTTP front end: the Fn v2 resource API, invoke and
// trigger routes, images, health and metrics. It is the only package that
// turns errors into HTTP statuses.
package api

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/metrics"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// Config wires a Server. Store, Pool and Runtime are required.
type Config struct {
	Store   *store.Store
	Pool    *pool.Pool[HotInstance]
	Runtime Runtime
	// Images serves /v2/images; nil disables those routes (503).
	Images Images
	// AdminToken, when set, guards every /v2/ route.
	AdminToken string
	// MaxBody bounds request and response bodies of calls.
	MaxBody int64
	Logger  *logrus.Entry
	Version string
	// Health reports whether the backend (containerd) answers.
	Health func(r *http.Request) error
	// Metrics receives call and HTTP figures; nil records none.
	Metrics *metrics.Metrics
	// CallLogCap bounds the stderr kept per call (default 1 MiB).
	CallLogCap int
	// CallsPerFn and CallMaxAge bound the call records kept.
	CallsPerFn int
	CallMaxAge time.Duration

	// Detached calls: how many run at once (a bounded share of capacity,
	// so async work cannot starve sync calls) and how many may wait.
	AsyncConcurrency int
	QueuePerFn       int
	QueueTotal       int

	// TokenKey signs and checks the JWTs of private fns.
	TokenKey []byte
}

// Server is the HTTP front end. Create it with New.
type Server struct {
	cfg     Config
	store   *store.Store
	log     *logrus.Entry
	handler http.Handler

	draining atomic.Bool
	records  *recorder
	resolve  *resolver
	// adminHash is sha256("Bearer " + AdminToken), computed once: it is
	// compared on every /v2 request and every invoke of a private fn.
	adminHash [sha256.Size]byte
	async     asyncState
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 6 << 20
	}
	if cfg.CallLogCap <= 0 {
		cfg.CallLogCap = 1 << 20
	}
	if cfg.CallsPerFn <= 0 {
		cfg.CallsPerFn = 1000
	}
	if cfg.CallMaxAge <= 0 {
		cfg.CallMaxAge = 24 * time.Hour
	}
	s := &Server{cfg: cfg, store: cfg.Store, log: cfg.Logger}
	if cfg.AdminToken != "" {
		s.adminHash = sha256.Sum256([]byte("Bearer " + cfg.AdminToken))
	}
	if cfg.Store != nil {
		s.resolve = newResolver(cfg.Store)
		s.records = newRecorder(cfg.Store, cfg.Logger, cfg.CallsPerFn, cfg.CallMaxAge)
	}
	mux := http.NewServeMux()
	s.registerResources(mux)
	s.registerInvoke(mux)
	s.registerImages(mux)
	s.registerTokens(mux)
	mux.HandleFunc("GET /healthz", s.health)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": cfg.Version})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, errRouteNotFound))
	})
	s.handler = s.countRequests(s.guardAdmin(mux))
	s.startAsync()
	return s
}

// StopAsync stops the async dispatcher and cron triggers and waits for
// detached calls in flight; queued ones stay in the store for the next
// start. kilnd calls it after SetDraining, before the pool closes.
func (s *Server) StopAsync() { s.closeAsync() }

// Close stops async work (if StopAsync was not called) and flushes
// pending call records. Call it after the pool drained.
func (s *Server) Close() {
	s.closeAsync()
	if s.records != nil {
		s.records.close()
	}
}

// statusWriter remembers the status a handler wrote, for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countRequests counts requests by route template, never by raw path, so
// the label set stays bounded whatever clients send.
func (s *Server) countRequests(next http.Handler) http.Handler {
	if s.cfg.Metrics == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" || route == "/" {
			route = "other"
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.cfg.Metrics.HTTPRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	})
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Health != nil {
		if err := s.cfg.Health(r); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// guardAdmin requires the admin token on /v2/ routes when one is set.
// Invoke and trigger routes stay open: they are the public face.
func (s *Server) guardAdmin(next http.Handler) http.Handler {
	if s.cfg.AdminToken == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") && !s.isAdmin(r.Header) {
			writeError(w, errUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Errors api itself raises; store and pool errors are mapped in statusOf.
var (
	errRouteNotFound = errors.New("not found")
	errUnauthorized  = errors.New("missing or invalid admin token")
	// ErrInvalid marks bad input: 400.
	ErrInvalid = errors.New("invalid")
	// errTooLarge marks a request body over its limit: 413.
	errTooLarge = errors.New("request body too large")
)

// apiError lets a handler pick the status explicitly.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func statusOf(err error) int {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae.status
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errRouteNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errdefs.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errdefs.ErrTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, errdefs.ErrFunction), errors.Is(err, protocol.ErrProtocol):
		return http.StatusBadGateway
	case errors.Is(err, pool.ErrNoCapacity), errors.Is(err, pool.ErrClosed), errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers with Fn's error shape, {"message", "code"}.
func writeError(w http.ResponseWriter, err error) {
	status := statusOf(err)
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
	}
	writeJSON(w, status, map[string]any{"message": err.Error(), "code": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
