// Package store keeps kiln's apps, fns, triggers, secrets and call records.
// A single kilnd keeps them in an embedded bbolt database and needs no
// external service; several kilnd share one Postgres database.
//
// Store is the one type callers see. It does everything that must not
// differ between the two backends (validation, ids, timestamps, copies,
// the generation) and hands storage to a backend, so a record, an error
// or a page of a listing looks the same whichever is in use; one test
// suite runs against both to keep it so.
package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
)

// Page sizes. The maximum keeps one list request from pinning a read
// transaction (and its pages) for long.
const (
	DefaultPerPage = 30
	MaxPerPage     = 100
)

// sep joins the parts of composite keys (bbolt's index keys and every
// backend's cursors). IDs and names never contain it (names are
// validated, ids are generated), so keys split unambiguously and a prefix
// "parent\0" selects exactly one parent's children.
const sep = "\x00"

// Store is the type callers use, whichever backend keeps the records.
// It is safe for concurrent use.
type Store struct {
	b backend
	// now is the clock; tests replace it to control timestamps and ids.
	now func() time.Time
	ids idSource
	gen generation
}

// generation counts changes to apps, fns, triggers and secrets, so a
// reader can cache them and know when to stop trusting the cache.
type generation struct {
	n atomic.Uint64
	// deaf is set while this node cannot hear other nodes' changes (the
	// Postgres listener lost its connection). No cache can be trusted
	// then, so every reading is a new generation.
	deaf atomic.Bool
}

func (g *generation) bump() { g.n.Add(1) }

func (g *generation) load() uint64 {
	if g.deaf.Load() {
		return g.n.Add(1)
	}
	return g.n.Load()
}

func newStore(b backend) *Store { return &Store{b: b, now: time.Now} }

// Open opens (creating if needed) the bbolt database at path. A second
// process holding the same file makes Open fail after a second instead
// of waiting forever, so two kilnd on one data dir is a clear startup
// error.
func Open(path string) (*Store, error) {
	b, err := openBolt(path)
	if err != nil {
		return nil, err
	}
	return newStore(b), nil
}

// OpenPostgres connects to the Postgres database at dsn (a postgres:// URL
// or a libpq key=value string), brings its schema up to date, and starts
// listening for other nodes' changes, which log hears about when the
// connection for that is lost and regained. Close stops it.
func OpenPostgres(ctx context.Context, dsn string, log *logrus.Entry) (*Store, error) {
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	s := newStore(nil)
	b, err := openPostgres(ctx, dsn, log, &s.gen)
	if err != nil {
		return nil, err
	}
	s.b = b
	return s, nil
}

// OpenURL opens the store named by u: a postgres:// or postgresql:// URL
// is a Postgres database (see OpenPostgres), anything else without a
// scheme is the path of a bbolt database (see Open).
func OpenURL(ctx context.Context, u string, log *logrus.Entry) (*Store, error) {
	scheme, _, hasScheme := strings.Cut(u, "://")
	switch {
	case !hasScheme:
		if u == "" {
			return nil, fmt.Errorf("%w store: empty path", errdefs.ErrInvalid)
		}
		return Open(u)
	case scheme == "postgres" || scheme == "postgresql":
		return OpenPostgres(ctx, u, log)
	}
	return nil, fmt.Errorf("%w store %q: unknown scheme %q (want a file path or postgres://)", errdefs.ErrInvalid, redactURL(u), scheme)
}

// redactURL drops what lies between the scheme and an @, so a password in
// a mistyped URL does not end up in a log.
func redactURL(u string) string {
	scheme, rest, _ := strings.Cut(u, "://")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = "…" + rest[i:]
	}
	return scheme + "://" + rest
}

// Close stops the store's goroutines and releases the database.
func (s *Store) Close() error { return s.b.close() }

// Generation changes whenever an app, fn, trigger or secret does, on
// this node or (with Postgres) on any other. Call records do not count:
// they change on every call.
func (s *Store) Generation() uint64 { return s.gen.load() }

// timestamp is the clock in UTC with the monotonic reading stripped and
// cut to the microsecond Postgres keeps, so a record returned by Create
// compares equal to the same record read back from either backend.
func (s *Store) timestamp() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// resourceChanged is called after a committed change to an app, fn,
// trigger or secret: bumping after the commit means a cache filled after
// reading the new generation never holds a record older than it.
func (s *Store) resourceChanged(err error) error {
	if err == nil {
		s.gen.bump()
	}
	return err
}

func key(parts ...string) []byte { return []byte(strings.Join(parts, sep)) }

func prefix(parts ...string) []byte { return []byte(strings.Join(parts, sep) + sep) }

func decode[T any](v []byte) (*T, error) {
	var out T
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("decode record: %w", err)
	}
	return &out, nil
}

// roundTrip returns a deep copy of v as the store would hand it back.
func roundTrip[T any](v *T) (*T, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decode[T](data)
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

// Cursors are the key of the last item of a page, under the listing's
// prefix: bbolt seeks to it, Postgres compares ids with what follows the
// prefix. Both backends make the same cursors for the same listing.
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
	if err != nil || !strings.HasPrefix(string(k), string(pfx)) || len(k) == len(pfx) {
		return nil, fmt.Errorf("%w cursor %q", errdefs.ErrInvalid, c)
	}
	return k, nil
}

// checkName keeps the separator out of keys (and Postgres refuses NUL in
// text anyway); the api enforces the full naming rules.
func checkName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w %s name: must not be empty", errdefs.ErrInvalid, kind)
	}
	if strings.Contains(name, sep) {
		return fmt.Errorf("%w %s name %q: must not contain NUL", errdefs.ErrInvalid, kind, name)
	}
	return nil
}
