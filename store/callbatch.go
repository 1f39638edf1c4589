package store

import "context"

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
// An empty status means queued; an empty log leaves the stored one.
func (s *Store) SaveCalls(ctx context.Context, writes []CallWrite) error {
	if len(writes) == 0 {
		return nil
	}
	norm := make([]CallWrite, len(writes))
	for i, w := range writes {
		c := *w.Call
		if c.Status == "" {
			c.Status = CallQueued
		}
		norm[i] = CallWrite{Call: &c, Log: w.Log}
	}
	return s.b.saveCalls(ctx, norm)
}
