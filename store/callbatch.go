package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
)

// CallWrite is one call record to upsert, with the call's whole log when
// it has one. Logs here are final: capping happens before, in memory.
type CallWrite struct {
	Call *Call
	Log  []byte
}

// SaveCalls upserts many call records (and their logs) in one
// transaction. Synchronous calls are recorded this way, in batches, so a
// hot call does not wait for a disk sync of its own. A record whose fn
// was deleted meanwhile is dropped, not an error: its calls went with it.
func (s *Store) SaveCalls(ctx context.Context, writes []CallWrite) error {
	if len(writes) == 0 {
		return nil
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
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
			if c.Status == "" {
				c.Status = CallQueued
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
