// Package api is kiln's HTTP front end: the Fn v2 resource API, invoke and
// trigger routes, images, health and metrics. It is the only package that
// turns errors into HTTP statuses.
package api

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/metrics"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// Config wires a Server. Store and Calls are required.
type Config struct {
	Store *store.Store
	// Calls runs invokes and serves call records; api only translates.
	Calls *calls.Service
	// Images serves /v2/images; nil disables those routes (503).
	Images Images
	// AdminToken, when set, guards every /v2/ route.
	AdminToken string
	// MaxBody bounds request bodies of calls.
	MaxBody int64
	Logger  *logrus.Entry
	Version string
	// Health reports whether the backend (containerd) answers.
	Health func(r *http.Request) error
	// Metrics receives HTTP figures; nil records none.
	Metrics *metrics.Metrics
	// TokenKey signs and checks the JWTs of private fns.
	TokenKey []byte
}

// Server is the HTTP front end. Create it with New; it starts nothing of
// its own, so it has no Close.
type Server struct {
	cfg     Config
	store   *store.Store
	calls   *calls.Service
	log     *logrus.Entry
	handler http.Handler

	// adminHash is sha256("Bearer " + AdminToken), computed once: it is
	// compared on every /v2 request and every invoke of a private fn.
	adminHash [sha256.Size]byte
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = protocol.DefaultMaxBody
	}
	s := &Server{cfg: cfg, store: cfg.Store, calls: cfg.Calls, log: cfg.Logger}
	if cfg.AdminToken != "" {
		s.adminHash = sha256.Sum256([]byte("Bearer " + cfg.AdminToken))
	}
	mux := http.NewServeMux()
	s.registerResources(mux)
	s.registerInvoke(mux)
	s.registerImages(mux)
	s.registerTokens(mux)
	s.registerSecrets(mux)
	s.registerLogs(mux)
	mux.HandleFunc("GET /healthz", s.health)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": cfg.Version})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
	})
	s.handler = s.countRequests(s.guardAdmin(mux))
	return s
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
	if s.calls != nil && s.calls.Draining() {
		// A load balancer's check: send new calls elsewhere.
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
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
			writeError(w, errdefs.Errorf(errdefs.ErrUnauthorized, "missing or invalid admin token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
