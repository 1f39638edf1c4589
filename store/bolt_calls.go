package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// storedCall is a Call as bbolt keeps it: unlike the API view it
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

func statusKey(status, callID, fnID string) []byte { return key(status, callID, fnID) }

func (b *boltStore) createCall(ctx context.Context, c *Call) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		fn, err := loadFn(tx, c.FnID)
		if err != nil {
			return err
		}
		return insertCall(tx, fn, c.stored())
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
		return callTaken(fn.ID, rec.ID)
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

func callsOf(tx *bolt.Tx, fnID string) *bolt.Bucket { return tx.Bucket(bktCalls).Bucket([]byte(fnID)) }

func loadCall(tx *bolt.Tx, fnID, callID string) (*Call, error) {
	if b := callsOf(tx, fnID); b != nil {
		if v := b.Get([]byte(callID)); v != nil {
			return decodeCall(v)
		}
	}
	return nil, callNotFound(fnID, callID)
}

func (b *boltStore) getCall(ctx context.Context, fnID, callID string) (*Call, error) {
	var c *Call
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		c, err = loadCall(tx, fnID, callID)
		return err
	})
	return c, err
}

func (b *boltStore) updateCall(ctx context.Context, fnID, callID string, apply func(*Call) (*Call, error)) (*Call, error) {
	var out *Call
	err := b.update(ctx, func(tx *bolt.Tx) error {
		old, err := loadCall(tx, fnID, callID)
		if err != nil {
			return err
		}
		c, err := apply(old)
		if err != nil {
			return err
		}
		if err := moveStatus(tx, fnID, callID, old.Status, c.Status); err != nil {
			return err
		}
		out = c
		return putJSON(callsOf(tx, fnID), []byte(callID), c.stored())
	})
	return out, err
}

func (b *boltStore) listCalls(ctx context.Context, fnID string, opts ListOptions) ([]*Call, string, error) {
	var (
		calls []*Call
		next  string
	)
	err := b.view(ctx, func(tx *bolt.Tx) (err error) {
		if _, err := loadFn(tx, fnID); err != nil {
			return err
		}
		bkt := callsOf(tx, fnID)
		if bkt == nil {
			if _, err := decodeCursor(opts.Cursor, nil); err != nil {
				return err
			}
			calls = []*Call{}
			return nil
		}
		calls, next, err = boltPage(bkt, nil, opts, true, func(_, v []byte) (*Call, error) {
			return decodeCall(v)
		})
		return err
	})
	return calls, next, err
}

func (b *boltStore) listCallsByStatus(ctx context.Context, status string, limit int) ([]*Call, error) {
	var calls []*Call
	err := b.view(ctx, func(tx *bolt.Tx) error {
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
			call, err := loadCall(tx, parts[1], parts[0])
			if err != nil {
				return err
			}
			calls = append(calls, call)
		}
		return nil
	})
	return calls, err
}

func (b *boltStore) appendCallLog(ctx context.Context, fnID, callID string, p []byte, capBytes int) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		if _, err := loadCall(tx, fnID, callID); err != nil {
			return err
		}
		logs, err := tx.Bucket(bktCallLogs).CreateBucketIfNotExists([]byte(fnID))
		if err != nil {
			return err
		}
		out, ok := appendCapped(logs.Get([]byte(callID)), p, capBytes)
		if !ok {
			return nil
		}
		return logs.Put([]byte(callID), out)
	})
}

