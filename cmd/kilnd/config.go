package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/protocol"
)

// Config is kilnd's configuration; every flag has an env var twin so the
// daemon can be configured in a container without a command line.
type Config struct {
	Listen      string
	Containerd  string
	DataDir     string
	Namespace   string
	LogFormat   string
	LogLevel    string
	AdminToken  string
	MaxMemoryMB int64
	MaxBody     int64
	// MaxStream bounds a streamed response body; 0 means no bound.
	MaxStream       int64
	ShutdownTimeout time.Duration
	GroupShims      bool
	// KilnInit is kiln-init's path, "" to look for it beside kilnd's own
	// executable, "off" to let the shim copy stdio (kilnInitPath).
	KilnInit   string
	CallLogCap int
	CallsPerFn int
	CallMaxAge time.Duration
	// InsecureRegistries are pulled from over plain HTTP.
	InsecureRegistries []string
	// RegistryConfig is a docker config.json with registry credentials.
	RegistryConfig string
	// AllowHostNetwork lets fns annotated kiln.io/network=host share the
	// node's network namespace.
	AllowHostNetwork bool
	AsyncConcurrency int
	QueuePerFn       int
	QueueTotal       int
	// PprofAddr serves Go's profiler; loopback only, off when empty.
	PprofAddr string
	// Procs bounds the threads running kilnd's Go code at once (its
	// GOMAXPROCS); 0 means half of what Go would use, at least 1 (procsFor).
	Procs int
	// Store is a postgres:// URL: apps, fns, triggers, calls and secrets
	// in Postgres, shared by every node. Empty: the embedded bbolt file
	// under the data dir.
	Store string
	// Queue is a nats:// URL: detached calls go on a JetStream work queue
	// shared by every node. Empty: the store's own queue (one node).
	Queue string
}

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/kiln"
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "kiln")
	}
	return "kiln-data"
}

