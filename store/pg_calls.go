package store

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Calls in Postgres: the API view of a call in data, its stored request
// apart in request, its log in call_logs.

// callRow is a call as its columns hold it.
type callRow struct {
	data    string
	request *string
}

func toCallRow(c *Call) (callRow, error) {
	data, err := jsonText(c)
	if err != nil {
		return callRow{}, err
	}
	row := callRow{data: data}
	if c.Request != nil {
		req, err := jsonText(c.Request)
		if err != nil {
			return callRow{}, err
		}
		row.request = &req
	}
	return row, nil
}

func decodeCallRow(data, request []byte) (*Call, error) {
	c, err := decode[Call](data)
	if err != nil {
		return nil, err
	}
	if request != nil {
		if c.Request, err = decode[CallRequest](request); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// scanCall scans an (id, data, request) row.
func scanCall(rows pgx.Rows) (string, *Call, error) {
	var (
		id            string
		data, request []byte
	)
	if err := rows.Scan(&id, &data, &request); err != nil {
		return "", nil, err
	}
	c, err := decodeCallRow(data, request)
	return id, c, err
}

func getCallRow(ctx context.Context, q querier, fnID, callID, lock string) (*Call, error) {
	var data, request []byte
	err := q.QueryRow(ctx, "SELECT data, request FROM calls WHERE fn_id = $1 AND id = $2"+lock, fnID, callID).Scan(&data, &request)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, callNotFound(fnID, callID)
	}
	if err != nil {
		return nil, err
	}
	return decodeCallRow(data, request)
}

// pgInsertCall writes a new call of a fn locked by the caller (lockFn); an
// id already taken is errdefs.ErrConflict. An empty AppID becomes the fn's.
func pgInsertCall(ctx context.Context, tx pgx.Tx, fnApp string, c *Call) error {
	if c.AppID == "" {
		c.AppID = fnApp
	}
	row, err := toCallRow(c)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO calls (fn_id, id, app_id, status, created_at, data, request)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, c.FnID, c.ID, c.AppID, c.Status, c.CreatedAt, row.data, row.request)
	if isUnique(err, "calls_pkey") {
		return callTaken(c.FnID, c.ID)
	}
	return err
}

func (p *pgStore) createCall(ctx context.Context, c *Call) error {
	return p.tx(ctx, func(tx pgx.Tx) error {
		fnApp, err := lockFn(ctx, tx, c.FnID)
		if err != nil {
			return err
		}
		return pgInsertCall(ctx, tx, fnApp, c)
	})
}

