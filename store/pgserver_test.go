package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kiln-run/kiln/internal/testservers"
)

// pgServer is a PostgreSQL server of the test's own on 127.0.0.1
// (internal/testservers), with a new database per case.
type pgServer struct {
	*testservers.Postgres
	dbs atomic.Int32
}

func startPostgres(t *testing.T) *pgServer {
	t.Helper()
	return &pgServer{Postgres: testservers.StartPostgres(t, "127.0.0.1")}
}

func freePort(t *testing.T) int { return testservers.FreePort(t, "127.0.0.1") }

// newDB creates an empty database and returns its DSN.
func (s *pgServer) newDB(t *testing.T) string {
	t.Helper()
	return s.CreateDatabase(t, fmt.Sprintf("kiln_%d", s.dbs.Add(1)))
}

// open opens a Store on dsn, closed when t ends.
func (s *pgServer) open(t *testing.T, dsn string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := OpenURL(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// sql connects to dsn for a test to look or meddle, closed when t ends.
func (s *pgServer) sql(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgListenerPID is the backend of st's listener (0 while it has none).
func pgListenerPID(st *Store) uint32 { return st.b.(*pgStore).listener.pid.Load() }
