package pool

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestMaxLaunches(t *testing.T) {
	const callers = 20
	tests := []struct {
		name        string
		maxLaunches int
		want        int
	}{
		{"default", 0, max(4, 2*runtime.GOMAXPROCS(0))},
		{"set", 3, 3},
		{"unlimited", -1, callers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{MaxLaunches: tt.maxLaunches})
			h.l.gate = make(chan struct{})
			want := min(tt.want, callers)
			var ps []*pending
			for range callers {
				ps = append(ps, h.acquirePending(h.spec("k", 128)))
			}
			h.await("every caller waiting", func(s Stats) bool { return s.Waiting == callers })
			if s := h.p.Stats(); s.Launching != want || s.Queued != callers-want {
				t.Fatalf("%d launches under way and %d queued, want %d and %d", s.Launching, s.Queued, want, callers-want)
			}
			h.check()
			close(h.l.gate)
			for _, p := range ps {
				// Held, so the next callers need launches of their own.
				if r := p.result(); r.err != nil {
					t.Fatal(r.err)
				}
			}
			if n := int(h.l.maxRunning.Load()); n > want {
				t.Errorf("%d launches ran at once, at most %d allowed", n, want)
			}
			h.check()
		})
	}
}

// A crash-looping or bursting fn must not hold every launch slot while
// another fn waits for one.
func TestFreedLaunchSlotGoesToTheGroupWithFewestInFlight(t *testing.T) {
	h := newHarness(t, Config{MaxLaunches: 4})
	h.l.gate = make(chan struct{})
	for range 20 {
		h.acquirePending(h.spec("a", 128))
	}
	h.await("4 launches of a, 16 callers waiting for a slot", func(s Stats) bool {
		return s.Launching == 4 && s.Queued == 16
	})
	for range 4 {
		if k := h.nextStarted(); k != "a" {
			t.Fatalf("launch of %s, want a", k)
		}
	}
	h.acquirePending(h.spec("b", 128))
	h.await("b waiting for a slot", func(s Stats) bool { return s.Queued == 17 })

	h.l.gate <- struct{}{} // one of a's launches ends: a has 3 in flight, b none
	if k := h.nextStarted(); k != "b" {
		t.Fatalf("the freed slot went to %s, want b", k)
	}
	s := h.await("b's launch", func(s Stats) bool { return s.Launching == 4 })
	if a, b := groupStats(s, "", "a"), groupStats(s, "", "b"); a.Launching != 3 || a.Queued != 16 || b.Launching != 1 || b.Queued != 0 {
		t.Errorf("group stats a %+v, b %+v", a, b)
	}
	h.check()
	close(h.l.gate)
	h.settle()
	h.check()
}

func TestLaunchSlotTiesGoToTheOldestWaiter(t *testing.T) {
	h := newHarness(t, Config{MaxLaunches: 1})
	h.l.gate = make(chan struct{})
	h.acquirePending(h.spec("a", 128))
	h.nextStarted()
	for i, key := range []string{"b", "c", "a"} {
		h.acquirePending(h.spec(key, 128))
		h.await(key+" queued", func(s Stats) bool { return s.Queued == i+1 })
	}
	// Each time a launch ends, every group has none in flight.
	for _, want := range []string{"b", "c", "a"} {
		h.l.gate <- struct{}{}
		if k := h.nextStarted(); k != want {
			t.Fatalf("launch of %s, want %s", k, want)
		}
	}
	close(h.l.gate)
	h.settle()
	h.check()
}

// Memory that frees goes to the group holding the least, not to whoever
// queued first; memory of instances being closed counts.
func TestFreedMemoryGoesToTheGroupHoldingLeast(t *testing.T) {
	tests := []struct {
		name string
		// hold fills the pool's 300 MB, 200 MB or more of it with
		// "bad" instances, and returns how to free 100 MB.
		hold func(h *harness) (free100 func())
	}{
		{
			name: "its broken instances hang in Close",
			hold: func(h *harness) func() {
				var unblock []func()
				for range 3 {
					l := h.acquire(h.spec("bad", 100))
					unblock = append(unblock, h.blockClose(l.Instance()))
					l.Discard()
				}
				s := h.await("bad's instances closing", func(s Stats) bool { return s.Closing == 3 })
				// Its keys are forgotten, but the memory stays its.
				if g := groupStats(s, "", "bad"); g.MemoryMB != 300 || g.Closing != 3 || s.UsedMB != 300 || len(s.Keys) != 0 {
					h.t.Errorf("while bad's instances close: %+v, group %+v", s, g)
				}
				return unblock[0]
			},
		},
		{
			name: "its instances are busy",
			hold: func(h *harness) func() {
				h.acquire(h.spec("bad", 100))
				h.acquire(h.spec("bad", 100))
				return h.acquire(h.spec("other", 100)).Release
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{CapacityMB: 300})
			free100 := tt.hold(h)
			for len(h.l.started) > 0 {
				<-h.l.started
			}
			h.acquirePending(h.spec("bad", 100))
			h.await("bad queued", func(s Stats) bool { return s.Queued == 1 })
			good := h.acquirePending(h.spec("good", 100))
			h.await("good queued", func(s Stats) bool { return s.Queued == 2 })
			h.check()

			free100()
			if k := h.nextStarted(); k != "good" {
				t.Fatalf("the freed memory went to %s, want good", k)
			}
			if r := good.result(); r.err != nil {
				t.Fatal(r.err)
			}
			if s := h.p.Stats(); groupStats(s, "", "bad").Queued != 1 {
				t.Errorf("bad's caller not queued any more: %+v", s)
			}
			h.check()
		})
	}
}

