package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/containerd/containerd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/api"
	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/metrics"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/seal"
	"github.com/kiln-run/kiln/store"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// Main is kilnd wired together. Open starts it, Close stops it; tests use
// it in-process the same way main does.
type Main struct {
	cfg Config
	log *logrus.Entry

	daemon   *executor.Daemon
	client   *containerd.Client
	runtime  *executor.Runtime
	store    *store.Store
	calls    *calls.Service
	api      *api.Server
	http     *http.Server
	ln       net.Listener
	serveErr chan error
	pprof    *http.Server
}

// NewMain returns an unopened Main.
func NewMain(cfg Config) *Main {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	if cfg.LogFormat == "json" {
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	}
	if lvl, err := logrus.ParseLevel(cfg.LogLevel); err == nil {
		l.SetLevel(lvl)
	}
	return &Main{cfg: cfg, log: logrus.NewEntry(l), serveErr: make(chan error, 1)}
}

// ServeErr reports the HTTP server failing after Open.
func (m *Main) ServeErr() <-chan error { return m.serveErr }

// Addr is the address kilnd listens on (useful with port 0).
func (m *Main) Addr() string { return m.ln.Addr().String() }

// Open connects to (or starts) containerd, removes orphans, opens the
// store and starts serving. The listener is bound before serving so a
// port in use is an error here, not a log line later.
func (m *Main) Open(ctx context.Context) error {
	if err := os.MkdirAll(m.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	address := m.cfg.Containerd
	if address != "" {
		if err := executor.Ping(ctx, address); err != nil {
			m.log.WithError(err).Warnf("containerd at %s does not answer; starting an embedded one", address)
			address = ""
		}
	}
	if address == "" {
		d, err := executor.StartContainerd(ctx, filepath.Join(m.cfg.DataDir, "containerd"), m.log)
		if err != nil {
			return err
		}
		m.daemon = d
		address = d.Address()
	}
	client, err := containerd.New(address, containerd.WithDefaultNamespace(m.cfg.Namespace))
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	m.client = client
	initPath, err := kilnInitPath(m.cfg.KilnInit, os.Executable)
	if err != nil {
		return err
	}
	if initPath == "" {
		m.log.Info("kiln-init not found beside kilnd (or --kiln-init=off): the shim copies functions' stdio")
	}
	m.runtime, err = executor.New(executor.Config{
		Client:     client,
		Namespace:  m.cfg.Namespace,
		FIFODir:    filepath.Join(m.cfg.DataDir, "fifo"),
		SocketDir:  filepath.Join(m.cfg.DataDir, "sock"),
		SecretDir:  filepath.Join(m.cfg.DataDir, "secrets"),
		MaxBody:    m.cfg.MaxBody,
		MaxStream:  m.cfg.MaxStream,
		GroupShims: m.cfg.GroupShims,
		InitPath:   initPath,
		Logger:     m.log,

		InsecureRegistries: m.cfg.InsecureRegistries,
		RegistryConfigPath: m.cfg.RegistryConfig,
	})
	if err != nil {
		return err
	}
	swept, err := m.runtime.Sweep(ctx)
	if err != nil {
		return fmt.Errorf("orphan sweep: %w", err)
	}
	if swept > 0 {
		m.log.WithField("containers", swept).Info("removed containers left by an earlier run")
	}
	if m.cfg.Store != "" {
		m.store, err = store.OpenURL(ctx, m.cfg.Store, m.log)
		if err != nil {
			return err
		}
		m.log.Info("store in Postgres, shared by the cluster")
	} else if m.store, err = store.Open(filepath.Join(m.cfg.DataDir, "kiln.db")); err != nil {
		return err
	}
	capacity := m.cfg.MaxMemoryMB
	if capacity == 0 {
		capacity, err = pool.DetectCapacityMB(512)
		if err != nil {
			return fmt.Errorf("detect memory capacity (set --max-memory): %w", err)
		}
	}
	m.log.WithField("capacity_mb", capacity).Info("memory for containers")

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mx := metrics.New(reg)
	mx.SetMemory(0, capacity)
	m.runtime.OnColdStart(func(app, fn string, took time.Duration) {
		mx.ContainerStart.WithLabelValues(app, fn, "cold").Inc()
		mx.StartSeconds.Observe(took.Seconds())
	})
	secretsKey, err := seal.LoadOrCreateKey(filepath.Join(m.cfg.DataDir, "secrets.key"), "secrets key")
	if err != nil {
		return err
	}
	secrets, err := seal.NewBox(secretsKey)
	if err != nil {
		return err
	}
	var queue calls.Queue
	if m.cfg.Queue != "" {
		q, err := calls.OpenJetStream(ctx, m.cfg.Queue, 0, m.log)
		if err != nil {
			return err
		}
		queue = q
		m.log.WithField("queue", m.cfg.Queue).Info("detached calls on NATS JetStream")
	}
	m.calls = calls.New(calls.Config{
		Queue:   queue,
		Secrets: secrets,
		Store:   m.store,
		Runtime: hotRuntime{m.runtime},
		Pool: pool.Config{
			CapacityMB: capacity,
			Hooks: pool.Hooks{
				Launched: func(app, fn string, took time.Duration, err error) {
					if err != nil {
						m.log.WithError(err).WithFields(logrus.Fields{"app": app, "fn": fn}).Warn("container launch failed")
						return
					}
					mx.ContainerStart.WithLabelValues(app, fn, "hot").Inc()
					mx.StartSeconds.Observe(took.Seconds())
				},
				Evicted:   func(app, fn string) { mx.Evictions.Inc() },
				QueueWait: func(app, fn string, waited time.Duration) { mx.QueueWait.Observe(waited.Seconds()) },
				Changed: func(app, fn string, c pool.Counts) {
					mx.SetContainers(app, fn, c.Starting, c.Idle, c.Busy, c.Waiting)
				},
				Retired:    mx.ObserveRetired,
				MemoryUsed: mx.SetMemory,
			},
		},
		Logger:           m.log,
		Metrics:          mx,
		AllowHostNetwork: m.cfg.AllowHostNetwork,
		CallLogCap:       m.cfg.CallLogCap,
		CallsPerFn:       m.cfg.CallsPerFn,
		CallMaxAge:       m.cfg.CallMaxAge,
		AsyncConcurrency: m.cfg.AsyncConcurrency,
		QueuePerFn:       m.cfg.QueuePerFn,
		QueueTotal:       m.cfg.QueueTotal,
	})
	if err := m.calls.Open(ctx); err != nil {
		return err
	}
	tokenKey, err := api.LoadOrCreateTokenKey(filepath.Join(m.cfg.DataDir, "token.key"))
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	m.api = api.New(api.Config{
		TokenKey:   tokenKey,
		Store:      m.store,
		Calls:      m.calls,
		Images:     &imagesAdapter{rt: m.runtime},
		AdminToken: m.cfg.AdminToken,
		MaxBody:    m.cfg.MaxBody,
		Logger:     m.log,
		Version:    Version,
		Health:     func(r *http.Request) error { return m.runtime.Health(r.Context()) },
		Metrics:    mx,
	})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", m.api)

	m.ln, err = net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", m.cfg.Listen, err)
	}
	m.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
	}
	go func() {
		if err := m.http.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.serveErr <- err
		}
	}()
	if m.cfg.PprofAddr != "" {
		pln, err := net.Listen("tcp", m.cfg.PprofAddr)
		if err != nil {
			return fmt.Errorf("pprof listen on %s: %w", m.cfg.PprofAddr, err)
		}
		pmux := http.NewServeMux()
		pmux.HandleFunc("/debug/pprof/", pprof.Index)
		pmux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		m.pprof = &http.Server{Handler: pmux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = m.pprof.Serve(pln) }()
		m.log.WithField("pprof", pln.Addr().String()).Info("profiler serving")
	}
	m.log.WithFields(logrus.Fields{"listen": m.Addr(), "containerd": address, "data_dir": m.cfg.DataDir, "procs": runtime.GOMAXPROCS(0)}).Info("kilnd serving")
	return nil
}

