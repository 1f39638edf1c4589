// Package calls owns a call's life: it turns an app, a fn and its trigger
// plus a request into a response. It builds the executor's function spec
// (environment, path, sandbox policy) and the pool key from it, which is
// the one place that decides when a container is stale; it runs sync
// calls, stores and dispatches detached ones, fires cron triggers, keeps
// call records, and drains all of it on Close.
//
// api translates HTTP to this package and back and starts no goroutines;
// cmd/kilnd wires a Service to the containerd runtime and the store.
package calls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/metrics"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/seal"
	"github.com/kiln-run/kiln/store"
)

// Instance is a warm container that answers calls one at a time.
type Instance interface {
	pool.Instance
	Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error)
}

// Runtime starts containers; cmd/kilnd wires the containerd one.
type Runtime interface {
	// StartHot starts a hot container for f.
	StartHot(ctx context.Context, f *executor.Function) (Instance, error)
	// RunCold runs one default-format call in a fresh container.
	RunCold(ctx context.Context, f *executor.Function, req *protocol.Request, logs io.Writer) (*protocol.Response, error)
	// ImageID resolves a reference to the digest of its content, so a
	// re-tagged image gets fresh containers.
	ImageID(ctx context.Context, ref string) (string, error)
}

// Config wires a Service. Store and Runtime are required.
type Config struct {
	Store   *store.Store
	Runtime Runtime
	// Pool configures the warm pool the Service creates and closes.
	Pool    pool.Config
	Logger  *logrus.Entry
	Metrics *metrics.Metrics
	// AllowHostNetwork lets fns annotated kiln.io/network=host share the
	// node's network namespace.
	AllowHostNetwork bool
	// Secrets seals and opens apps' secrets; nil: fns cannot have any.
	Secrets *seal.Box
	// Queue carries detached calls; nil means the store's own (one node).
	// The Service closes it.
	Queue Queue

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
}

// Defaults for the zero values of Config.
const (
	DefaultCallLogCap       = 1 << 20
	DefaultCallsPerFn       = 1000
	DefaultCallMaxAge       = 24 * time.Hour
	DefaultAsyncConcurrency = 4
	DefaultQueuePerFn       = 1000
	DefaultQueueTotal       = 10000
)

// Service runs calls. New builds it, Open starts its background work
// (the record writer, the detached-call dispatcher, the cron engine),
// Close drains it.
type Service struct {
	cfg   Config
	store *store.Store
	rt    Runtime
	pool  *pool.Pool[Instance]
	log   *logrus.Entry
	mx    *metrics.Metrics

	targets *resolver
	records *recorder
	async   asyncState
	queue   Queue
	logs    logHub

	// keys remembers the spec key each fn's containers were last started
	// with, so Refresh retires them only when what they see changed.
	keys sync.Map // fn id -> string
	// warmKeys and warmCounts are the pool key and count each fn's
	// min_warm is kept for.
	warmKeys, warmCounts sync.Map
	conc                 concurrency

	// admission: every call accepted while not draining is counted, and
	// Close waits for them all before any container goes.
	mu       sync.Mutex
	draining bool
	accepted sync.WaitGroup

	openOnce, closeOnce sync.Once
	closeErr            error

	// nodeID names this kilnd among a cluster's, for leases.
	nodeID string
}

// New builds a Service; it starts nothing.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	cfg.CallLogCap = orDefault(cfg.CallLogCap, DefaultCallLogCap)
	cfg.CallsPerFn = orDefault(cfg.CallsPerFn, DefaultCallsPerFn)
	if cfg.CallMaxAge <= 0 {
		cfg.CallMaxAge = DefaultCallMaxAge
	}
	host, _ := os.Hostname()
	s := &Service{
		nodeID: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), store.NewID()),
		cfg:    cfg,
		store:  cfg.Store,
		rt:     cfg.Runtime,
		pool:   pool.New[Instance](cfg.Pool),
		log:    cfg.Logger,
		mx:     cfg.Metrics,
	}
	s.targets = newResolver(cfg.Store, cfg.AllowHostNetwork, cfg.Secrets)
	s.queue = cfg.Queue
	if s.queue == nil {
		s.queue = newStoreQueue(cfg.Store)
	}
	s.records = newRecorder(cfg.Store, cfg.Logger, cfg.CallsPerFn, cfg.CallMaxAge)
	s.async.init(cfg)
	return s
}

// Pool is the warm pool, for stats and tests.
func (s *Service) Pool() *pool.Pool[Instance] { return s.pool }

// Open settles calls a crash left running, then starts the record writer,
// the dispatcher and the cron engine. Call it once, before serving.
func (s *Service) Open(ctx context.Context) error {
	var err error
	s.openOnce.Do(func() {
		s.records.open()
		// Before the dispatcher starts, so a call requeued here is not
		// also being claimed.
		if s.queue.Recovers() {
			err = s.recoverInterrupted(ctx)
		}
		s.startAsync()
		if werr := s.warmAll(ctx); werr != nil && err == nil {
			err = werr
		}
	})
	return err
}

// accept counts one call in, or refuses it once a drain began; release
// counts it out.
func (s *Service) accept() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return errShuttingDown
	}
	s.accepted.Add(1)
	return nil
}

func (s *Service) release() { s.accepted.Done() }

var errShuttingDown = fmt.Errorf("kilnd is shutting down: %w", errdefs.ErrUnavailable)

// Draining reports whether Close has begun; health checks say so, so a
// load balancer sends calls elsewhere.
func (s *Service) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Close drains: calls arriving from now on get ErrUnavailable; every call
// already accepted (running, waiting in the pool's queue, or waiting for
// a launch, sync or detached) runs to its end, each bounded by its own
// deadline, and launches under way are not cancelled. Queued detached
// calls stay in the store for the next start. Then every container is
// removed and the records are flushed. ctx bounds the wait for calls; a
// call still running when it ends loses its container. Safe to call more
// than once; later calls wait for the first.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.draining = true
		s.mu.Unlock()
		start := time.Now()
		// The dispatcher and cron stop taking work; the detached calls
		// they started are accepted calls, waited for below.
		s.stopAsync()
		done := make(chan struct{})
		go func() { s.accepted.Wait(); close(done) }()
		var errs []error
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("drain: calls still running after %s: %w", time.Since(start).Round(time.Millisecond), ctx.Err()))
		}
		s.log.WithField("took", time.Since(start).Round(time.Millisecond)).Info("calls drained")
		if err := s.pool.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain: %w", err))
		}
		s.stopAsyncWait()
		if err := s.queue.Close(); err != nil {
			errs = append(errs, fmt.Errorf("queue: %w", err))
		}
		s.logs.close()
		s.records.close()
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}
