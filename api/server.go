// Package api is kiln's HTTP front end: the Fn v2 resource API, invoke and
// trigger routes, images, health and metrics. It is the only package that
// turns errors into HTTP statuses.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
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
}

// Server is the HTTP front end. Create it with New.
type Server struct {
	cfg     Config
	store   *store.Store
	log     *logrus.Entry
	handler http.Handler

	draining atomic.Bool
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 6 << 20
	}
	s := &Server{cfg: cfg, store: cfg.Store, log: cfg.Logger}
	mux := http.NewServeMux()
	s.registerResources(mux)
	s.registerInvoke(mux)
	s.registerImages(mux)
	mux.HandleFunc("GET /healthz", s.health)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": cfg.Version})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, errRouteNotFound))
	})
	s.handler = s.guardAdmin(mux)
	return s
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
	want := []byte("Bearer " + s.cfg.AdminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") {
			got := []byte(r.Header.Get("Authorization"))
			if subtle.ConstantTimeCompare(got, want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
				writeError(w, errUnauthorized)
				return
			}
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
	writeJSON(w, status, map[string]any{"message": err.Error(), "code": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
