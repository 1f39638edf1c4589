package calls

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// callLog collects one call's stderr up to a cap. The container's stderr
// reader writes to it while the call and the recorder read it, so it
// locks; it allocates nothing for a call that logs nothing.
type callLog struct {
	mu        sync.Mutex
	buf       []byte
	max       int
	truncated bool
	// hub, when set, gets every line as it is written, for followers;
	// line holds the call's fields.
	hub  *logHub
	line LogLine
}

func (l *callLog) Write(p []byte) (int, error) {
	if l.hub != nil {
		// The stderr pump writes a line at a time (a long one in pieces).
		line := l.line
		line.Time = time.Now().UTC()
		line.Line = string(bytes.TrimRight(p, "\r\n"))
		l.hub.publish(line)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.truncated {
		return len(p), nil
	}
	room := l.max - len(l.buf)
	if len(p) > room {
		l.buf = append(l.buf, p[:room]...)
		l.truncated = true
		return len(p), nil
	}
	l.buf = append(l.buf, p...)
	return len(p), nil
}

// Bytes returns a copy of the log, marked when it was cut at the cap.
func (l *callLog) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]byte(nil), l.buf...)
	if l.truncated {
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		out = append(out, store.TruncationMarker(l.max)...)
	}
	return out
}

type recordItem struct {
	key  string // of live
	call *store.Call
	log  *callLog
	// synced, on an item with no call, is closed once everything queued
	// before it is in the store.
	synced chan struct{}
}

func liveKey(c *store.Call) string { return c.FnID + "/" + c.ID }

// recorder writes the records of synchronous calls in batches: a hot
// call takes tens of microseconds and must not wait for a disk sync.
// A record reaches the store within flushEvery of the call's end; a
// crash loses at most that window of sync-call records (never a detached
// call, which the store holds before it is answered). The batch delay
// also lets stderr that trails a response land in the call's log.
type recorder struct {
	store *store.Store
	// live holds sync calls from their start until their record is in
	// the store, so a GET finds a running call without a disk write.
	live    sync.Map // fnID + "/" + callID -> *store.Call
	log     *logrus.Entry
	items   chan recordItem
	keepN   int
	keepFor time.Duration

	// closed (under mu) sends late records straight to the store: the
	// calls pool.Close does not wait for (cold ones) may finish after the
	// recorder stopped, and their records must not be dropped.
	mu        sync.RWMutex
	running   bool
	closed    bool
	closeOnce sync.Once

	stop chan struct{}
	wg   sync.WaitGroup
}

// flushEvery is long enough that a busy node writes a few hundred records
// per transaction (each commit is a disk sync, and costs kilnd more CPU
// than the calls it records), short enough that a record shows in a
// listing at once for a person.
const flushEvery = 100 * time.Millisecond

// maxBatch bounds one transaction's records.
const maxBatch = 2048

func newRecorder(st *store.Store, log *logrus.Entry, keepN int, keepFor time.Duration) *recorder {
	return &recorder{store: st, log: log, items: make(chan recordItem, 4096), keepN: keepN, keepFor: keepFor, stop: make(chan struct{})}
}

// open starts the writer. Until then, and after close, records are
// written one by one as they are put.
func (r *recorder) open() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running || r.closed {
		return
	}
	r.running = true
	r.wg.Add(1)
	go r.run()
}

// start makes a running sync call visible without writing it anywhere.
// It returns the call's key for put.
func (r *recorder) start(c *store.Call) string {
	cp := *c
	key := liveKey(c)
	r.live.Store(key, &cp)
	return key
}

// inFlight returns a sync call that is running or not yet flushed.
func (r *recorder) inFlight(fnID, callID string) (*store.Call, bool) {
	v, ok := r.live.Load(liveKey(&store.Call{FnID: fnID, ID: callID}))
	if !ok {
		return nil, false
	}
	return v.(*store.Call), true
}

// put queues a copy of c (the caller may keep changing its own) for the
// store, replacing what start showed under key once it is written.
func (r *recorder) put(key string, c *store.Call, log *callLog) {
	cp := *c
	it := recordItem{key: key, call: &cp, log: log}
	r.live.Store(it.key, &cp)
	r.mu.RLock()
	if r.running && !r.closed {
		r.items <- it
		r.mu.RUnlock()
		return
	}
	r.mu.RUnlock()
	r.flush([]recordItem{it})
}

func (r *recorder) run() {
	defer r.wg.Done()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	var batch []recordItem
	for {
		select {
		case it := <-r.items:
			batch = append(batch[:0], it)
			if it.synced != nil {
				r.flush(batch)
				continue
			}
			timer := time.NewTimer(flushEvery)
		collect:
			for len(batch) < maxBatch {
				select {
				case it := <-r.items:
					batch = append(batch, it)
					if it.synced != nil {
						break collect // someone waits: write now
					}
				case <-timer.C:
					break collect
				case <-r.stop:
					break collect
				}
			}
			timer.Stop()
			r.flush(batch)
		case <-prune.C:
			if n, err := r.store.PruneCalls(context.Background(), r.keepN, r.keepFor, time.Now()); err != nil {
				r.log.WithError(err).Warn("prune call records")
			} else if n > 0 {
				r.log.WithField("calls", n).Debug("pruned call records")
			}
		case <-r.stop:
			for {
				select {
				case it := <-r.items:
					batch = append(batch[:0], it)
					r.flush(batch)
				default:
					return
				}
			}
		}
	}
}

func (r *recorder) flush(batch []recordItem) {
	writes := make([]store.CallWrite, 0, len(batch))
	for _, it := range batch {
		if it.call == nil {
			continue
		}
		w := store.CallWrite{Call: it.call}
		if it.log != nil {
			w.Log = it.log.Bytes()
		}
		writes = append(writes, w)
	}
	if len(writes) > 0 {
		if err := r.store.SaveCalls(context.Background(), writes); err != nil {
			r.log.WithError(err).WithField("calls", len(writes)).Error("save call records")
		}
	}
	for _, it := range batch {
		if it.synced != nil {
			close(it.synced)
		} else {
			r.live.Delete(it.key)
		}
	}
}

// sync waits until every record put so far is in the store, for a reader
// of the store that must not miss a call just ended (a log follower).
func (r *recorder) sync(ctx context.Context) {
	r.mu.RLock()
	if !r.running || r.closed {
		r.mu.RUnlock()
		return
	}
	done := make(chan struct{})
	r.items <- recordItem{synced: done}
	r.mu.RUnlock()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// close writes what is queued and stops; records put after it are
// written one by one. Safe to call more than once.
func (r *recorder) close() {
	r.closeOnce.Do(func() {
		// Every put that saw closed == false has finished its send once
		// the write lock is held, so run's final drain sees it.
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.stop)
		r.wg.Wait() // a no-op if it never ran
	})
}

// GetCall returns a call's record: from the store, or, for a sync call
// still running or not yet written, from memory (the store gets one
// record per sync call, at its end).
func (s *Service) GetCall(ctx context.Context, fnID, callID string) (*store.Call, error) {
	c, err := s.store.GetCall(ctx, fnID, callID)
	if errors.Is(err, errdefs.ErrNotFound) {
		if live, ok := s.records.inFlight(fnID, callID); ok {
			return live, nil
		}
	}
	return c, err
}
