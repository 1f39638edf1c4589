package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/errdefs"
)

func boltFixture() *fixture {
	return &fixture{open: func(t *testing.T) (*Store, func(t *testing.T) *Store) {
		path := filepath.Join(t.TempDir(), "kiln.db")
		open := func(t *testing.T) *Store {
			t.Helper()
			st, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return open(t), open
	}}
}

func TestBolt(t *testing.T) { runSuite(t, boltFixture()) }

func TestOpenLockedFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	st, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	st2, err := Open(path)
	if err == nil {
		st2.Close()
		t.Fatal("second Open of a held database succeeded")
	}
	if !strings.Contains(err.Error(), "locked") {
		t.Fatalf("err = %v, want it to say the database is locked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %v", d)
	}
}

// TestOpenURL: a path is bbolt, an unknown scheme is refused without
// echoing a password. (postgres:// is TestPostgres's.)
func TestOpenURL(t *testing.T) {
	ctx := context.Background()
	st, err := OpenURL(ctx, filepath.Join(t.TempDir(), "sub", "kiln.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.b.(*boltStore); !ok {
		t.Fatalf("a path opened %T", st.b)
	}
	if _, err := st.CreateApp(ctx, &App{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	for _, tt := range []struct{ url, contains string }{
		{"", "empty"},
		{"mysql://kiln:hunter2@db/kiln", `unknown scheme "mysql"`},
	} {
		_, err := OpenURL(ctx, tt.url, nil)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.contains) {
			t.Errorf("OpenURL(%q) = %v, want ErrInvalid mentioning %q", tt.url, err, tt.contains)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("OpenURL(%q) error shows the password: %v", tt.url, err)
		}
	}
}
