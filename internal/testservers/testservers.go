// Package testservers starts the PostgreSQL and NATS servers that kiln's
// tests run against: each test gets servers of its own, with their data
// under a temp dir, on an address it chooses, stopped by their PIDs when
// it ends. The machine's own servers, if any, are never touched. The
// store's suite, the JetStream queue's tests and the cluster test share
// it, so the three cannot drift apart in how a server is started.
package testservers

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
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// FreePort returns a TCP port nobody listens on at host now. Another
// process may take it before the caller binds it; callers that start a
// server on it retry on a new one.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Postgres is a PostgreSQL server of the test's own: initdb into a temp
// dir, listening on one address and on a socket in that dir.
type Postgres struct {
	Dir  string
	Host string
	Port int

	cmd    *exec.Cmd
	exited chan struct{}
}

// PostgresBinDir finds the dir holding initdb and postgres: KILN_PG_BIN,
// else the newest of Debian's /usr/lib/postgresql/VERSION/bin, else PATH.
func PostgresBinDir() (string, error) {
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

// StartPostgres starts a server listening on host and stops it when t
// ends. allow lists the CIDRs, besides the server's own host, that may
// connect (trust auth: the server is the test's and holds nothing).
// Postgres refuses to run as root, so under root it runs as the postgres
// user that Debian's package creates.
func StartPostgres(t testing.TB, host string, allow ...string) *Postgres {
	t.Helper()
	bin, err := PostgresBinDir()
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
	s := &Postgres{Dir: dir, Host: host}
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
	data := filepath.Join(dir, "data")
	initdb := run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if len(allow) > 0 {
		hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, cidr := range allow {
			_, err = fmt.Fprintf(hba, "host all all %s trust\n", cidr)
		}
		hba.Close()
		if err != nil {
			t.Fatal(err)
		}
	}

	// A free port may be taken again before the server binds it: retry
	// on another.
	for attempt := 0; ; attempt++ {
		s.Port = FreePort(t, host)
		logf, err := os.Create(filepath.Join(dir, "postgres.log"))
		if err != nil {
			t.Fatal(err)
		}
		s.cmd = run("postgres", "-D", data, "-p", strconv.Itoa(s.Port), "-h", host, "-k", dir,
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
		exited, cmd := make(chan struct{}), s.cmd
		s.exited = exited
		go func() { _ = cmd.Wait(); close(exited) }()
		if err = s.waitReady(30 * time.Second); err == nil {
			break
		}
		s.Stop()
		if attempt == 2 {
			t.Fatalf("postgres did not start: %v\n%s", err, s.LogTail())
		}
	}
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Postgres) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN is the URL of database db, as the superuser.
func (s *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", s.Addr(), db)
}

// CreateDatabase creates an empty database and returns its DSN. FILE_COPY
// copies the template's files instead of logging every page: quicker,
// and the checkpoints it needs are cheap without fsync.
func (s *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" STRATEGY = FILE_COPY"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return s.DSN(name)
}

func (s *Postgres) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
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

// Stop asks the server for a fast shutdown by its PID (SIGINT: roll back,
// disconnect clients, stop) and waits; SIGKILL after 30 s.
func (s *Postgres) Stop() {
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

// LogTail is the end of the server's log, for a failing test's output.
func (s *Postgres) LogTail() string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "postgres.log"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// NATSBin finds nats-server (Debian puts it in /usr/sbin, not on every
// user's PATH).
func NATSBin() (string, error) {
	if bin, err := exec.LookPath("nats-server"); err == nil {
		return bin, nil
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server", nil
	}
	return "", errors.New("nats-server not found: scripts/install-deps.sh installs Debian's nats-server")
}

// StartNATS runs nats-server with JetStream on host, its store under a
// temp dir, and returns its nats:// URL; it is stopped by its PID when t
// ends, and its log shown if t failed.
func StartNATS(t testing.TB, host string) string {
	t.Helper()
	bin, err := NATSBin()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := FreePort(t, host)
	logf, err := os.Create(filepath.Join(dir, "nats.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-a", host, "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "js"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	logf.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "nats.log"))
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("nats-server log:\n%s", b)
		}
	})
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "nats://" + addr
		}
		select {
		case <-done:
			t.Fatalf("nats-server exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