// Close refuses new calls (503, and /healthz says draining) while every
// call already accepted finishes (bounded by ctx), removes every
// container, then stops the HTTP server and containerd.
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	if m.calls != nil {
		if err := m.calls.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if m.http != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := m.http.Shutdown(sctx); err != nil {
			_ = m.http.Close()
		}
		cancel()
	}
	if m.pprof != nil {
		_ = m.pprof.Close()
	}
	if m.runtime != nil {
		_ = m.runtime.Close()
	}
	if m.client != nil {
		_ = m.client.Close()
	}
	if m.store != nil {
		if err := m.store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if m.daemon != nil {
		m.daemon.Stop()
	}
	return errors.Join(errs...)
}

// hotRuntime gives the executor's *Hot back as the calls package's
// Instance; the rest passes through.
type hotRuntime struct{ *executor.Runtime }

func (r hotRuntime) StartHot(ctx context.Context, f *executor.Function) (calls.Instance, error) {
	h, err := r.Runtime.StartHot(ctx, f)
	if err != nil {
		return nil, err
	}
	return h, nil
}

type imagesAdapter struct{ rt *executor.Runtime }

func (a *imagesAdapter) Import(ctx context.Context, r io.Reader) ([]string, error) {
	return a.rt.Import(ctx, r)
}

func (a *imagesAdapter) List(ctx context.Context) ([]api.Image, error) {
	list, err := a.rt.Images(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Image, len(list))
	for i, im := range list {
		out[i] = api.Image(im)
	}
	return out, nil
}

func (a *imagesAdapter) Pull(ctx context.Context, ref string, progress func(api.PullProgress)) (api.Image, error) {
	var report func(executor.PullProgress)
	if progress != nil {
		report = func(p executor.PullProgress) { progress(api.PullProgress(p)) }
	}
	im, err := a.rt.Pull(ctx, ref, report)
	return api.Image(im), err
}

func (a *imagesAdapter) Get(ctx context.Context, ref string) (api.Image, error) {
	im, err := a.rt.LookupImage(ctx, ref)
	return api.Image(im), err
}

func (a *imagesAdapter) Delete(ctx context.Context, ref string) (api.Image, error) {
	im, err := a.rt.DeleteImage(ctx, ref)
	return api.Image(im), err
}
