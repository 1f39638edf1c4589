// Command kilnd is kiln's daemon: it serves the Fn v2 API and runs
// functions in hot containers through containerd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kilnd:", err)
		os.Exit(2)
	}
	// GOMAXPROCS(0) reads Go's own choice (the CPUs, or the cgroup's
	// limit, or the GOMAXPROCS variable) without changing it.
	runtime.GOMAXPROCS(procsFor(cfg.Procs, runtime.GOMAXPROCS(0), os.Getenv("GOMAXPROCS")))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := NewMain(cfg)
	if err := m.Open(ctx); err != nil {
		m.log.WithError(err).Error("kilnd could not start")
		closeCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = m.Close(closeCtx)
		cancel()
		os.Exit(1)
	}
	select {
	case <-ctx.Done():
		m.log.Info("stopping: refusing new calls, draining in-flight ones")
	case err := <-m.ServeErr():
		m.log.WithError(err).Error("http server failed")
	}
	// Signals stay captured during the drain: a second Ctrl-C must not
	// kill kilnd half way and leave containers behind.
	// In-flight calls are bounded by their fn's timeout (at most 300 s);
	// the drain waits for them, then every container is removed.
	closeCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := m.Close(closeCtx); err != nil {
		m.log.WithError(err).Error("shutdown")
		os.Exit(1)
	}
	m.log.Info("stopped")
}
