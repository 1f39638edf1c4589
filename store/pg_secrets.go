package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Secrets in Postgres: the sealed bytes as given, in a bytea.

func (p *pgStore) putSecret(ctx context.Context, in *Secret) (out *Secret, err error) {
	sealed := in.Sealed
	if sealed == nil {
		sealed = []byte{} // bbolt keeps an absent value too
	}
	err = p.tx(ctx, func(tx pgx.Tx) error {
		if err := lockApp(ctx, tx, in.AppID); err != nil {
			return err
		}
		var created time.Time
		err := tx.QueryRow(ctx, `INSERT INTO secrets (app_id, name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
			ON CONFLICT (app_id, name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = EXCLUDED.updated_at
			RETURNING created_at`, in.AppID, in.Name, sealed, in.UpdatedAt).Scan(&created)
		if err != nil {
			return err
		}
		sec := *in
		sec.CreatedAt = created.UTC()
		out = &sec
		return notify(ctx, tx, "secret", in.AppID+" "+in.Name)
	})
	return out, err
}

func (p *pgStore) getSecret(ctx context.Context, appID, name string) (out *Secret, err error) {
	err = p.read(ctx, func(q querier) error {
		sec := Secret{AppID: appID, Name: name}
		err := q.QueryRow(ctx, "SELECT sealed, created_at, updated_at FROM secrets WHERE app_id = $1 AND name = $2", appID, name).
			Scan(&sec.Sealed, &sec.CreatedAt, &sec.UpdatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return secretNotFound(appID, name)
		}
		if err != nil {
			return err
		}
		if len(sec.Sealed) == 0 {
			sec.Sealed = nil
		}
		sec.CreatedAt, sec.UpdatedAt = sec.CreatedAt.UTC(), sec.UpdatedAt.UTC()
		out = &sec
		return nil
	})
	return out, err
}

func (p *pgStore) listSecrets(ctx context.Context, appID string) (out []*Secret, err error) {
	err = p.read(ctx, func(q querier) error {
		var one int
		err := q.QueryRow(ctx, "SELECT 1 FROM apps WHERE id = $1", appID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return appNotFound(appID)
		}
		if err != nil {
			return err
		}
		rows, err := q.Query(ctx, "SELECT name, created_at, updated_at FROM secrets WHERE app_id = $1 ORDER BY name", appID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			sec := &Secret{AppID: appID}
			if err := rows.Scan(&sec.Name, &sec.CreatedAt, &sec.UpdatedAt); err != nil {
				return err
			}
			sec.CreatedAt, sec.UpdatedAt = sec.CreatedAt.UTC(), sec.UpdatedAt.UTC()
			out = append(out, sec)
		}
		return rows.Err()
	})
	return out, err
}

// deleteSecret deletes the row before it looks for fns naming the
// secret: a CreateFn or UpdateFn holding it FOR KEY SHARE makes the delete
// wait until that fn is committed, and the look that follows sees it
// (see checkFnSecrets).
func (p *pgStore) deleteSecret(ctx context.Context, appID, name string) error {
	return p.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM secrets WHERE app_id = $1 AND name = $2", appID, name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return secretNotFound(appID, name)
		}
		rows, err := tx.Query(ctx, "SELECT name FROM fns WHERE app_id = $1 AND $2 = ANY(secrets) ORDER BY id", appID, name)
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(names) > 0 {
			users := make([]string, len(names))
			for i, n := range names {
				users[i] = fmt.Sprintf("%q", n)
			}
			return secretInUse(name, users)
		}
		return notify(ctx, tx, "secret", appID+" "+name)
	})
}
