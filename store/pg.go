package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
)

// pgStore is the backend for several kilnd sharing one Postgres
// database. Records are the same JSON documents bbolt keeps, in a data
// column beside the columns that carry keys and constraints (see
// migrations/). The database enforces uniqueness (unique constraints) and
// cascades (foreign keys ON DELETE CASCADE); the code checks first where
// bbolt's error precedence must be kept, and row locks taken in those
// checks close the races between them and the writes that follow, so
// every transaction runs at READ COMMITTED and none is retried: apply
// callbacks run exactly once.
type pgStore struct {
	pool     *pgxpool.Pool
	listener *listener
}

// notifyChannel carries one notification per committed change to an
// app, fn, trigger or secret, sent in the changing transaction; every
// node's listener turns them into generation bumps.
const notifyChannel = "kiln_changes"

// Advisory lock keys: queueLockSpace (the two-int form) serializes
// enqueues against the queue bounds; migrateLock (the bigint form, a
// separate key space) serializes migrations across nodes starting at once.
const (
	queueLockSpace = 0x6b696c6e // "kiln"
	migrateLock    = 0x6b696c6e_6d696772
)

func openPostgres(ctx context.Context, dsn string, log *logrus.Entry, gen *generation) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errdefs.Errorf(errdefs.ErrInvalid, "open store: %w", err)
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "kilnd"
	}
	where := fmt.Sprintf("postgres %s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store %s: %w", where, dbError(err))
	}
	if err := migrate(ctx, cfg.ConnConfig); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	l, err := startListener(ctx, cfg.ConnConfig, gen, log.WithField("store", where))
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	return &pgStore{pool: pool, listener: l}, nil
}

func (p *pgStore) close() error {
	p.listener.close()
	p.pool.Close()
	return nil
}

// querier is what the read helpers need of a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// tx runs fn in one READ COMMITTED transaction, committed when fn
// returns nil. Like bbolt's, it refuses to start on a cancelled context.
func (p *pgStore) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return dbError(pgx.BeginFunc(ctx, p.pool, fn))
}

// read runs a read outside a transaction (each statement sees a
// consistent snapshot of its own).
func (p *pgStore) read(ctx context.Context, fn func(q querier) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return dbError(fn(p.pool))
}

// notify queues the change notification of one resource in tx: Postgres
// delivers it to every listener when (and only if) tx commits.
func notify(ctx context.Context, tx pgx.Tx, kind, id string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, kind+" "+id)
	return err
}

// dbError gives an error from Postgres the errdefs kind that fits, so
// the api answers a lost database with 503 rather than 500. Errors made
// here (already of a kind) and those of callbacks pass as they are.
func dbError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40001" || pe.Code == "40P01": // serialization failure, deadlock: retry
			return errdefs.Errorf(errdefs.ErrUnavailable, "postgres: %w", err)
		case strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P"): // connection lost, shutting down
			return errdefs.Errorf(errdefs.ErrUnavailable, "postgres: %w", err)
		case strings.HasPrefix(pe.Code, "22"): // data exception: text Postgres cannot hold
			return errdefs.Errorf(errdefs.ErrInvalid, "postgres: %w", err)
		case pe.Code == "23505": // a race the checks could not see
			return errdefs.Errorf(errdefs.ErrConflict, "postgres: %w", err)
		case pe.Code == "23503":
			return errdefs.Errorf(errdefs.ErrNotFound, "postgres: %w", err)
		}
		return fmt.Errorf("postgres: %w", err)
	}
	var (
		ce *pgconn.ConnectError
		ne net.Error
	)
	if errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errdefs.Errorf(errdefs.ErrUnavailable, "postgres unavailable: %w", err)
	}
	return err
}

func isUnique(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

// pgGet decodes the one JSON document query selects, or returns
// notFound.
func pgGet[T any](ctx context.Context, q querier, notFound error, query string, args ...any) (*T, error) {
	var data []byte
	err := q.QueryRow(ctx, query, args...).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	return decode[T](data)
}

// pgAll decodes every JSON document query selects, in its order; none is
// an empty slice, not nil, as bbolt's listings give.
func pgAll[T any](ctx context.Context, q querier, query string, args ...any) ([]*T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []*T{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		v, err := decode[T](data)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// pgPage is bbolt's page for Postgres: query selects (id, data) rows of
// the listing in its order, and takes as its last two parameters the id
// to start after ("" for the first page) and how many rows to return. It
// asks for one row past the page, so the next cursor is given only when
// another item really exists; cursors are those bbolt makes for the same
// listing (pfx followed by the last id).
func pgPage[T any](ctx context.Context, q querier, pfx []byte, opts ListOptions, scan func(pgx.Rows) (string, *T, error), query string, args ...any) ([]*T, string, error) {
	after, err := decodeCursor(opts.Cursor, pfx)
	if err != nil {
		return nil, "", err
	}
	afterID := ""
	if after != nil {
		afterID = string(after[len(pfx):])
	}
	n := perPage(opts.PerPage)
	rows, err := q.Query(ctx, query, append(args, afterID, n+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	items := make([]*T, 0, n)
	lastID := ""
	for rows.Next() {
		if len(items) == n {
			return items, encodeCursor(append(bytes.Clone(pfx), lastID...)), nil
		}
		id, item, err := scan(rows)
		if err != nil {
			return nil, "", err
		}
		items, lastID = append(items, item), id
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	return items, "", nil
}

// scanDoc scans an (id, data) row.
func scanDoc[T any](rows pgx.Rows) (string, *T, error) {
	var (
		id   string
		data []byte
	)
	if err := rows.Scan(&id, &data); err != nil {
		return "", nil, err
	}
	v, err := decode[T](data)
	return id, v, err
}
