package store

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"
)

// Apps, fns and triggers in Postgres. JSON goes to the database as text,
// which every query execution mode (and pgbouncer's) passes unchanged.

func jsonText(v any) (string, error) {
	data, err := json.Marshal(v)
	return string(data), err
}

// lockApp checks that the app exists and keeps it from being deleted
// until tx ends (FOR KEY SHARE conflicts only with deleting the row or
// changing its id).
func lockApp(ctx context.Context, tx pgx.Tx, id string) error {
	var one int
	err := tx.QueryRow(ctx, "SELECT 1 FROM apps WHERE id = $1 FOR KEY SHARE", id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return appNotFound(id)
	}
	return err
}

// lockFn is lockApp for a fn; it returns the fn's app.
func lockFn(ctx context.Context, tx pgx.Tx, id string) (string, error) {
	var appID string
	err := tx.QueryRow(ctx, "SELECT app_id FROM fns WHERE id = $1 FOR KEY SHARE", id).Scan(&appID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fnNotFound(id)
	}
	return appID, err
}

func (p *pgStore) createApp(ctx context.Context, app *App) error {
	data, err := jsonText(app)
	if err != nil {
		return err
	}
	return p.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO apps (id, name, data) VALUES ($1, $2, $3)", app.ID, app.Name, data)
		if isUnique(err, "apps_name_key") {
			return appNameTaken(app.Name)
		}
		if err != nil {
			return err
		}
		return notify(ctx, tx, "app", app.ID)
	})
}

func (p *pgStore) getApp(ctx context.Context, id string) (app *App, err error) {
	err = p.read(ctx, func(q querier) error {
		app, err = pgGet[App](ctx, q, appNotFound(id), "SELECT data FROM apps WHERE id = $1", id)
		return err
	})
	return app, err
}

func (p *pgStore) getAppByName(ctx context.Context, name string) (app *App, err error) {
	err = p.read(ctx, func(q querier) error {
		app, err = pgGet[App](ctx, q, appNameNotFound(name), "SELECT data FROM apps WHERE name = $1", name)
		return err
	})
	return app, err
}

func (p *pgStore) listApps(ctx context.Context, opts ListOptions) (apps []*App, next string, err error) {
	err = p.read(ctx, func(q querier) error {
		if opts.Name != "" {
			apps, err = pgAll[App](ctx, q, "SELECT data FROM apps WHERE name = $1", opts.Name)
			return err
		}
		apps, next, err = pgPage(ctx, q, nil, opts, scanDoc[App],
			"SELECT id, data FROM apps WHERE id > $1 ORDER BY id LIMIT $2")
		return err
	})
	return apps, next, err
}

func (p *pgStore) updateApp(ctx context.Context, id string, apply func(*App) (*App, error)) (out *App, err error) {
	err = p.tx(ctx, func(tx pgx.Tx) error {
		old, err := pgGet[App](ctx, tx, appNotFound(id), "SELECT data FROM apps WHERE id = $1 FOR NO KEY UPDATE", id)
		if err != nil {
			return err
		}
		app, err := apply(old)
		if err != nil {
			return err
		}
		data, err := jsonText(app)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE apps SET name = $2, data = $3 WHERE id = $1", id, app.Name, data)
		if isUnique(err, "apps_name_key") {
			return appNameTaken(app.Name)
		}
		if err != nil {
			return err
		}
		out = app
		return notify(ctx, tx, "app", id)
	})
	return out, err
}

// deleteApp locks the app row first (FOR UPDATE waits for, then turns
// away, every transaction adding a fn, trigger or secret to it), so the
// fn ids it returns are all the fns the cascade deletes.
func (p *pgStore) deleteApp(ctx context.Context, id string) (fnIDs []string, err error) {
	err = p.tx(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, "SELECT 1 FROM apps WHERE id = $1 FOR UPDATE", id).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return appNotFound(id)
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT id FROM fns WHERE app_id = $1 ORDER BY id", id)
		if err != nil {
			return err
		}
		if fnIDs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM apps WHERE id = $1", id); err != nil {
			return err
		}
		return notify(ctx, tx, "app", id)
	})
	return fnIDs, err
}

// checkFnSecrets refuses a fn naming a secret its app does not have, and
// holds the secrets it names FOR KEY SHARE until tx ends: a DeleteSecret
// racing it deletes the row first and then looks for fns using it, so
// one of the two always sees the other.
func checkFnSecrets(ctx context.Context, tx pgx.Tx, fn *Fn) error {
	if len(fn.Secrets) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, "SELECT name FROM secrets WHERE app_id = $1 AND name = ANY($2) FOR KEY SHARE", fn.AppID, fn.Secrets)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, n := range fn.Secrets {
		if !have[n] {
			return missingSecret(fn.AppID, n)
		}
	}
	return nil
}

func fnSecrets(fn *Fn) []string {
	if fn.Secrets == nil {
		return []string{}
	}
	return fn.Secrets
}

