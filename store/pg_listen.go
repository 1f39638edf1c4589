package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sirupsen/logrus"
)

// Listener timings. A silent connection is pinged every listenPing, so a
// peer that vanished without a word (no RST) is noticed within about
// listenPing + listenPingTimeout; lost connections are retried with a
// back-off from listenRetryMin to listenRetryMax.
const (
	listenPing        = 30 * time.Second
	listenPingTimeout = 5 * time.Second
	listenRetryMin    = 100 * time.Millisecond
	listenRetryMax    = 5 * time.Second
)

// listener turns other nodes' changes into generation bumps: it LISTENs
// on notifyChannel on a connection of its own and bumps on every
// notification. While it has no connection the generation is deaf (every
// reading is new, so nothing is cached), and once it listens again it
// bumps, because whatever was cached before may have missed a change
// made during the outage.
type listener struct {
	cfg    *pgx.ConnConfig
	gen    *generation
	log    *logrus.Entry
	cancel context.CancelFunc
	done   chan struct{}
	// pid is the backend of the current connection (0 while there is
	// none), for logs and for tests that cut it.
	pid atomic.Uint32
}

// startListener listens before it returns, so a Store that opened
// already hears every change committed after that.
func startListener(ctx context.Context, cfg *pgx.ConnConfig, gen *generation, log *logrus.Entry) (*listener, error) {
	cfg = cfg.Copy()
	cfg.RuntimeParams["application_name"] += " listener"
	l := &listener{cfg: cfg, gen: gen, log: log, done: make(chan struct{})}
	conn, err := l.listen(ctx)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go l.run(runCtx, conn)
	return l, nil
}

// close stops the listener and waits for it.
func (l *listener) close() {
	l.cancel()
	<-l.done
}

func (l *listener) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return nil, fmt.Errorf("listen for changes: %w", dbError(err))
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		closeConn(ctx, conn)
		return nil, fmt.Errorf("listen for changes: %w", dbError(err))
	}
	l.pid.Store(conn.PgConn().PID())
	return conn, nil
}

func (l *listener) run(ctx context.Context, conn *pgx.Conn) {
	defer close(l.done)
	for {
		err := l.wait(ctx, conn)
		l.gen.deaf.Store(true)
		l.pid.Store(0)
		closeConn(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		l.log.WithError(err).Warn("store: lost the connection that hears other nodes' changes; caching nothing until it is back")
		if conn = l.reconnect(ctx); conn == nil {
			return
		}
		// Bump before clearing deaf: every generation read from here on
		// is newer than any a cache was filled under before the LISTEN.
		l.gen.bump()
		l.gen.deaf.Store(false)
		l.log.WithField("pid", l.pid.Load()).Info("store: hearing other nodes' changes again")
	}
}

// wait bumps the generation for every notification until the connection
// fails (or ctx ends), pinging it when it has been quiet for a while.
func (l *listener) wait(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.gen.bump()
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !pgconn.Timeout(err) || conn.IsClosed():
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
	}
}

// reconnect retries listen until it works, or returns nil when ctx ends.
func (l *listener) reconnect(ctx context.Context) *pgx.Conn {
	delay := listenRetryMin
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		conn, err := l.listen(ctx)
		if err == nil {
			return conn
		}
		if ctx.Err() != nil {
			return nil
		}
		l.log.WithError(err).Debug("store: listen again")
		delay = min(2*delay, listenRetryMax)
	}
}

// closeConn closes conn within a few seconds even when ctx has ended or
// the network is gone.
func closeConn(ctx context.Context, conn *pgx.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(cctx)
}