// enqueueCall counts and inserts under advisory locks, so no two
// enqueues on any node interleave between counting and inserting. One
// with a total bound takes the queue's lock exclusively (it counts every
// queued call); the others share it, so none inserts while a bounded one
// counts, and one with a per-fn bound takes its fn's lock exclusively.
// Transaction-level locks end at the commit, once the inserted row is
// visible to the next holder.
func (p *pgStore) enqueueCall(ctx context.Context, c *Call, lim QueueLimits) error {
	return p.tx(ctx, func(tx pgx.Tx) error {
		var err error
		switch {
		case lim.Total > 0:
			_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", queueLockSpace)
		case lim.PerFn > 0:
			_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1, 0), pg_advisory_xact_lock($1, hashtext($2))", queueLockSpace, c.FnID)
		default:
			_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1, 0)", queueLockSpace)
		}
		if err != nil {
			return err
		}
		fnApp, err := lockFn(ctx, tx, c.FnID)
		if err != nil {
			return err
		}
		if lim.TriggerID != "" {
			var trigFn string
			err := tx.QueryRow(ctx, "SELECT fn_id FROM triggers WHERE id = $1 FOR KEY SHARE", lim.TriggerID).Scan(&trigFn)
			if errors.Is(err, pgx.ErrNoRows) {
				return triggerNotFound(lim.TriggerID)
			}
			if err != nil {
				return err
			}
			if trigFn != c.FnID {
				return triggerMoved(lim.TriggerID, c.FnID)
			}
		}
		if lim.PerFn > 0 || lim.Total > 0 {
			// The total is counted only up to its bound: past it, the
			// answer is decided (bbolt stops there too).
			var total, mine int
			err := tx.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM (SELECT 1 FROM calls WHERE status = 'queued' LIMIT $2) q),
				CASE WHEN $3 THEN (SELECT count(*) FROM calls WHERE status = 'queued' AND fn_id = $1) ELSE 0 END`,
				c.FnID, lim.Total, lim.PerFn > 0).Scan(&total, &mine)
			if err != nil {
				return err
			}
			if err := lim.full(c.FnID, total, mine); err != nil {
				return err
			}
		}
		return pgInsertCall(ctx, tx, fnApp, c)
	})
}

func (p *pgStore) updateCall(ctx context.Context, fnID, callID string, apply func(*Call) (*Call, error)) (out *Call, err error) {
	err = p.tx(ctx, func(tx pgx.Tx) error {
		old, err := getCallRow(ctx, tx, fnID, callID, " FOR NO KEY UPDATE")
		if err != nil {
			return err
		}
		c, err := apply(old)
		if err != nil {
			return err
		}
		row, err := toCallRow(c)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE calls SET status = $3, data = $4, request = $5 WHERE fn_id = $1 AND id = $2",
			fnID, callID, c.Status, row.data, row.request); err != nil {
			return err
		}
		out = c
		return nil
	})
	return out, err
}

// saveCalls writes the batch in one round trip. It locks the fns first
// (FOR KEY SHARE: a DeleteFn waits for the batch, or the batch skips its
// calls) and writes in key order, so two batches overlapping on some
// calls lock them in the same order and cannot deadlock.
func (p *pgStore) saveCalls(ctx context.Context, writes []CallWrite) error {
	writes = slices.Clone(writes)
	slices.SortStableFunc(writes, func(a, b CallWrite) int {
		return cmp.Or(cmp.Compare(a.Call.FnID, b.Call.FnID), cmp.Compare(a.Call.ID, b.Call.ID))
	})
	var fnIDs []string
	for _, w := range writes {
		if len(fnIDs) == 0 || fnIDs[len(fnIDs)-1] != w.Call.FnID {
			fnIDs = append(fnIDs, w.Call.FnID)
		}
	}
	return p.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT id FROM fns WHERE id = ANY($1) ORDER BY id FOR KEY SHARE", fnIDs)
		if err != nil {
			return err
		}
		live, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		exists := map[string]bool{}
		for _, id := range live {
			exists[id] = true
		}
		var batch pgx.Batch
		for _, w := range writes {
			c := w.Call
			if !exists[c.FnID] {
				continue
			}
			row, err := toCallRow(c)
			if err != nil {
				return err
			}
			batch.Queue(`INSERT INTO calls (fn_id, id, app_id, status, created_at, data, request)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (fn_id, id) DO UPDATE SET app_id = EXCLUDED.app_id, status = EXCLUDED.status,
				created_at = EXCLUDED.created_at, data = EXCLUDED.data, request = EXCLUDED.request`,
				c.FnID, c.ID, c.AppID, c.Status, c.CreatedAt, row.data, row.request)
			if len(w.Log) > 0 {
				batch.Queue(`INSERT INTO call_logs (fn_id, call_id, log) VALUES ($1, $2, $3)
					ON CONFLICT (fn_id, call_id) DO UPDATE SET log = EXCLUDED.log`, c.FnID, c.ID, w.Log)
			}
		}
		if batch.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, &batch).Close()
	})
}

func (p *pgStore) getCall(ctx context.Context, fnID, callID string) (c *Call, err error) {
	err = p.read(ctx, func(q querier) error {
		c, err = getCallRow(ctx, q, fnID, callID, "")
		return err
	})
	return c, err
}

func (p *pgStore) listCalls(ctx context.Context, fnID string, opts ListOptions) (calls []*Call, next string, err error) {
	err = p.read(ctx, func(q querier) error {
		var one int
		err := q.QueryRow(ctx, "SELECT 1 FROM fns WHERE id = $1", fnID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fnNotFound(fnID)
		}
		if err != nil {
			return err
		}
		calls, next, err = pgPage(ctx, q, nil, opts, scanCall,
			`SELECT id, data, request FROM calls WHERE fn_id = $1 AND ($2 = '' OR id < $2)
			ORDER BY id DESC LIMIT $3`, fnID)
		return err
	})
	return calls, next, err
}

func (p *pgStore) listCallsByStatus(ctx context.Context, status string, limit int) (calls []*Call, err error) {
	var lim *int
	if limit > 0 {
		lim = &limit
	}
	err = p.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, "SELECT id, data, request FROM calls WHERE status = $1 ORDER BY id, fn_id LIMIT $2", status, lim)
		if err != nil {
			return err
		}
		defer rows.Close()
		calls = []*Call{}
		for rows.Next() {
			_, c, err := scanCall(rows)
			if err != nil {
				return err
			}
			calls = append(calls, c)
		}
		return rows.Err()
	})
	return calls, err
}

func (p *pgStore) countQueued(ctx context.Context) (total int, perFn map[string]int, err error) {
	err = p.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, "SELECT fn_id, count(*) FROM calls WHERE status = 'queued' GROUP BY fn_id")
		if err != nil {
			return err
		}
		defer rows.Close()
		perFn = map[string]int{}
		for rows.Next() {
			var (
				fnID string
				n    int
			)
			if err := rows.Scan(&fnID, &n); err != nil {
				return err
			}
			perFn[fnID] = n
			total += n
		}
		return rows.Err()
	})
	return total, perFn, err
}

// appendCallLog locks the call row (FOR NO KEY UPDATE: appends to one
// log take turns, and the call cannot be deleted meanwhile) and applies
// the same rule as bbolt to the log it reads.
func (p *pgStore) appendCallLog(ctx context.Context, fnID, callID string, b []byte, capBytes int) error {
	return p.tx(ctx, func(tx pgx.Tx) error {
		var cur []byte
		err := tx.QueryRow(ctx, `SELECT l.log FROM calls c
			LEFT JOIN call_logs l ON l.fn_id = c.fn_id AND l.call_id = c.id
			WHERE c.fn_id = $1 AND c.id = $2 FOR NO KEY UPDATE OF c`, fnID, callID).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return callNotFound(fnID, callID)
		}
		if err != nil {
			return err
		}
		out, ok := appendCapped(cur, b, capBytes)
		if !ok {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO call_logs (fn_id, call_id, log) VALUES ($1, $2, $3)
			ON CONFLICT (fn_id, call_id) DO UPDATE SET log = EXCLUDED.log`, fnID, callID, out)
		return err
	})
}