func (p *pgStore) createFn(ctx context.Context, fn *Fn) error {
	data, err := jsonText(fn)
	if err != nil {
		return err
	}
	return p.tx(ctx, func(tx pgx.Tx) error {
		if err := lockApp(ctx, tx, fn.AppID); err != nil {
			return err
		}
		if err := checkFnSecrets(ctx, tx, fn); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO fns (id, app_id, name, secrets, data) VALUES ($1, $2, $3, $4, $5)",
			fn.ID, fn.AppID, fn.Name, fnSecrets(fn), data)
		if isUnique(err, "fns_app_name_key") {
			return fnNameTaken(fn.AppID, fn.Name)
		}
		if err != nil {
			return err
		}
		return notify(ctx, tx, "fn", fn.ID)
	})
}

func (p *pgStore) getFn(ctx context.Context, id string) (fn *Fn, err error) {
	err = p.read(ctx, func(q querier) error {
		fn, err = pgGet[Fn](ctx, q, fnNotFound(id), "SELECT data FROM fns WHERE id = $1", id)
		return err
	})
	return fn, err
}

func (p *pgStore) getFnByName(ctx context.Context, appID, name string) (fn *Fn, err error) {
	err = p.read(ctx, func(q querier) error {
		fn, err = pgGet[Fn](ctx, q, fnNameNotFound(appID, name),
			"SELECT data FROM fns WHERE app_id = $1 AND name = $2", appID, name)
		return err
	})
	return fn, err
}

// listFns takes bbolt's three ways (by name in an app, by app, all), so
// cursors and their checks are the same.
func (p *pgStore) listFns(ctx context.Context, opts ListOptions) (fns []*Fn, next string, err error) {
	err = p.read(ctx, func(q querier) error {
		switch {
		case opts.AppID != "" && opts.Name != "":
			fns, err = pgAll[Fn](ctx, q, "SELECT data FROM fns WHERE app_id = $1 AND name = $2", opts.AppID, opts.Name)
		case opts.AppID != "":
			fns, next, err = pgPage(ctx, q, prefix(opts.AppID), opts, scanDoc[Fn],
				"SELECT id, data FROM fns WHERE app_id = $1 AND id > $2 ORDER BY id LIMIT $3", opts.AppID)
		default:
			fns, next, err = pgPage(ctx, q, nil, opts, scanDoc[Fn],
				"SELECT id, data FROM fns WHERE ($1 = '' OR name = $1) AND id > $2 ORDER BY id LIMIT $3", opts.Name)
		}
		return err
	})
	return fns, next, err
}

func (p *pgStore) updateFn(ctx context.Context, id string, apply func(*Fn) (*Fn, error)) (out *Fn, err error) {
	err = p.tx(ctx, func(tx pgx.Tx) error {
		old, err := pgGet[Fn](ctx, tx, fnNotFound(id), "SELECT data FROM fns WHERE id = $1 FOR NO KEY UPDATE", id)
		if err != nil {
			return err
		}
		f, err := apply(old)
		if err != nil {
			return err
		}
		if err := checkFnSecrets(ctx, tx, f); err != nil {
			return err
		}
		data, err := jsonText(f)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE fns SET name = $2, secrets = $3, data = $4 WHERE id = $1", id, f.Name, fnSecrets(f), data)
		if isUnique(err, "fns_app_name_key") {
			return fnNameTaken(f.AppID, f.Name)
		}
		if err != nil {
			return err
		}
		out = f
		return notify(ctx, tx, "fn", id)
	})
	return out, err
}

// deleteFn deletes the fn; foreign keys take its triggers, calls and
// their logs with it.
func (p *pgStore) deleteFn(ctx context.Context, id string) error {
	return p.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM fns WHERE id = $1", id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fnNotFound(id)
		}
		return notify(ctx, tx, "fn", id)
	})
}

// pgCheckTriggerFn checks that t's fn exists and belongs to t's app, and
// keeps it until tx ends.
func pgCheckTriggerFn(ctx context.Context, tx pgx.Tx, t *Trigger) error {
	appID, err := lockFn(ctx, tx, t.FnID)
	if err != nil {
		return err
	}
	if appID != t.AppID {
		return fnOfOtherApp(t.FnID, appID, t.AppID)
	}
	return nil
}

// checkTriggerUnique reports a taken name before a taken source, as
// bbolt does (a unique violation would name whichever index Postgres
// checked first); t itself does not count. The constraints still decide
// a race between two writers.
func checkTriggerUnique(ctx context.Context, tx pgx.Tx, t *Trigger) error {
	var nameTaken, sourceTaken bool
	err := tx.QueryRow(ctx, `SELECT
		EXISTS (SELECT 1 FROM triggers WHERE app_id = $1 AND name = $2 AND id <> $4),
		$5 AND EXISTS (SELECT 1 FROM triggers WHERE app_id = $1 AND type = 'http' AND source = $3 AND id <> $4)`,
		t.AppID, t.Name, t.Source, t.ID, t.Type == TriggerHTTP).Scan(&nameTaken, &sourceTaken)
	switch {
	case err != nil:
		return err
	case nameTaken:
		return triggerNameTaken(t.AppID, t.Name)
	case sourceTaken:
		return triggerSourceTaken(t.AppID, t.Source)
	}
	return nil
}

