package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// AcquireLease takes or renews the lease name for holder until ttl from
// now, and reports whether holder has it: work only one node of a cluster
// must do (firing cron triggers) runs while its lease is held. A holder
// that stops renewing loses it when ttl passes; a holder renewing in time
// keeps it. On the embedded store the one kilnd that has the file open
// always holds every lease.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	return s.b.acquireLease(ctx, name, holder, ttl)
}

// A bbolt file is opened by one process at a time (bbolt locks it), so
// that process is the only node there is.
func (b *boltStore) acquireLease(context.Context, string, string, time.Duration) (bool, error) {
	return true, nil
}

// The database's clock decides expiry, so nodes with skewed clocks agree.
func (p *pgStore) acquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var got string
	err := p.read(ctx, func(q querier) error {
		return q.QueryRow(ctx, `INSERT INTO leases (name, holder, expires_at)
			VALUES ($1, $2, now() + make_interval(secs => $3))
			ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
				WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()
			RETURNING holder`, name, holder, ttl.Seconds()).Scan(&got)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // held by another, not expired
	}
	if err != nil {
		return false, err
	}
	return got == holder, nil
}