func (b *boltStore) getCallLog(ctx context.Context, fnID, callID string) ([]byte, error) {
	var out []byte
	err := b.view(ctx, func(tx *bolt.Tx) error {
		if _, err := loadCall(tx, fnID, callID); err != nil {
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

func (b *boltStore) pruneCalls(ctx context.Context, perFn int, cutoff time.Time) (int, error) {
	dropped := 0
	err := b.update(ctx, func(tx *bolt.Tx) error {
		var fnIDs []string
		if err := tx.Bucket(bktCalls).ForEachBucket(func(k []byte) error {
			fnIDs = append(fnIDs, string(k))
			return nil
		}); err != nil {
			return err
		}
		for _, fnID := range fnIDs {
			var victims []*Call
			c := callsOf(tx, fnID).Cursor()
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
				if (perFn > 0 && seen > perFn) || (!cutoff.IsZero() && call.CreatedAt.Before(cutoff)) {
					victims = append(victims, call)
				}
			}
			for _, call := range victims {
				if err := removeCall(tx, call); err != nil {
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

func removeCall(tx *bolt.Tx, c *Call) error {
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

// removeFnCalls drops a fn's call records, their logs and their status
// index entries.
func removeFnCalls(tx *bolt.Tx, fnID string) error {
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

// enqueueCall counts by walking the queued entries of the status index
// in the write transaction that stores the call: bbolt has one writer at
// a time, so no other enqueue interleaves, and the walk is cheap next to
// the fsync of the commit. It needs no counter that every other writer
// would have to keep in step.
func (b *boltStore) enqueueCall(ctx context.Context, c *Call, lim QueueLimits) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		fn, err := loadFn(tx, c.FnID)
		if err != nil {
			return err
		}
		if lim.TriggerID != "" {
			t, err := loadTrigger(tx, lim.TriggerID)
			if err != nil {
				return err
			}
			if t.FnID != fn.ID {
				return triggerMoved(t.ID, fn.ID)
			}
		}
		if lim.PerFn > 0 || lim.Total > 0 {
			total, mine := countQueued(tx, fn.ID, lim.Total)
			if err := lim.full(fn.ID, total, mine); err != nil {
				return err
			}
		}
		return insertCall(tx, fn, c.stored())
	})
}

// countQueued counts all queued calls and those of fnID. Once total
// reaches stopAt (when > 0) the answer is decided, so it stops there and
// the fn's count may be short.
func countQueued(tx *bolt.Tx, fnID string, stopAt int) (total, mine int) {
	pfx := prefix(CallQueued)
	suffix := []byte(sep + fnID)
	c := tx.Bucket(bktCallStatuses).Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		total++
		if bytes.HasSuffix(k, suffix) {
			mine++
		}
		if stopAt > 0 && total >= stopAt {
			break
		}
	}
	return total, mine
}

func (b *boltStore) countQueued(ctx context.Context) (int, map[string]int, error) {
	perFn := map[string]int{}
	total := 0
	err := b.view(ctx, func(tx *bolt.Tx) error {
		pfx := prefix(CallQueued)
		c := tx.Bucket(bktCallStatuses).Cursor()
		for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
			total++
			perFn[lastPart(k)]++
		}
		return nil
	})
	return total, perFn, err
}

func (b *boltStore) saveCalls(ctx context.Context, writes []CallWrite) error {
	return b.update(ctx, func(tx *bolt.Tx) error {
		// A batch is mostly calls of a few fns: check each fn once, by
		// key, without decoding it.
		fnExists := map[string]bool{}
		for _, w := range writes {
			c := w.Call
			exists, seen := fnExists[c.FnID]
			if !seen {
				exists = tx.Bucket(bktFns).Get([]byte(c.FnID)) != nil
				fnExists[c.FnID] = exists
			}
			if !exists {
				continue
			}
			calls, err := tx.Bucket(bktCalls).CreateBucketIfNotExists([]byte(c.FnID))
			if err != nil {
				return err
			}
			var from string
			if old := calls.Get([]byte(c.ID)); old != nil {
				prev, err := decodeCall(old)
				if err != nil {
					return err
				}
				from = prev.Status
			}
			if err := putJSON(calls, []byte(c.ID), c.stored()); err != nil {
				return err
			}
			if err := moveStatus(tx, c.FnID, c.ID, from, c.Status); err != nil {
				return err
			}
			if len(w.Log) > 0 {
				logs, err := tx.Bucket(bktCallLogs).CreateBucketIfNotExists([]byte(c.FnID))
				if err != nil {
					return err
				}
				if err := logs.Put([]byte(c.ID), w.Log); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
