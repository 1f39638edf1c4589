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
	"time"

	"github.com/containerd/containerd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/api"
	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/metrics"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
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
	pool     *pool.Pool[api.HotInstance]
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
	m.runtime, err = executor.New(executor.Config{
		Client:     client,
		Namespace:  m.cfg.Namespace,
		FIFODir:    filepath.Join(m.cfg.DataDir, "fifo"),
		MaxBody:    m.cfg.MaxBody,
		GroupShims: m.cfg.GroupShims,
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
	m.store, err = store.Open(filepath.Join(m.cfg.DataDir, "kiln.db"))
	if err != nil {
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
	m.pool = pool.New[api.HotInstance](pool.Config{
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
			Evicted:    func(app, fn string) { mx.Evictions.Inc() },
			QueueWait:  func(app, fn string, waited time.Duration) { mx.QueueWait.Observe(waited.Seconds()) },
			Changed:    mx.SetContainers,
			MemoryUsed: mx.SetMemory,
		},
	})
	m.runtime.OnColdStart(func(app, fn string, took time.Duration) {
		mx.ContainerStart.WithLabelValues(app, fn, "cold").Inc()
		mx.StartSeconds.Observe(took.Seconds())
	})
	tokenKey, err := api.LoadOrCreateTokenKey(filepath.Join(m.cfg.DataDir, "token.key"))
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	m.api = api.New(api.Config{
		TokenKey:   tokenKey,
		Store:      m.store,
		Pool:       m.pool,
		Runtime:    &runtimeAdapter{rt: m.runtime, store: m.store, allowHostNetwork: m.cfg.AllowHostNetwork},
		Images:     &imagesAdapter{rt: m.runtime},
		AdminToken: m.cfg.AdminToken,
		MaxBody:    m.cfg.MaxBody,
		Logger:     m.log,
		Version:    Version,
		Health:     func(r *http.Request) error { return m.runtime.Health(r.Context()) },
		Metrics:    mx,
		CallLogCap: m.cfg.CallLogCap,
		CallsPerFn: m.cfg.CallsPerFn,
		CallMaxAge: m.cfg.CallMaxAge,

		AsyncConcurrency: m.cfg.AsyncConcurrency,
		QueuePerFn:       m.cfg.QueuePerFn,
		QueueTotal:       m.cfg.QueueTotal,
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
	m.log.WithFields(logrus.Fields{"listen": m.Addr(), "containerd": address, "data_dir": m.cfg.DataDir}).Info("kilnd serving")
	return nil
}

// Close refuses new calls, lets in-flight calls finish (bounded by ctx),
// removes every container, then stops the HTTP server and containerd.
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	if m.api != nil {
		m.api.SetDraining()
		m.api.StopAsync()
	}
	if m.pool != nil {
		if err := m.pool.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
	}
	if m.api != nil {
		m.api.Close()
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

// runtimeAdapter turns store records into the executor's Function.
type runtimeAdapter struct {
	rt               *executor.Runtime
	store            *store.Store
	allowHostNetwork bool
}

func (a *runtimeAdapter) function(ctx context.Context, app *store.App, fn *store.Fn) *executor.Function {
	cfg := make(map[string]string, len(app.Config)+len(fn.Config))
	for k, v := range app.Config {
		cfg[k] = v
	}
	for k, v := range fn.Config {
		cfg[k] = v
	}
	f := &executor.Function{
		AppName: app.Name, FnName: fn.Name, FnID: fn.ID, Image: fn.Image, Format: fn.Format,
		MemoryMB: fn.Memory, MilliCPUs: fn.CPUs, Config: cfg, TmpfsMB: fn.TmpfsSize,
		HostNetwork: fn.Annotations[annotationNetwork] == "host",
	}
	if trigs, _, err := a.store.ListTriggers(ctx, store.ListOptions{FnID: fn.ID}); err == nil {
		for _, t := range trigs {
			if t.Type == "" || t.Type == "http" {
				f.Path = t.Source
				break
			}
		}
	}
	return f
}

// annotationNetwork is how a fn asks for the node's network namespace.
const annotationNetwork = "kiln.io/network"

// checkNetwork refuses host networking unless the operator allowed it: a
// fn on the node's network can reach kilnd and everything else there.
func (a *runtimeAdapter) checkNetwork(f *executor.Function) error {
	if f.HostNetwork && !a.allowHostNetwork {
		return fmt.Errorf("fn %q asks for host networking (%s), which this kilnd does not allow (--allow-host-network): %w",
			f.FnName, annotationNetwork, errdefs.ErrInvalid)
	}
	return nil
}

func (a *runtimeAdapter) StartHot(ctx context.Context, app *store.App, fn *store.Fn) (api.HotInstance, error) {
	f := a.function(ctx, app, fn)
	if err := a.checkNetwork(f); err != nil {
		return nil, err
	}
	h, err := a.rt.StartHot(ctx, f)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (a *runtimeAdapter) RunCold(ctx context.Context, app *store.App, fn *store.Fn, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	f := a.function(ctx, app, fn)
	if err := a.checkNetwork(f); err != nil {
		return nil, err
	}
	return a.rt.RunCold(ctx, f, req, logs)
}

func (a *runtimeAdapter) ImageID(ctx context.Context, ref string) (string, error) {
	return a.rt.ImageID(ctx, ref)
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
