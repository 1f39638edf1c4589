package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/kiln-run/kiln/errdefs"

	bolt "go.etcd.io/bbolt"
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

// storedCall is a Call as written to disk: unlike the API view it
// includes the request.
type storedCall struct {
	Call
	Request *CallRequest `json:"request,omitempty"`
}

func (c *Call) stored() storedCall { return storedCall{Call: *c, Request: c.Request} }

func decodeCall(v []byte) (*Call, error) {
	sc, err := decode[storedCall](v)
	if err != nil {
		return nil, err
	}
	c := sc.Call
	c.Request = sc.Request
	return &c, nil
}

// cloneCall deep-copies c, request included.
func cloneCall(c *Call) (*Call, error) {
	data, err := json.Marshal(c.stored())
	if err != nil {
		return nil, err
	}
	return decodeCall(data)
}

func callNotFound(fnID, callID string) error {
	return fmt.Errorf("call %q of fn %q %w", callID, fnID, errdefs.ErrNotFound)
}

func statusKey(status, callID, fnID string) []byte { return key(status, callID, fnID) }

// CreateCall stores a call record; the caller chooses its id (NewID, so
// listings come out in time order). The fn must exist, which keeps a call
// racing its fn's deletion from leaving an orphan. An empty status means
// queued, a zero CreatedAt means now, and an empty AppID is the fn's.
func (s *Store) CreateCall(ctx context.Context, c *Call) error {
	if err := checkCallID(c.ID); err != nil {
		return err
	}
	rec := c.stored()
	if rec.Status == "" {
		rec.Status = CallQueued
	}
	if !validStatus(rec.Status) {
		return fmt.Errorf("%w call status %q", errdefs.ErrInvalid, rec.Status)
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = s.timestamp()
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		fn, err := getFn(tx, c.FnID)
		if err != nil {
			return err
		}
		return insertCall(tx, fn, rec)
	})
}

// insertCall writes a new call record of fn and its status index entry;
// an id already taken is errdefs.ErrConflict. An empty AppID becomes the fn's.
func insertCall(tx *bolt.Tx, fn *Fn, rec storedCall) error {
	if rec.AppID == "" {
		rec.AppID = fn.AppID
	}
	calls, err := tx.Bucket(bktCalls).CreateBucketIfNotExists([]byte(fn.ID))
	if err != nil {
		return err
	}
	if calls.Get([]byte(rec.ID)) != nil {
		return fmt.Errorf("%w: call %q of fn %q already exists", errdefs.ErrConflict, rec.ID, fn.ID)
	}
	if err := putJSON(calls, []byte(rec.ID), rec); err != nil {
		return err
	}
	return tx.Bucket(bktCallStatuses).Put(statusKey(rec.Status, rec.ID, fn.ID), nil)
}

// moveStatus keeps the status index in step with a call whose status
// goes from from (empty: a new record) to to.
func moveStatus(tx *bolt.Tx, fnID, callID, from, to string) error {
	if from == to {
		return nil
	}
	idx := tx.Bucket(bktCallStatuses)
	if from != "" {
		if err := idx.Delete(statusKey(from, callID, fnID)); err != nil {
			return err
		}
	}
	return idx.Put(statusKey(to, callID, fnID), nil)
}

// checkCallID refuses ids the key layout cannot hold.
func checkCallID(id string) error {
	if id == "" || strings.Contains(id, sep) {
		return fmt.Errorf("%w call id %q", errdefs.ErrInvalid, id)
	}
	return nil
}

func callsOf(tx *bolt.Tx, fnID string) *bolt.Bucket { return tx.Bucket(bktCalls).Bucket([]byte(fnID)) }

func getCall(tx *bolt.Tx, fnID, callID string) (*Call, error) {
	if b := callsOf(tx, fnID); b != nil {
		if v := b.Get([]byte(callID)); v != nil {
			return decodeCall(v)
		}
	}
	return nil, callNotFound(fnID, callID)
}

// GetCall returns a call record, or errdefs.ErrNotFound.
func (s *Store) GetCall(ctx context.Context, fnID, callID string) (*Call, error) {
	var c *Call
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		c, err = getCall(tx, fnID, callID)
		return err
	})
	return c, err
}

// UpdateCall applies fn to a stored call and saves it in one transaction;
// an error from fn aborts and is returned as is. The id, fn, app and
// creation time cannot be changed.
func (s *Store) UpdateCall(ctx context.Context, fnID, callID string, fn func(*Call) error) (*Call, error) {
	var out *Call
	err := s.update(ctx, func(tx *bolt.Tx) error {
		old, err := getCall(tx, fnID, callID)
		if err != nil {
			return err
		}
		c, err := cloneCall(old)
		if err != nil {
			return err
		}
		if err := fn(c); err != nil {
			return err
		}
		c.ID, c.FnID, c.AppID, c.CreatedAt = old.ID, old.FnID, old.AppID, old.CreatedAt
		if !validStatus(c.Status) {
			return fmt.Errorf("%w call status %q", errdefs.ErrInvalid, c.Status)
		}
		if err := moveStatus(tx, fnID, callID, old.Status, c.Status); err != nil {
			return err
		}
		out = c
		return putJSON(callsOf(tx, fnID), []byte(callID), c.stored())
	})
	if err != nil {
		return nil, err
	}
	return cloneCall(out)
}

// ListCalls returns one page of a fn's calls, newest first, and the next
// page's cursor. An unknown fn is errdefs.ErrNotFound.
func (s *Store) ListCalls(ctx context.Context, fnID string, opts ListOptions) ([]*Call, string, error) {
	var (
		calls []*Call
		next  string
	)
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		if _, err := getFn(tx, fnID); err != nil {
			return err
		}
		b := callsOf(tx, fnID)
		if b == nil {
			if _, err := decodeCursor(opts.Cursor, nil); err != nil {
				return err
			}
			calls = []*Call{}
			return nil
		}
		calls, next, err = page(b, nil, opts, true, func(_, v []byte) (*Call, error) {
			return decodeCall(v)
		})
		return err
	})
	return calls, next, err
}

