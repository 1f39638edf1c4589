package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgServer is a PostgreSQL server of the test's own: initdb into a temp
// dir, listening on 127.0.0.1 on a free port and on a socket in that dir,
// never the machine's own cluster. It needs Debian's postgresql package
// (the server binaries under /usr/lib/postgresql/VERSION/bin; KILN_PG_BIN
// names another dir). Postgres refuses to run as root, so under root it
// runs as the postgres user that package creates.
type pgServer struct {
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
	dbs    atomic.Int32

	mu    sync.Mutex
	admin *pgx.Conn // the superuser on the postgres database
}

// pgBinDir finds the dir holding initdb and postgres.
func pgBinDir() (string, error) {
	if dir := os.Getenv("KILN_PG_BIN"); dir != "" {
		for _, name := range []string{"initdb", "postgres"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return "", fmt.Errorf("KILN_PG_BIN=%s: no %s there: %w", dir, name, err)
			}
		}
		return dir, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(found, func(i, j int) bool { return pgVersion(found[i]) > pgVersion(found[j]) })
	for _, p := range found {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "initdb")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or on PATH: " +
		"install Debian's postgresql package (apt-get install -y postgresql, as scripts/install-deps.sh does) " +
		"or set KILN_PG_BIN; go test -short skips the Postgres tests")
}

func pgVersion(path string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(path))))
	return v
}

// startPostgres starts the server and stops it (by its PID) when t ends.
func startPostgres(t *testing.T) *pgServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and PostgreSQL will not: no postgres user to run it as (%v); Debian's postgresql package creates one", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir: its parents are private to root, and the server's
	// user must reach this dir.
	dir, err := os.MkdirTemp("", "kiln-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	s := &pgServer{dir: dir}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		// Each stays in a process group of its own (away from a ^C meant
		// for go test) and dies with the test binary (Pdeathsig: Go sets
		// it after changing credentials, which would clear it).
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
		return cmd
	}
	initdb := run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}

	// A free port may be taken again before the server binds it: retry
	// on another.
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		logf, err := os.Create(filepath.Join(dir, "postgres.log"))
		if err != nil {
			t.Fatal(err)
		}
		s.cmd = run("postgres", "-D", s.data(), "-p", strconv.Itoa(s.port), "-h", "127.0.0.1", "-k", dir,
			// A throwaway cluster: durability buys nothing.
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "max_connections=200")
		// SIGQUIT, the immediate shutdown, takes the server's backends
		// down with it.
		s.cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		if err := s.cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("start postgres: %v", err)
		}
		logf.Close()
		s.exited = make(chan struct{})
		go func() { s.cmd.Wait(); close(s.exited) }()
		err = s.waitReady(30 * time.Second)
		if err == nil {
			break
		}
		s.stop()
		if attempt == 2 {
			t.Fatalf("postgres did not start: %v\n%s", err, s.logTail())
		}
	}
	t.Cleanup(s.stop)
	if s.admin, err = pgx.Connect(context.Background(), s.dsn("postgres")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.admin.Close(context.Background()) })
	return s
}

func (s *pgServer) data() string { return filepath.Join(s.dir, "data") }

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *pgServer) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

func (s *pgServer) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.dsn("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited: %v", s.cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, err)
		}
	}
}

// stop asks the server for a fast shutdown (SIGINT: roll back, disconnect
// clients, stop) and waits; SIGKILL after 30 s.
func (s *pgServer) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *pgServer) logTail() string {
	data, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// newDB creates an empty database and returns its DSN. FILE_COPY
// copies the template's files instead of logging every page: quicker,
// and the checkpoints it needs are cheap without fsync.
func (s *pgServer) newDB(t *testing.T) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	name := fmt.Sprintf("kiln_%d", s.dbs.Add(1))
	if _, err := s.admin.Exec(context.Background(), "CREATE DATABASE "+name+" STRATEGY = FILE_COPY"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return s.dsn(name)
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
