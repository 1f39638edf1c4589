package store

import (
	"strings"
	"testing"
	"time"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < 1000; i++ {
		id := newIDAt(t0.Add(time.Duration(i) * time.Millisecond))
		if len(id) != 26 {
			t.Fatalf("len(%q) = %d", id, len(id))
		}
		for _, r := range id {
			if !strings.ContainsRune(crockford, r) {
				t.Fatalf("id %q has %q outside the alphabet", id, r)
			}
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("id %q made later sorts before %q", id, prev)
		}
		prev = id
	}
	if a, b := NewID(), NewID(); a == b {
		t.Fatalf("two NewID calls gave %q", a)
	}
	// The time part is the first ten digits: equal times share them.
	if a, b := newIDAt(t0), newIDAt(t0); a[:10] != b[:10] || a == b {
		t.Fatalf("same-ms ids %q %q", a, b)
	}
	// A Store's ids increase strictly even when the clock stands still
	// or steps back.
	st := &Store{now: func() time.Time { return t0 }}
	prev = ""
	for i := 0; i < 100; i++ {
		if i == 50 {
			st.now = func() time.Time { return t0.Add(-time.Hour) }
		}
		id := st.NewID()
		if id <= prev {
			t.Fatalf("Store.NewID %q after %q", id, prev)
		}
		prev = id
	}
	var g idSource
	for i := 6; i < 16; i++ {
		g.last[i] = 0xff
	}
	g.last[5] = 1
	if got, want := g.next(time.UnixMilli(0)), encodeID([16]byte{5: 2}); got != want {
		t.Fatalf("increment with carry = %s, want %s", got, want)
	}
	var max [16]byte
	for i := range max {
		max[i] = 0xff
	}
	if got := encodeID(max); got != "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" {
		t.Fatalf("encodeID(max) = %q", got)
	}
}