// ListCallsByStatus returns up to limit calls with a status (all of them
// when limit <= 0), oldest first, so the async dispatcher serves queued
// calls in order.
func (s *Store) ListCallsByStatus(ctx context.Context, status string, limit int) ([]*Call, error) {
	var calls []*Call
	err := s.view(ctx, func(tx *bolt.Tx) error {
		calls = []*Call{}
		pfx := prefix(status)
		c := tx.Bucket(bktCallStatuses).Cursor()
		for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
			if limit > 0 && len(calls) == limit {
				break
			}
			parts := strings.Split(string(k[len(pfx):]), sep)
			if len(parts) != 2 {
				return fmt.Errorf("corrupt call status key %q", k)
			}
			call, err := getCall(tx, parts[1], parts[0])
			if err != nil {
				return err
			}
			calls = append(calls, call)
		}
		return nil
	})
	return calls, err
}

// TruncationMarker ends a call log that hit its cap; its wording carries
// the cap, so a reader knows how much was kept. Every writer of call logs
// marks the cut with it.
func TruncationMarker(capBytes int) []byte {
	return []byte(fmt.Sprintf("[log truncated at %d bytes]\n", capBytes))
}

// AppendCallLog appends p to a call's log, keeping at most capBytes of it
// (no cap when capBytes <= 0). The first append that overflows keeps what
// fits and adds a truncation marker line; later appends are dropped. Each
// append is a write transaction, so callers should batch lines.
func (s *Store) AppendCallLog(ctx context.Context, fnID, callID string, p []byte, capBytes int) error {
	if len(p) == 0 {
		return nil
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		if _, err := getCall(tx, fnID, callID); err != nil {
			return err
		}
		logs, err := tx.Bucket(bktCallLogs).CreateBucketIfNotExists([]byte(fnID))
		if err != nil {
			return err
		}
		cur := logs.Get([]byte(callID))
		if capBytes <= 0 {
			return logs.Put([]byte(callID), append(bytes.Clone(cur), p...))
		}
		marker := TruncationMarker(capBytes)
		if len(cur) > capBytes || bytes.HasSuffix(cur, marker) {
			return nil // already truncated
		}
		room := capBytes - len(cur)
		if len(p) <= room {
			return logs.Put([]byte(callID), append(bytes.Clone(cur), p...))
		}
		out := make([]byte, 0, capBytes+1+len(marker))
		out = append(append(out, cur...), p[:room]...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return logs.Put([]byte(callID), append(out, marker...))
	})
}

// GetCallLog returns a call's log; a call that logged nothing has an
// empty one. An unknown call is errdefs.ErrNotFound.
func (s *Store) GetCallLog(ctx context.Context, fnID, callID string) ([]byte, error) {
	var out []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if _, err := getCall(tx, fnID, callID); err != nil {
			return err
		}
		out = []byte{}
		if logs := tx.Bucket(bktCallLogs).Bucket([]byte(fnID)); logs != nil {
			out = bytes.Clone(logs.Get([]byte(callID)))
			if out == nil {
				out = []byte{}
			}
		}
		return nil
	})
	return out, err
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
	dropped := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		var fnIDs []string
		if err := tx.Bucket(bktCalls).ForEachBucket(func(k []byte) error {
			fnIDs = append(fnIDs, string(k))
			return nil
		}); err != nil {
			return err
		}
		for _, fnID := range fnIDs {
			var victims []*Call
			b := callsOf(tx, fnID)
			c := b.Cursor()
			seen := 0
			for k, v := c.Last(); k != nil; k, v = c.Prev() {
				seen++
				call, err := decodeCall(v)
				if err != nil {
					return err
				}
				if liveStatus(call.Status) {
					continue
				}
				if (perFn > 0 && seen > perFn) || (maxAge > 0 && call.CreatedAt.Before(cutoff)) {
					victims = append(victims, call)
				}
			}
			for _, call := range victims {
				if err := deleteCall(tx, call); err != nil {
					return err
				}
			}
			dropped += len(victims)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return dropped, nil
}

func deleteCall(tx *bolt.Tx, c *Call) error {
	if err := tx.Bucket(bktCallStatuses).Delete(statusKey(c.Status, c.ID, c.FnID)); err != nil {
		return err
	}
	if logs := tx.Bucket(bktCallLogs).Bucket([]byte(c.FnID)); logs != nil {
		if err := logs.Delete([]byte(c.ID)); err != nil {
			return err
		}
	}
	return callsOf(tx, c.FnID).Delete([]byte(c.ID))
}

// deleteFnCalls drops a fn's call records, their logs and their status
// index entries.
func deleteFnCalls(tx *bolt.Tx, fnID string) error {
	b := callsOf(tx, fnID)
	if b != nil {
		idx := tx.Bucket(bktCallStatuses)
		var keys [][]byte
		if err := b.ForEach(func(_, v []byte) error {
			c, err := decodeCall(v)
			if err != nil {
				return err
			}
			keys = append(keys, statusKey(c.Status, c.ID, c.FnID))
			return nil
		}); err != nil {
			return err
		}
		for _, k := range keys {
			if err := idx.Delete(k); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bktCalls).DeleteBucket([]byte(fnID)); err != nil {
			return err
		}
	}
	if tx.Bucket(bktCallLogs).Bucket([]byte(fnID)) != nil {
		return tx.Bucket(bktCallLogs).DeleteBucket([]byte(fnID))
	}
	return nil
}
