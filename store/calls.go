package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-run/kiln/errdefs"
)

// Call statuses. Queued and running calls are live: retention never drops
// them, and the async dispatcher finds them by status.
const (
	CallQueued  = "queued"
	CallRunning = "running"
	CallSuccess = "success"
	CallError   = "error"
	CallTimeout = "timeout"
)

func validStatus(s string) bool {
	switch s {
	case CallQueued, CallRunning, CallSuccess, CallError, CallTimeout:
		return true
	}
	return false
}

func liveStatus(s string) bool { return s == CallQueued || s == CallRunning }

// Call records one invocation of a fn.
type Call struct {
	ID          string     `json:"id"`
	FnID        string     `json:"fn_id"`
	AppID       string     `json:"app_id"`
	Status      string     `json:"status"`
	Error       string     `json:"error,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// Request is kept for detached calls, so a queued call survives a
	// restart. It is not part of the API's view of a call.
	Request  *CallRequest `json:"-"`
	Attempts int          `json:"attempts,omitempty"`
}

// CallRequest is the durable copy of a detached call's request.
type CallRequest struct {
	Method string              `json:"method"`
	URL    string              `json:"url"`
	Header map[string][]string `json:"header,omitempty"`
	Body   []byte              `json:"body,omitempty"`
}

// cloneCall deep-copies c, request included.
func cloneCall(c *Call) (*Call, error) {
	out, err := roundTrip(c)
	if err != nil {
		return nil, err
	}
	if c.Request != nil {
		if out.Request, err = roundTrip(c.Request); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkCallID refuses ids the key layout cannot hold.
func checkCallID(id string) error {
	if id == "" || strings.Contains(id, sep) {
		return fmt.Errorf("%w call id %q", errdefs.ErrInvalid, id)
	}
	return nil
}

// CreateCall stores a call record; the caller chooses its id (NewID, so
// listings come out in time order). The fn must exist, which keeps a call
// racing its fn's deletion from leaving an orphan. An empty status means
// queued, a zero CreatedAt means now, and an empty AppID is the fn's. c
// is not modified.
func (s *Store) CreateCall(ctx context.Context, c *Call) error {
	if err := checkCallID(c.ID); err != nil {
		return err
	}
	rec := *c
	if rec.Status == "" {
		rec.Status = CallQueued
	}
	if !validStatus(rec.Status) {
		return badStatus(rec.Status)
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.timestamp()
	}
	return s.b.createCall(ctx, &rec)
}

// GetCall returns a call record, or errdefs.ErrNotFound.
func (s *Store) GetCall(ctx context.Context, fnID, callID string) (*Call, error) {
	return s.b.getCall(ctx, fnID, callID)
}

// UpdateCall applies fn to a stored call and saves it in one transaction;
// an error from fn aborts and is returned as is. The id, fn, app and
// creation time cannot be changed.
func (s *Store) UpdateCall(ctx context.Context, fnID, callID string, fn func(*Call) error) (*Call, error) {
	out, err := s.b.updateCall(ctx, fnID, callID, func(old *Call) (*Call, error) {
		c, err := cloneCall(old)
		if err != nil {
			return nil, err
		}
		if err := fn(c); err != nil {
			return nil, err
		}
		c.ID, c.FnID, c.AppID, c.CreatedAt = old.ID, old.FnID, old.AppID, old.CreatedAt
		if !validStatus(c.Status) {
			return nil, badStatus(c.Status)
		}
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return cloneCall(out)
}

// ListCalls returns one page of a fn's calls, newest first, and the next
// page's cursor. An unknown fn is errdefs.ErrNotFound.
func (s *Store) ListCalls(ctx context.Context, fnID string, opts ListOptions) ([]*Call, string, error) {
	return s.b.listCalls(ctx, fnID, opts)
}

// ListCallsByStatus returns up to limit calls with a status (all of them
// when limit <= 0), oldest first, so the async dispatcher serves queued
// calls in order.
func (s *Store) ListCallsByStatus(ctx context.Context, status string, limit int) ([]*Call, error) {
	return s.b.listCallsByStatus(ctx, status, limit)
}

// TruncationMarker ends a call log that hit its cap; its wording carries
// the cap, so a reader knows how much was kept. Every writer of call logs
// marks the cut with it.
func TruncationMarker(capBytes int) []byte {
	return []byte(fmt.Sprintf("[log truncated at %d bytes]\n", capBytes))
}

// appendCapped is AppendCallLog's rule, for both backends: cur with p
// appended, keeping at most capBytes (no cap when capBytes <= 0). The
// first append that overflows keeps what fits and adds a truncation
// marker line; later ones change nothing (ok false: nothing to write).
func appendCapped(cur, p []byte, capBytes int) (out []byte, ok bool) {
	if capBytes <= 0 {
		return append(bytes.Clone(cur), p...), true
	}
	marker := TruncationMarker(capBytes)
	if len(cur) > capBytes || bytes.HasSuffix(cur, marker) {
		return nil, false // already truncated
	}
	room := capBytes - len(cur)
	if len(p) <= room {
		return append(bytes.Clone(cur), p...), true
	}
	out = make([]byte, 0, capBytes+1+len(marker))
	out = append(append(out, cur...), p[:room]...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(out, marker...), true
}

// AppendCallLog appends p to a call's log, keeping at most capBytes of it
// (no cap when capBytes <= 0). The first append that overflows keeps what
// fits and adds a truncation marker line; later appends are dropped. Each
// append is a write transaction, so callers should batch lines.
func (s *Store) AppendCallLog(ctx context.Context, fnID, callID string, p []byte, capBytes int) error {
	if len(p) == 0 {
		return nil
	}
	return s.b.appendCallLog(ctx, fnID, callID, p, capBytes)
}

// GetCallLog returns a call's log; a call that logged nothing has an
// empty one. An unknown call is errdefs.ErrNotFound.
func (s *Store) GetCallLog(ctx context.Context, fnID, callID string) ([]byte, error) {
	return s.b.getCallLog(ctx, fnID, callID)
}

// PruneCalls applies retention to every fn's calls: it keeps the newest
// perFn (no count limit when perFn <= 0) and drops those created before
// now - maxAge (no age limit when maxAge <= 0). Queued and running calls
// are never dropped, though they count toward perFn. It returns how many
// calls it dropped.
func (s *Store) PruneCalls(ctx context.Context, perFn int, maxAge time.Duration, now time.Time) (int, error) {
	if perFn <= 0 && maxAge <= 0 {
		return 0, nil
	}
	var cutoff time.Time
	if maxAge > 0 {
		cutoff = now.Add(-maxAge)
	}
	return s.b.pruneCalls(ctx, max(perFn, 0), cutoff)
}
