// Package store keeps kiln's apps, fns, triggers and call records in an
// embedded bbolt database, so a single kilnd needs no external database.
//
// Every mutation runs in one bbolt write transaction together with the
// secondary indexes it touches, so a crash never leaves a fn without its
// name index or a deleted app with orphaned triggers. Records are stored as
// JSON and decoded afresh for every caller: nothing returned shares memory
// with the database or with another caller.
package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kiln-run/kiln/errdefs"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Page sizes. The maximum keeps one list request from pinning a read
// transaction (and its pages) for long.
const (
	DefaultPerPage = 30
	MaxPerPage     = 100
)

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

// sep joins the parts of composite index keys. IDs and names never contain
// it (names are validated, ids are generated), so keys split unambiguously
// and a prefix "parent\0" selects exactly one parent's children.
const sep = "\x00"

// Store is the bbolt-backed store. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
	// now is the clock; tests replace it to control timestamps and ids.
	now func() time.Time
	ids idSource
	// generation counts committed changes to apps, fns and triggers, so
	// a reader can cache them and know when to stop trusting the cache.
	generation atomic.Uint64
}

// Open opens (creating if needed) the database at path. A second process
// holding the same file makes Open fail after a second instead of waiting
// forever, so two kilnd on one data dir is a clear startup error.
func Open(path string) (*Store, error) {
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
	return &Store{db: db, now: time.Now}, nil
}

// Close releases the database file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// timestamp is the clock in UTC with the monotonic reading stripped, so a
// record returned by Create compares equal to the same record read back.
func (s *Store) timestamp() time.Time { return s.now().UTC() }

// view and update refuse to start on a cancelled context; bbolt itself
// cannot be interrupted mid-transaction, and transactions here are short.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

// updateResources is update for apps, fns and triggers: it bumps the
// generation after the commit, so a cache filled after reading the new
// generation never holds a record older than it.
func (s *Store) updateResources(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	err := s.update(ctx, fn)
	if err == nil {
		s.generation.Add(1)
	}
	return err
}

// Generation changes whenever an app, fn or trigger does. Call records
// do not count: they change on every call.
func (s *Store) Generation() uint64 { return s.generation.Load() }

func key(parts ...string) []byte { return []byte(strings.Join(parts, sep)) }

func prefix(parts ...string) []byte { return []byte(strings.Join(parts, sep) + sep) }

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

func decode[T any](v []byte) (*T, error) {
	var out T
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	return &out, nil
}

func putJSON(b *bolt.Bucket, id []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(id, data)
}

// roundTrip returns a deep copy of v as the store would hand it back.
func roundTrip[T any](v *T) (*T, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out T
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func perPage(n int) int {
	switch {
	case n <= 0:
		return DefaultPerPage
	case n > MaxPerPage:
		return MaxPerPage
	}
	return n
}

func encodeCursor(k []byte) string {
	if k == nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(k)
}

// decodeCursor checks that the cursor belongs to the listing it is used
// with: a cursor from another listing would silently seek somewhere else.
func decodeCursor(c string, pfx []byte) ([]byte, error) {
	if c == "" {
		return nil, nil
	}
	k, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !bytes.HasPrefix(k, pfx) || len(k) == len(pfx) {
		return nil, fmt.Errorf("%w cursor %q", errdefs.ErrInvalid, c)
	}
	return k, nil
}

// page walks the keys of b under pfx, ascending or (reverse) descending,
// strictly after the cursor, and decodes each with load, which returns nil
// to skip a key that does not match the listing's filters. It collects one
// item past the page so the next cursor is only given when another item
// really exists: a client looping on next_cursor never gets an empty page.
func page[T any](b *bolt.Bucket, pfx []byte, opts ListOptions, reverse bool, load func(k, v []byte) (*T, error)) ([]*T, string, error) {
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

// checkName keeps the separator out of index keys; the api enforces the
// full naming rules.
func checkName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w %s name: must not be empty", errdefs.ErrInvalid, kind)
	}
	if strings.Contains(name, sep) {
		return fmt.Errorf("%w %s name %q: must not contain NUL", errdefs.ErrInvalid, kind, name)
	}
	return nil
}