func parseFlags(args []string, getenv func(string) string) (Config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	envInt := func(name string, def int64) (int64, error) {
		v := getenv(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: not a number", name, v)
		}
		return n, nil
	}
	// Bad values in these env vars are reported once, after parsing.
	var envErr error
	envNum := func(name string, def int64) int64 {
		n, err := envInt(name, def)
		if err != nil && envErr == nil {
			envErr = err
		}
		return n
	}
	envDur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("%s=%q: not a duration", name, v)
		}
		return d
	}
	maxMem, err := envInt("KILN_MAX_MEMORY", 0)
	if err != nil {
		return Config{}, err
	}
	maxBody, err := envInt("KILN_MAX_BODY", protocol.DefaultMaxBody)
	if err != nil {
		return Config{}, err
	}
	var c Config
	fs := flag.NewFlagSet("kilnd", flag.ContinueOnError)
	fs.StringVar(&c.Listen, "listen", env("KILN_LISTEN", "127.0.0.1:8080"), "HTTP listen address (KILN_LISTEN)")
	fs.StringVar(&c.Containerd, "containerd", env("KILN_CONTAINERD", ""), "containerd socket; when unset or not answering, kilnd runs its own (KILN_CONTAINERD)")
	fs.StringVar(&c.DataDir, "data-dir", env("KILN_DATA_DIR", defaultDataDir()), "data directory (KILN_DATA_DIR)")
	fs.StringVar(&c.Namespace, "namespace", env("KILN_NAMESPACE", "kiln"), "containerd namespace kiln owns (KILN_NAMESPACE)")
	fs.StringVar(&c.LogFormat, "log-format", env("KILN_LOG_FORMAT", "text"), "log format: text or json (KILN_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", env("KILN_LOG_LEVEL", "info"), "log level (KILN_LOG_LEVEL)")
	fs.StringVar(&c.AdminToken, "admin-token", env("KILN_ADMIN_TOKEN", ""), "when set, /v2/* needs Authorization: Bearer TOKEN (KILN_ADMIN_TOKEN)")
	fs.Int64Var(&c.MaxMemoryMB, "max-memory", maxMem, "memory (MB) for containers; 0 means available memory less headroom (KILN_MAX_MEMORY)")
	fs.Int64Var(&c.MaxBody, "max-body", maxBody, "largest request body, and largest response body kilnd holds whole, in bytes (KILN_MAX_BODY)")
	// No bound by default: kilnd holds none of a streamed body, and the
	// fn's timeout bounds how long one runs.
	fs.Int64Var(&c.MaxStream, "max-stream", envNum("KILN_MAX_STREAM", 0), "largest streamed (chunked) response body in bytes; 0 means no bound (KILN_MAX_STREAM)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", envDur("KILN_SHUTDOWN_TIMEOUT", 5*time.Minute), "how long a stop waits for in-flight calls (KILN_SHUTDOWN_TIMEOUT)")
	// On by default: a shim costs ~2.5 MB and some CPU per call; kiln now
	// makes sure a group's shim exits with its last container, which under
	// crash churn it once did not (executor/shimgroup.go, docs/SOAK.md).
	fs.StringVar(&c.KilnInit, "kiln-init", env("KILN_INIT", ""), "kiln-init binary that gives functions kilnd's FIFOs as their stdio directly; empty: kiln-init beside kilnd if it is there; off: the shim copies stdio (KILN_INIT)")
	fs.BoolVar(&c.GroupShims, "group-shims", env("KILN_GROUP_SHIMS", "true") == "true", "containers of one fn share shim processes, 16 to a shim (KILN_GROUP_SHIMS)")
	fs.BoolVar(&c.AllowHostNetwork, "allow-host-network", env("KILN_ALLOW_HOST_NETWORK", "") == "true", "let fns annotated kiln.io/network=host use the node's network (KILN_ALLOW_HOST_NETWORK)")
	fs.IntVar(&c.AsyncConcurrency, "async-concurrency", int(envNum("KILN_ASYNC_CONCURRENCY", calls.DefaultAsyncConcurrency)), "detached calls run at once, a bounded share so sync calls are not starved (KILN_ASYNC_CONCURRENCY)")
	fs.IntVar(&c.QueuePerFn, "queue-per-fn", int(envNum("KILN_QUEUE_PER_FN", calls.DefaultQueuePerFn)), "detached calls that may wait per fn (KILN_QUEUE_PER_FN)")
	fs.IntVar(&c.QueueTotal, "queue-total", int(envNum("KILN_QUEUE_TOTAL", calls.DefaultQueueTotal)), "detached calls that may wait in all (KILN_QUEUE_TOTAL)")
	fs.IntVar(&c.CallLogCap, "call-log-cap", int(envNum("KILN_CALL_LOG_CAP", calls.DefaultCallLogCap)), "stderr bytes kept per call (KILN_CALL_LOG_CAP)")
	fs.IntVar(&c.CallsPerFn, "calls-per-fn", int(envNum("KILN_CALLS_PER_FN", calls.DefaultCallsPerFn)), "call records kept per fn (KILN_CALLS_PER_FN)")
	fs.DurationVar(&c.CallMaxAge, "call-max-age", envDur("KILN_CALL_MAX_AGE", calls.DefaultCallMaxAge), "call records older than this are dropped (KILN_CALL_MAX_AGE)")
	insecure := fs.String("insecure-registries", env("KILN_INSECURE_REGISTRIES", ""), "comma-separated host[:port] registries pulled from over plain HTTP (KILN_INSECURE_REGISTRIES)")
	fs.StringVar(&c.RegistryConfig, "registry-config", env("KILN_REGISTRY_CONFIG", ""), "docker config.json with registry credentials; default $DOCKER_CONFIG/config.json or ~/.docker/config.json (KILN_REGISTRY_CONFIG)")
	fs.StringVar(&c.Store, "store", env("KILN_STORE", ""), "postgres://user:pass@host/db: the store in Postgres, shared by every node; empty: an embedded file under --data-dir (KILN_STORE)")
	fs.StringVar(&c.Queue, "queue", env("KILN_QUEUE", ""), "nats://host:port: detached calls on a NATS JetStream work queue shared by every node; empty: kilnd's own store (KILN_QUEUE)")
	fs.IntVar(&c.Procs, "procs", int(envNum("KILN_PROCS", 0)), "CPUs kilnd's own Go code may use at once; 0: half the CPUs, at least 1, unless GOMAXPROCS is set (KILN_PROCS)")
	fs.StringVar(&c.PprofAddr, "pprof", env("KILN_PPROF", ""), "serve Go's profiler on this loopback address, e.g. 127.0.0.1:6060 (KILN_PPROF)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	for _, h := range strings.Split(*insecure, ",") {
		if h = strings.TrimSpace(h); h != "" {
			c.InsecureRegistries = append(c.InsecureRegistries, h)
		}
	}
	if envErr != nil {
		return Config{}, envErr
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return Config{}, fmt.Errorf("--log-format must be text or json, not %q", c.LogFormat)
	}
	if c.Store != "" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		return Config{}, fmt.Errorf("--store: want a postgres:// URL (or nothing, for the embedded store)")
	}
	if c.Queue != "" && !strings.HasPrefix(c.Queue, "nats://") && !strings.HasPrefix(c.Queue, "tls://") {
		return Config{}, fmt.Errorf("--queue %q: want a nats:// (or tls://) URL", c.Queue)
	}
	if c.PprofAddr != "" {
		host, _, err := net.SplitHostPort(c.PprofAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return Config{}, fmt.Errorf("--pprof %q: must be a loopback address and port (the profiler exposes memory contents)", c.PprofAddr)
		}
	}
	if c.Procs < 0 {
		return Config{}, fmt.Errorf("--procs must be >= 0, not %d", c.Procs)
	}
	if c.MaxMemoryMB < 0 || c.MaxBody <= 0 || c.MaxStream < 0 {
		return Config{}, fmt.Errorf("--max-memory and --max-stream must be >= 0 and --max-body > 0")
	}
	return c, nil
}

// procsFor is kilnd's GOMAXPROCS. kilnd is a hop between clients and
// functions, and the functions are other processes on the same CPUs. With
// a P per CPU, each time a call blocks on a FIFO Go's idle threads spin
// looking for work and wake one another, CPU taken from the functions.
// Half the CPUs (at least one) cut kilnd's CPU per call by 11-17% and
// raised calls per second by 8-14% at c=16 on 2 CPUs (docs/PERFORMANCE.md).
// An explicit --procs wins; so does a GOMAXPROCS the operator set.
func procsFor(flagProcs, goDefault int, goEnv string) int {
	switch {
	case flagProcs > 0:
		return flagProcs
	case goEnv != "":
		return goDefault
	}
	return max(1, goDefault/2)
}

// kilnInitPath resolves --kiln-init. Beside kilnd is where make build, the
// Dockerfile and the test harness put it; when it is not there kilnd
// still works, with the shim copying stdio (a hop slower per call).
func kilnInitPath(flagValue string, executable func() (string, error)) (string, error) {
	switch flagValue {
	case "off":
		return "", nil
	case "":
		self, err := executable()
		if err != nil {
			return "", nil
		}
		p := filepath.Join(filepath.Dir(self), "kiln-init")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
		return "", nil
	}
	p, err := filepath.Abs(flagValue)
	if err != nil {
		return "", fmt.Errorf("--kiln-init %q: %w", flagValue, err)
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("--kiln-init %q: not a file (%v)", flagValue, err)
	}
	return p, nil
}
