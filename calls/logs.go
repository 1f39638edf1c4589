package calls

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// LogLine is one line a function wrote to stderr, with whose call it was.
type LogLine struct {
	Time   time.Time `json:"time"`
	AppID  string    `json:"app_id"`
	FnID   string    `json:"fn_id"`
	Fn     string    `json:"fn"`
	CallID string    `json:"call_id"`
	Line   string    `json:"line"`
}

// logHub passes stderr lines as they are written to whoever follows an
// app's logs. A follower that reads too slowly loses lines (counted), it
// never slows the function: the stderr pump must not block.
type logHub struct {
	mu     sync.Mutex
	subs   map[*logSub]struct{}
	n      atomic.Int32 // len(subs), read without the lock on every line
	closed bool
}

type logSub struct {
	appID, fnID string
	ch          chan LogLine
	dropped     atomic.Int64
}

// followBuffer is how many lines a follower may be behind before lines
// are dropped for it.
const followBuffer = 4096

func (h *logHub) subscribe(appID, fnID string) *logSub {
	sub := &logSub{appID: appID, fnID: fnID, ch: make(chan LogLine, followBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(sub.ch)
		return sub
	}
	if h.subs == nil {
		h.subs = map[*logSub]struct{}{}
	}
	h.subs[sub] = struct{}{}
	h.n.Store(int32(len(h.subs)))
	return sub
}

func (h *logHub) unsubscribe(sub *logSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; ok {
		delete(h.subs, sub)
		close(sub.ch)
		h.n.Store(int32(len(h.subs)))
	}
}

func (h *logHub) publish(l LogLine) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		if sub.appID != l.AppID || (sub.fnID != "" && sub.fnID != l.FnID) {
			continue
		}
		select {
		case sub.ch <- l:
		default:
			sub.dropped.Add(1)
		}
	}
}

// close ends every follow: kilnd is stopping.
func (h *logHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for sub := range h.subs {
		close(sub.ch)
	}
	h.subs = nil
	h.n.Store(0)
}

// newCallLog is the log sink of one call of t.
func (s *Service) newCallLog(t *Target, callID string) *callLog {
	return &callLog{max: s.cfg.CallLogCap, hub: &s.logs, line: LogLine{AppID: t.App.ID, FnID: t.Fn.ID, Fn: t.Fn.Name, CallID: callID}}
}

// maxHistoryCalls bounds how many past calls per fn a log request reads.
const maxHistoryCalls = 1000

// FollowLogs emits the stderr lines of an app's calls (one fn's if fnID
// is set) since since, oldest first, then, if follow, every new line as
// it is written until ctx ends or kilnd stops. Past lines carry their
// call's start time; they come from the stored call logs, which are
// capped per call. started, when set, runs once the request is known to
// be good (the app and fn exist), before any line; emit's error stops it.
func (s *Service) FollowLogs(ctx context.Context, appID, fnID string, since time.Time, follow bool, started func(), emit func(LogLine) error) error {
	app, err := s.store.GetApp(ctx, appID)
	if err != nil {
		return err
	}
	fns, err := s.appFns(ctx, app.ID, fnID)
	if err != nil {
		return err
	}
	var sub *logSub
	if follow {
		// Before the history is read: a line written meanwhile is then
		// seen twice at worst (and filtered below), never missed.
		sub = s.logs.subscribe(app.ID, fnID)
		defer s.logs.unsubscribe(sub)
	}
	// Calls that just ended may still be on their way to the store.
	s.records.sync(ctx)
	if started != nil {
		started()
	}
	shown := map[string]bool{}
	var past []LogLine
	for _, fn := range fns {
		calls, _, err := s.store.ListCalls(ctx, fn.ID, store.ListOptions{PerPage: store.MaxPerPage})
		if err != nil {
			return err
		}
		for i, c := range calls {
			if i >= maxHistoryCalls || c.CreatedAt.Before(since) {
				break
			}
			if c.Status == store.CallQueued || c.Status == store.CallRunning {
				continue // its lines come live
			}
			log, err := s.store.GetCallLog(ctx, fn.ID, c.ID)
			if err != nil {
				continue
			}
			shown[c.ID] = true
			at := c.CreatedAt
			if c.StartedAt != nil {
				at = *c.StartedAt
			}
			for _, line := range bytes.Split(bytes.TrimSuffix(log, []byte("\n")), []byte("\n")) {
				if len(line) > 0 {
					past = append(past, LogLine{Time: at, AppID: app.ID, FnID: fn.ID, Fn: fn.Name, CallID: c.ID, Line: string(line)})
				}
			}
		}
	}
	slices.SortStableFunc(past, func(a, b LogLine) int { return a.Time.Compare(b.Time) })
	for _, l := range past {
		if err := emit(l); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	var reported int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-sub.ch:
			if !ok {
				return nil
			}
			if shown[l.CallID] {
				continue
			}
			if d := sub.dropped.Load(); d > reported {
				note := LogLine{Time: time.Now().UTC(), AppID: app.ID, Line: fmt.Sprintf("[kiln: %d lines dropped: the client reads too slowly]", d-reported)}
				reported = d
				if err := emit(note); err != nil {
					return err
				}
			}
			if err := emit(l); err != nil {
				return err
			}
		}
	}
}

// appFns is the app's fns, or the one named.
func (s *Service) appFns(ctx context.Context, appID, fnID string) ([]*store.Fn, error) {
	if fnID != "" {
		fn, err := s.store.GetFn(ctx, fnID)
		if err != nil {
			return nil, fnLookupError(fnID, err)
		}
		if fn.AppID != appID {
			return nil, fmt.Errorf("fn %q is not in app %q: %w", fnID, appID, errdefs.ErrNotFound)
		}
		return []*store.Fn{fn}, nil
	}
	var all []*store.Fn
	opts := store.ListOptions{AppID: appID, PerPage: store.MaxPerPage}
	for {
		fns, next, err := s.store.ListFns(ctx, opts)
		if err != nil {
			return nil, err
		}
		all = append(all, fns...)
		if next == "" {
			return all, nil
		}
		opts.Cursor = next
	}
}