func (p *pgStore) getCallLog(ctx context.Context, fnID, callID string) (out []byte, err error) {
	err = p.read(ctx, func(q querier) error {
		err := q.QueryRow(ctx, `SELECT l.log FROM calls c
			LEFT JOIN call_logs l ON l.fn_id = c.fn_id AND l.call_id = c.id
			WHERE c.fn_id = $1 AND c.id = $2`, fnID, callID).Scan(&out)
		if errors.Is(err, pgx.ErrNoRows) {
			return callNotFound(fnID, callID)
		}
		return err
	})
	if err == nil && out == nil {
		out = []byte{}
	}
	return out, err
}

// pruneCalls ranks each fn's calls newest first, as bbolt walks them, in
// one statement. The status is checked again on the row being deleted, so
// a call that went back to the queue meanwhile stays.
func (p *pgStore) pruneCalls(ctx context.Context, perFn int, cutoff time.Time) (n int, err error) {
	var before *time.Time
	if !cutoff.IsZero() {
		before = &cutoff
	}
	err = p.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `WITH ranked AS (
				SELECT fn_id, id, status, created_at,
					row_number() OVER (PARTITION BY fn_id ORDER BY id DESC) AS seen
				FROM calls
			)
			DELETE FROM calls c USING ranked r
			WHERE c.fn_id = r.fn_id AND c.id = r.id
				AND r.status NOT IN ('queued', 'running') AND c.status NOT IN ('queued', 'running')
				AND (($1::int > 0 AND r.seen > $1::int) OR r.created_at < $2::timestamptz)`, perFn, before)
		n = int(tag.RowsAffected())
		return err
	})
	return n, err
}
