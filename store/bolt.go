package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// boltStore is the embedded backend: one bbolt file, so a single kilnd
// needs no external database.
//
// Every mutation runs in one bbolt write transaction together with the
// secondary indexes it touches, so a crash never leaves a fn without its
// name index or a deleted app with orphaned triggers. Records are stored
// as JSON and decoded afresh for every caller: nothing returned shares
// memory with the database or with another caller.
type boltStore struct {
	db *bolt.DB
}

// Bucket names. Indexes map a composite key to an id (or to nothing when
// the key itself carries the id), so lookups and scoped listings are seeks.
var (
	bktApps         = []byte("apps")          // app id -> App
	bktAppNames     = []byte("app_names")     // name -> app id
	bktFns          = []byte("fns")           // fn id -> Fn
	bktFnNames      = []byte("fn_names")      // app id \0 name -> fn id
	bktAppFns       = []byte("app_fns")       // app id \0 fn id -> nil
	bktTriggers     = []byte("triggers")      // trigger id -> Trigger
	bktTrigNames    = []byte("trigger_names") // app id \0 name -> trigger id
	bktTrigSources  = []byte("trigger_src")   // app id \0 source -> trigger id (http only)
	bktAppTriggers  = []byte("app_triggers")  // app id \0 trigger id -> nil
	bktFnTriggers   = []byte("fn_triggers")   // fn id \0 trigger id -> nil
	bktTrigTypes    = []byte("trigger_types") // type \0 trigger id -> nil
	bktCalls        = []byte("calls")         // fn id -> {call id -> Call}
	bktCallLogs     = []byte("call_logs")     // fn id -> {call id -> log bytes}
	bktCallStatuses = []byte("call_status")   // status \0 call id \0 fn id -> nil
	bktSecrets      = []byte("secrets")       // app id \0 name -> Secret (value sealed)

	allBuckets = [][]byte{
		bktApps, bktAppNames, bktFns, bktFnNames, bktAppFns,
		bktTriggers, bktTrigNames, bktTrigSources, bktAppTriggers, bktFnTriggers, bktTrigTypes,
		bktCalls, bktCallLogs, bktCallStatuses, bktSecrets,
	}
)

func openBolt(path string) (*boltStore, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: database is locked by another process (is another kilnd using this data dir?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &boltStore{db: db}, nil
}

// close releases the database file and its lock.
func (b *boltStore) close() error { return b.db.Close() }

// view and update refuse to start on a cancelled context; bbolt itself
// cannot be interrupted mid-transaction, and transactions here are short.
func (b *boltStore) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(fn)
}

func (b *boltStore) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(fn)
}

// lastPart returns what follows the last separator of an index key, which
// is the child id for keys like "app id \0 fn id".
func lastPart(k []byte) string {
	if i := bytes.LastIndexByte(k, sep[0]); i >= 0 {
		return string(k[i+1:])
	}
	return string(k)
}

// getJSON returns nil, nil when id is absent.
func getJSON[T any](b *bolt.Bucket, id []byte) (*T, error) {
	v := b.Get(id)
	if v == nil {
		return nil, nil
	}
	return decode[T](v)
}

func putJSON(b *bolt.Bucket, id []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(id, data)
}

// boltPage walks the keys of b under pfx, ascending or (reverse)
// descending, strictly after the cursor, and decodes each with load, which
// returns nil to skip a key that does not match the listing's filters. It
// collects one item past the page so the next cursor is only given when
// another item really exists: a client looping on next_cursor never gets
// an empty page.
func boltPage[T any](b *bolt.Bucket, pfx []byte, opts ListOptions, reverse bool, load func(k, v []byte) (*T, error)) ([]*T, string, error) {
	after, err := decodeCursor(opts.Cursor, pfx)
	if err != nil {
		return nil, "", err
	}
	n := perPage(opts.PerPage)
	c := b.Cursor()
	var k, v []byte
	switch {
	case !reverse && after == nil:
		k, v = c.Seek(pfx)
	case !reverse:
		k, v = c.Seek(after)
		if bytes.Equal(k, after) {
			k, v = c.Next()
		}
	default:
		start := after
		if start == nil {
			start = prefixEnd(pfx)
		}
		if start == nil {
			k, v = c.Last()
		} else if k, _ = c.Seek(start); k == nil {
			k, v = c.Last()
		} else {
			// Seek lands on the first key >= start; the one before it is
			// the newest key strictly below.
			k, v = c.Prev()
		}
	}
	items := make([]*T, 0, n)
	var keys [][]byte
	for ; k != nil && bytes.HasPrefix(k, pfx); k, v = step(c, reverse) {
		item, err := load(k, v)
		if err != nil {
			return nil, "", err
		}
		if item == nil {
			continue
		}
		if len(items) == n {
			return items, encodeCursor(keys[n-1]), nil
		}
		items = append(items, item)
		keys = append(keys, bytes.Clone(k))
	}
	return items, "", nil
}

func step(c *bolt.Cursor, reverse bool) ([]byte, []byte) {
	if reverse {
		return c.Prev()
	}
	return c.Next()
}

// prefixEnd is the smallest key greater than every key with prefix p, or
// nil when no such key exists (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// childIDs lists the ids under pfx in an index of "parent \0 child" keys.
// It collects before the caller deletes: deleting under a live bolt cursor
// skips entries.
func childIDs(b *bolt.Bucket, pfx []byte) []string {
	var ids []string
	c := b.Cursor()
	for k, _ := c.Seek(pfx); k != nil && bytes.HasPrefix(k, pfx); k, _ = c.Next() {
		ids = append(ids, lastPart(k))
	}
	return ids
}