// triggerWriteError turns a unique violation of a race into the error
// the checks would have given.
func triggerWriteError(err error, t *Trigger) error {
	switch {
	case isUnique(err, "triggers_app_name_key"):
		return triggerNameTaken(t.AppID, t.Name)
	case isUnique(err, "triggers_app_http_source_key"):
		return triggerSourceTaken(t.AppID, t.Source)
	}
	return err
}

func (p *pgStore) createTrigger(ctx context.Context, t *Trigger) error {
	data, err := jsonText(t)
	if err != nil {
		return err
	}
	return p.tx(ctx, func(tx pgx.Tx) error {
		if err := lockApp(ctx, tx, t.AppID); err != nil {
			return err
		}
		if err := pgCheckTriggerFn(ctx, tx, t); err != nil {
			return err
		}
		if err := checkTriggerUnique(ctx, tx, t); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO triggers (id, app_id, fn_id, name, type, source, data)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, t.ID, t.AppID, t.FnID, t.Name, t.Type, t.Source, data)
		if err != nil {
			return triggerWriteError(err, t)
		}
		return notify(ctx, tx, "trigger", t.ID)
	})
}

func (p *pgStore) getTrigger(ctx context.Context, id string) (t *Trigger, err error) {
	err = p.read(ctx, func(q querier) error {
		t, err = pgGet[Trigger](ctx, q, triggerNotFound(id), "SELECT data FROM triggers WHERE id = $1", id)
		return err
	})
	return t, err
}

func (p *pgStore) getTriggerBySource(ctx context.Context, appID, source string) (t *Trigger, err error) {
	err = p.read(ctx, func(q querier) error {
		t, err = pgGet[Trigger](ctx, q, triggerSourceNotFound(appID, source),
			"SELECT data FROM triggers WHERE app_id = $1 AND type = 'http' AND source = $2", appID, source)
		return err
	})
	return t, err
}

// listTriggers takes bbolt's four ways (by name in an app, by fn, by app,
// all), so cursors and their checks are the same.
func (p *pgStore) listTriggers(ctx context.Context, opts ListOptions) (ts []*Trigger, next string, err error) {
	err = p.read(ctx, func(q querier) error {
		switch {
		case opts.AppID != "" && opts.Name != "":
			ts, err = pgAll[Trigger](ctx, q, "SELECT data FROM triggers WHERE app_id = $1 AND name = $2 AND ($3 = '' OR fn_id = $3)",
				opts.AppID, opts.Name, opts.FnID)
		case opts.FnID != "":
			ts, next, err = pgPage(ctx, q, prefix(opts.FnID), opts, scanDoc[Trigger],
				`SELECT id, data FROM triggers WHERE fn_id = $1 AND ($2 = '' OR app_id = $2) AND ($3 = '' OR name = $3)
				AND id > $4 ORDER BY id LIMIT $5`, opts.FnID, opts.AppID, opts.Name)
		case opts.AppID != "":
			ts, next, err = pgPage(ctx, q, prefix(opts.AppID), opts, scanDoc[Trigger],
				"SELECT id, data FROM triggers WHERE app_id = $1 AND id > $2 ORDER BY id LIMIT $3", opts.AppID)
		default:
			ts, next, err = pgPage(ctx, q, nil, opts, scanDoc[Trigger],
				"SELECT id, data FROM triggers WHERE ($1 = '' OR name = $1) AND id > $2 ORDER BY id LIMIT $3", opts.Name)
		}
		return err
	})
	return ts, next, err
}

func (p *pgStore) listTriggersByType(ctx context.Context, typ string) (ts []*Trigger, err error) {
	err = p.read(ctx, func(q querier) error {
		ts, err = pgAll[Trigger](ctx, q, "SELECT data FROM triggers WHERE type = $1 ORDER BY id", typ)
		return err
	})
	return ts, err
}

func (p *pgStore) updateTrigger(ctx context.Context, id string, apply func(*Trigger) (*Trigger, error)) (out *Trigger, err error) {
	err = p.tx(ctx, func(tx pgx.Tx) error {
		old, err := pgGet[Trigger](ctx, tx, triggerNotFound(id), "SELECT data FROM triggers WHERE id = $1 FOR NO KEY UPDATE", id)
		if err != nil {
			return err
		}
		t, err := apply(old)
		if err != nil {
			return err
		}
		if t.FnID != old.FnID {
			if err := pgCheckTriggerFn(ctx, tx, t); err != nil {
				return err
			}
		}
		if err := checkTriggerUnique(ctx, tx, t); err != nil {
			return err
		}
		data, err := jsonText(t)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE triggers SET fn_id = $2, name = $3, type = $4, source = $5, data = $6 WHERE id = $1",
			id, t.FnID, t.Name, t.Type, t.Source, data)
		if err != nil {
			return triggerWriteError(err, t)
		}
		out = t
		return notify(ctx, tx, "trigger", id)
	})
	return out, err
}

func (p *pgStore) deleteTrigger(ctx context.Context, id string) error {
	return p.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM triggers WHERE id = $1", id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return triggerNotFound(id)
		}
		return notify(ctx, tx, "trigger", id)
	})
}