func TestClosingMemoryStaysChargedToItsGroup(t *testing.T) {
	t.Run("until Close returns", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := h.spec("k", 128)
		spec.Group = "g"
		l := h.acquire(spec)
		unblock := h.blockClose(l.Instance())
		l.Discard()
		s := h.await("the close", func(s Stats) bool { return s.Closing == 1 })
		if g := groupStats(s, "g", ""); g.MemoryMB != 128 || g.Closing != 1 {
			t.Errorf("while closing: group %+v", g)
		}
		unblock()
		h.awaitClosed(l.Instance())
		if s := h.p.Stats(); len(s.Groups) != 0 || s.UsedMB != 0 {
			t.Errorf("after the close: %+v", s)
		}
		h.check()
	})
	t.Run("but for what an eviction hands to a launch", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 300})
		big := h.acquire(h.spec("big", 200))
		small := h.acquire(h.spec("small", 100))
		big.Release()
		small.Release()
		unblock := h.blockClose(big.Instance())
		p := h.acquirePending(h.spec("new", 100))
		s := h.await("big evicted for new", func(s Stats) bool { return s.Closing == 1 && s.Launching == 1 })
		if g := groupStats(s, "", "big"); g.MemoryMB != 100 {
			t.Errorf("evicted group holds %d MB, want the 100 new did not need", g.MemoryMB)
		}
		if g := groupStats(s, "", "new"); g.MemoryMB != 100 {
			t.Errorf("launching group holds %d MB, want 100", g.MemoryMB)
		}
		unblock()
		if r := p.result(); r.err != nil {
			t.Fatal(r.err)
		}
		h.awaitClosed(big.Instance())
		if g := groupStats(h.p.Stats(), "", "big"); g.MemoryMB != 0 {
			t.Errorf("after the close: %+v", g)
		}
		h.check()
	})
}

// Slots only go to waiters that memory order admits, so a small fn first in
// slot order cannot take memory a bigger one ahead of it in memory order
// waits for.
func TestLaunchSlotsGoOnlyWhereMemoryOrderAdmits(t *testing.T) {
	// When a slot frees, 900 MB are held: x has a launch in flight (100
	// MB), y holds 300 MB, z 400 MB, w 100 MB. Memory order: x, y, z.
	// Slot order: z (no launches, oldest waiter), y, x.
	tests := []struct {
		name       string
		capacityMB int64
		want       string
	}{
		{"room for x only: y blocks z", 1100, "x"},
		{"room for x and y", 1300, "y"},
		{"room for everyone", 1400, "z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{CapacityMB: tt.capacityMB, MaxLaunches: 2})
			for range 4 {
				h.acquire(h.spec("z", 100))
			}
			h.acquire(h.spec("y", 300))
			for range 5 {
				h.nextStarted()
			}
			h.l.keyGate("x")
			wGate := h.l.keyGate("w")
			h.acquirePending(h.spec("x", 100))
			h.acquirePending(h.spec("w", 100))
			h.nextStarted()
			h.nextStarted()
			for i, key := range []string{"z", "y", "x"} {
				h.acquirePending(h.spec(key, map[string]int64{"x": 100, "y": 300, "z": 100}[key]))
				h.await(key+" queued", func(s Stats) bool { return s.Queued == i+1 })
			}
			h.check()

			wGate <- struct{}{}
			if k := h.nextStarted(); k != tt.want {
				t.Fatalf("the freed slot went to %s, want %s", k, tt.want)
			}
			h.check()
		})
	}
}

// A fn whose calls pile up cannot fill the queue for everyone: each group
// with queued calls gets max(1, MaxQueue/G) of it.
func TestQueueShare(t *testing.T) {
	type step struct {
		key     string
		refused bool
	}
	tests := []struct {
		name     string
		maxQueue int
		steps    []step
	}{
		{"over its share though the queue has room", 4, []step{
			{"a", false}, {"a", false}, {"b", false}, {"a", true}, {"b", false}, {"b", true},
		}},
		{"within its share though the queue is full", 4, []step{
			{"a", false}, {"a", false}, {"a", false}, {"a", false},
			{"b", false}, {"b", false}, {"b", true}, {"a", true},
		}},
		{"more groups than MaxQueue", 2, []step{
			{"a", false}, {"b", false}, {"c", false}, {"a", true}, {"c", true},
		}},
		{"no queueing", -1, []step{{"a", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{CapacityMB: 100, MaxQueue: tt.maxQueue})
			h.acquire(h.spec("hold", 100))
			n := 0
			for i, st := range tt.steps {
				if st.refused {
					ctx, cancel := context.WithTimeout(context.Background(), wait)
					_, err := h.p.Acquire(ctx, h.spec(st.key, 100))
					cancel()
					if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "share") {
						t.Fatalf("step %d: %s's call got %v, want refused as over its share", i, st.key, err)
					}
					continue
				}
				h.acquirePending(h.spec(st.key, 100))
				n++
				h.await(st.key+" queued", func(s Stats) bool { return s.Queued == n })
			}
			h.check()
		})
	}
}

func TestDeadOnArrival(t *testing.T) {
	errOOM := errors.New("killed for memory")
	tests := []struct {
		name string
		err  error // the instance's Err
		want error
	}{
		{"its Err says why", errOOM, errOOM},
		{"its Err does not", nil, ErrExited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			h.l.exitEarly = func(n int) bool { return n == 1 }
			h.l.exitErr = tt.err
			_, err := h.p.Acquire(context.Background(), h.spec("k", 128))
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if want := `launching an instance of fn "k": `; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start %q", err, want)
			}
			h.acquire(h.spec("k", 128)).Release()
			h.check()
		})
	}
}
