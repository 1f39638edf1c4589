package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

func TestReuseIsLIFO(t *testing.T) {
	h := newHarness(t, Config{})
	spec := h.spec("k", 128)
	a, b, c := h.acquire(spec), h.acquire(spec), h.acquire(spec)
	for _, l := range []*Lease[*fakeInst]{a, b, c} {
		l.Release()
		h.clock.Advance(time.Second)
	}
	// The most recently used comes back first, so the others can age out.
	for _, want := range []*fakeInst{c.Instance(), b.Instance(), a.Instance()} {
		l := h.acquire(spec)
		if got := l.Instance(); got != want {
			t.Fatalf("got %v, want %v", got, want)
		}
		defer l.Release()
	}
	if n := h.l.launches.Load(); n != 3 {
		t.Errorf("%d launches, want 3", n)
	}
	h.check()
}

func TestConcurrentAcquiresStayWithinCapacity(t *testing.T) {
	const callers, rounds, mb = 64, 5, 128
	h := newHarness(t, Config{CapacityMB: 8 * mb})
	spec := h.spec("k", mb)
	var wg sync.WaitGroup
	errs := make(chan error, callers*rounds)
	for range callers {
		wg.Go(func() {
			for range rounds {
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				l, err := h.p.Acquire(ctx, spec)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				f := l.Instance()
				if !f.inUse.CompareAndSwap(false, true) {
					errs <- fmt.Errorf("instance %v handed to two callers at once", f)
				}
				runtime.Gosched()
				f.inUse.Store(false)
				l.Release()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := h.l.maxLive.Load(); n > 8 {
		t.Errorf("%d instances alive at once, capacity is 8", n)
	}
	if n := h.l.launches.Load(); n > 8 {
		t.Errorf("%d launches for one key with room for 8", n)
	}
	s := h.p.Stats()
	if s.Waiting != 0 || s.Busy != 0 || s.UsedMB > 8*mb {
		t.Errorf("stats after all calls: %+v", s)
	}
	h.check()
}

func TestColdBurstLaunchesOnlyWhatIsNeeded(t *testing.T) {
	tests := []struct {
		name       string
		capacityMB int64
		callers    int
		want       int
	}{
		{"capacity for fewer than the callers", 8 * 128, 50, 8},
		{"unlimited capacity", 0, 20, 20},
		{"room for more than the callers", 8 * 128, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Launch slots are not what this is about.
			h := newHarness(t, Config{CapacityMB: tt.capacityMB, MaxLaunches: -1})
			h.l.gate = make(chan struct{})
			spec := h.spec("k", 128)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			errs := make(chan error, tt.callers)
			for range tt.callers {
				go func() {
					l, err := h.p.Acquire(ctx, spec)
					if err == nil {
						l.Release()
					}
					errs <- err
				}()
			}
			h.await("every caller waiting", func(s Stats) bool { return s.Waiting == tt.callers })
			if s := h.p.Stats(); s.Launching != tt.want {
				t.Fatalf("%d launches under way for %d callers, want %d", s.Launching, tt.callers, tt.want)
			}
			close(h.l.gate)
			for range tt.callers {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			// Callers may be served by others' instances before every
			// launch is done; the ones left go idle.
			h.await("launches to finish", func(s Stats) bool { return s.Launching == 0 })
			if n := int(h.l.launches.Load()); n != tt.want {
				t.Errorf("%d launches, want %d", n, tt.want)
			}
			h.check()
		})
	}
}

func TestReleaseHandsOffToWaiter(t *testing.T) {
	t.Run("waiting for memory", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 128})
		spec := h.spec("k", 128)
		a := h.acquire(spec)
		ch := h.acquireAsync(context.Background(), spec)
		h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
		a.Release()
		r := h.result(ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Instance() != a.Instance() {
			t.Errorf("waiter got %v, want the released %v", r.l.Instance(), a.Instance())
		}
		h.mu.Lock()
		for _, c := range h.changed {
			if c.Idle != 0 {
				t.Errorf("instance went through idle: %+v", c)
			}
		}
		if h.waits != 2 { // the launch for a, the hand-off for the waiter
			t.Errorf("QueueWait reported %d times, want 2", h.waits)
		}
		h.mu.Unlock()
		r.l.Release()
		h.check()
	})
	t.Run("waiting for its own launch", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := h.spec("k", 128)
		a := h.acquire(spec)
		h.nextStarted()
		h.l.gate = make(chan struct{})
		ch := h.acquireAsync(context.Background(), spec)
		h.nextStarted()
		a.Release()
		r := h.result(ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Instance() != a.Instance() {
			t.Errorf("waiter got %v, want the released %v", r.l.Instance(), a.Instance())
		}
		// The launch nobody needs any more finishes and goes idle.
		close(h.l.gate)
		h.await("the orphan launch to go idle", func(s Stats) bool {
			return keyStats(s, "k").Idle == 1 && s.Launching == 0
		})
		r.l.Release()
		if n := h.l.launches.Load(); n != 2 {
			t.Errorf("%d launches, want 2", n)
		}
		h.check()
	})
}

func TestAcquireErrors(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		setup func(h *harness) // leaves the pool so that the next Acquire of "k" has to queue
		run   func(h *harness) error
		want  error
		msg   string
	}{
		{
			name:  "deadline passes while queued",
			cfg:   Config{CapacityMB: 128},
			setup: holdOne,
			run: func(h *harness) error {
				ctx := newExpiringCtx()
				ch := h.acquireAsync(ctx, h.spec("k", 128))
				h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
				ctx.end(context.DeadlineExceeded)
				return h.result(ch).err
			},
			want: ErrNoCapacity,
			msg:  `no instance for fn "k" became free before the deadline`,
		},
		{
			name:  "deadline passes while its launch runs",
			cfg:   Config{},
			setup: func(h *harness) { h.l.gate = make(chan struct{}) },
			run: func(h *harness) error {
				ctx := newExpiringCtx()
				ch := h.acquireAsync(ctx, h.spec("k", 128))
				h.nextStarted()
				ctx.end(context.DeadlineExceeded)
				return h.result(ch).err
			},
			want: ErrNoCapacity,
		},
		{
			name:  "caller cancels while queued",
			cfg:   Config{CapacityMB: 128},
			setup: holdOne,
			run: func(h *harness) error {
				ctx := newExpiringCtx()
				ch := h.acquireAsync(ctx, h.spec("k", 128))
				h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
				ctx.end(context.Canceled)
				return h.result(ch).err
			},
			want: context.Canceled,
		},
		{
			name:  "queue full",
			cfg:   Config{CapacityMB: 128, MaxQueue: 1},
			setup: holdOne,
			run: func(h *harness) error {
				ctx := newExpiringCtx()
				ch := h.acquireAsync(ctx, h.spec("k", 128))
				h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
				_, err := h.p.Acquire(context.Background(), h.spec("k", 128))
				ctx.end(context.Canceled)
				h.result(ch)
				return err
			},
			want: ErrNoCapacity,
			msg:  "queued",
		},
		{
			name:  "no queueing at all",
			cfg:   Config{CapacityMB: 128, MaxQueue: -1},
			setup: holdOne,
			run: func(h *harness) error {
				_, err := h.p.Acquire(context.Background(), h.spec("k", 128))
				return err
			},
			want: ErrNoCapacity,
		},
		{
			name: "fn bigger than the pool",
			cfg:  Config{CapacityMB: 128},
			run: func(h *harness) error {
				_, err := h.p.Acquire(context.Background(), h.spec("k", 256))
				return err
			},
			want: ErrNoCapacity,
			msg:  "256 MB",
		},
		{
			name: "ctx already past its deadline",
			run: func(h *harness) error {
				ctx := newExpiringCtx()
				ctx.end(context.DeadlineExceeded)
				_, err := h.p.Acquire(ctx, h.spec("k", 128))
				return err
			},
			want: ErrNoCapacity,
		},
		{
			name: "pool closed",
			run: func(h *harness) error {
				if err := h.p.Close(context.Background()); err != nil {
					return err
				}
				_, err := h.p.Acquire(context.Background(), h.spec("k", 128))
				return err
			},
			want: ErrClosed,
		},
		{
			name: "spec without Launch",
			run: func(h *harness) error {
				spec := h.spec("k", 128)
				spec.Launch = nil
				_, err := h.p.Acquire(context.Background(), spec)
				if err == nil {
					return nil
				}
				return errBoom
			},
			want: errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			if tt.setup != nil {
				tt.setup(h)
			}
			err := tt.run(h)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			h.check()
		})
	}
}

// holdOne leases the only instance the pool has room for, until shutdown.
func holdOne(h *harness) {
	l := h.acquire(h.spec("k", 128))
	h.t.Cleanup(l.Release) // runs before the harness closes the pool
}

func TestEvictsIdleOfOtherKeysLeastRecentlyUsedFirst(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 200})
	a, b := h.acquire(h.spec("a", 100)), h.acquire(h.spec("b", 100))
	a.Release()
	h.clock.Advance(time.Second)
	b.Release()

	c := h.acquire(h.spec("c", 100))
	h.awaitClosed(a.Instance())
	if b.Instance().closes.Load() != 0 {
		t.Errorf("evicted %v, the more recently used one", b.Instance())
	}
	c.Release()
	h.clock.Advance(time.Second)

	// b is now the least recently used of b and c.
	d := h.acquire(h.spec("d", 100))
	h.awaitClosed(b.Instance())
	if c.Instance().closes.Load() != 0 {
		t.Errorf("evicted %v, the more recently used one", c.Instance())
	}
	d.Release()
	h.mu.Lock()
	if got := strings.Join(h.evicted, ","); got != "a,b" {
		t.Errorf("Evicted hook saw %q, want a,b", got)
	}
	h.mu.Unlock()
	h.check()
}

func TestEvictionFreesOnlyWhatIsNeeded(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 300})
	big := h.acquire(h.spec("big", 200))
	small := h.acquire(h.spec("small", 100))
	big.Release()
	small.Release()
	// 100 MB for "new" needs only big gone; the 100 MB it leaves over
	// stay held until big's Close returns.
	release := make(chan struct{})
	big.Instance().closeFn = func(context.Context) error { <-release; return nil }
	ch := h.acquireAsync(context.Background(), h.spec("new", 100))
	h.await("big to be evicted", func(s Stats) bool { return s.Closing == 1 && s.Launching == 1 })
	if s := h.p.Stats(); s.UsedMB != 300 {
		t.Errorf("UsedMB %d while big closes, want 300", s.UsedMB)
	}
	close(release)
	r := h.result(ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	h.await("big's memory back", func(s Stats) bool { return s.UsedMB == 200 })
	if small.Instance().closes.Load() != 0 {
		t.Error("evicted more than needed")
	}
	r.l.Release()
	h.check()
}

func TestEvictedInstanceIsGoneBeforeTheLaunch(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 100})
	a := h.acquire(h.spec("a", 100))
	h.nextStarted()
	entered, release := make(chan struct{}), make(chan struct{})
	a.Instance().closeFn = func(context.Context) error {
		close(entered)
		<-release
		return nil
	}
	a.Release()
	ch := h.acquireAsync(context.Background(), h.spec("b", 100))
	<-entered
	select {
	case k := <-h.l.started:
		t.Fatalf("launch of %s began while the evicted instance was still closing", k)
	default:
	}
	close(release)
	r := h.result(ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.l.Release()
	if n := h.l.maxMB.Load(); n > 100 {
		t.Errorf("%d MB alive at once, capacity is 100", n)
	}
}

func TestNoEvictionWhenItCannotMakeRoom(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 200})
	busy := h.acquire(h.spec("busy", 100))
	idle := h.acquire(h.spec("idle", 100))
	idle.Release()
	// 200 MB cannot fit even with idle gone: keep it and queue.
	ctx := newExpiringCtx()
	ch := h.acquireAsync(ctx, h.spec("big", 200))
	h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
	if idle.Instance().closes.Load() != 0 {
		t.Error("evicted an instance without making enough room")
	}
	// Once busy is back, and idle, evicting both makes room.
	busy.Release()
	r := h.result(ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	h.awaitClosed(idle.Instance())
	h.awaitClosed(busy.Instance())
	r.l.Release()
	h.check()
}

func TestIdleReaping(t *testing.T) {
	h := newHarness(t, Config{})
	spec := h.spec("k", 128) // IdleTimeout 30s
	a, b := h.acquire(spec), h.acquire(spec)
	a.Release() // t=0
	h.clock.Advance(10 * time.Second)
	b.Release() // t=10

	h.clock.Advance(19 * time.Second) // t=29
	if s := keyStats(h.p.Stats(), "k"); s.Idle != 2 {
		t.Fatalf("at 29s: %+v, want 2 idle", s)
	}
	h.clock.Advance(time.Second) // t=30
	h.awaitClosed(a.Instance())
	if b.Instance().closes.Load() != 0 {
		t.Fatal("reaped the younger instance too")
	}

	// Using it resets its idle time.
	h.clock.Advance(5 * time.Second) // t=35
	l := h.acquire(spec)
	l.Release()
	h.clock.Advance(29 * time.Second) // t=64
	if b.Instance().closes.Load() != 0 {
		t.Fatal("reaped an instance used 29s ago")
	}
	h.clock.Advance(time.Second) // t=65
	h.awaitClosed(b.Instance())
	if s := h.p.Stats(); s.UsedMB != 0 || len(s.Keys) != 0 {
		t.Errorf("after reaping everything: %+v", s)
	}
	if n := h.clock.pending(); n != 0 {
		t.Errorf("%d timers left with nothing idle", n)
	}
	h.check()
}

func TestIdleReapingPerKeyTimeout(t *testing.T) {
	h := newHarness(t, Config{})
	short, long := h.spec("short", 10), h.spec("long", 10)
	short.IdleTimeout, long.IdleTimeout = 5*time.Second, time.Minute
	l := h.acquire(long)
	l.Release()
	s := h.acquire(short)
	s.Release()
	h.clock.Advance(5 * time.Second)
	h.awaitClosed(s.Instance())
	if l.Instance().closes.Load() != 0 {
		t.Fatal("reaped the key with the longer timeout")
	}
	h.clock.Advance(55 * time.Second)
	h.awaitClosed(l.Instance())
}

func TestDoneInstances(t *testing.T) {
	t.Run("while idle it is removed", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 128})
		l := h.acquire(h.spec("k", 128))
		l.Release()
		l.Instance().exit()
		h.awaitClosed(l.Instance())
		h.await("its memory back", func(s Stats) bool { return s.UsedMB == 0 && len(s.Keys) == 0 })
		h.check()
	})
	t.Run("while busy it is closed on release", func(t *testing.T) {
		h := newHarness(t, Config{})
		l := h.acquire(h.spec("k", 128))
		l.Instance().exit()
		l.Release()
		h.awaitClosed(l.Instance())
		if n := h.acquire(h.spec("k", 128)); n.Instance() == l.Instance() {
			t.Fatal("reused a dead instance")
		} else {
			n.Release()
		}
		h.check()
	})
	t.Run("dead idle one is skipped by Acquire", func(t *testing.T) {
		h := newHarness(t, Config{})
		l := h.acquire(h.spec("k", 128))
		l.Release()
		l.Instance().exit()
		// Whether the watcher or Acquire notices first, the dead one
		// is never handed out.
		n := h.acquire(h.spec("k", 128))
		if n.Instance() == l.Instance() {
			t.Fatal("got a dead instance")
		}
		n.Release()
		h.awaitClosed(l.Instance())
		h.check()
	})
	// Dead on arrival: see TestDeadOnArrival.
}

func TestDiscardFreesMemoryAndWakesWaiter(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 128})
	spec := h.spec("k", 128)
	a := h.acquire(spec)
	ch := h.acquireAsync(context.Background(), spec)
	h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
	a.Discard()
	r := h.result(ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.l.Instance() == a.Instance() {
		t.Fatal("discarded instance was reused")
	}
	h.awaitClosed(a.Instance())
	if s := h.p.Stats(); s.UsedMB != 128 {
		t.Errorf("UsedMB %d, want 128", s.UsedMB)
	}
	r.l.Release()
	h.check()
}

func TestFailedLaunch(t *testing.T) {
	t.Run("error to its caller, memory freed", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 128})
		h.l.fail = func(n int) error {
			if n == 1 {
				return errBoom
			}
			return nil
		}
		_, err := h.p.Acquire(context.Background(), h.spec("k", 128))
		if !errors.Is(err, errBoom) {
			t.Fatalf("got %v, want %v", err, errBoom)
		}
		if s := h.p.Stats(); s.UsedMB != 0 || len(s.Keys) != 0 {
			t.Errorf("after a failed launch: %+v", s)
		}
		h.acquire(h.spec("k", 128)).Release()
		h.mu.Lock()
		if len(h.launched) != 2 || !errors.Is(h.launched[0], errBoom) || h.launched[1] != nil {
			t.Errorf("Launched hook saw %v", h.launched)
		}
		h.mu.Unlock()
		h.check()
	})
	t.Run("others keep waiting and launch again", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 128})
		h.l.gate = make(chan struct{})
		h.l.fail = func(n int) error {
			if n == 1 {
				return errBoom
			}
			return nil
		}
		spec := h.spec("k", 128)
		first := h.acquireAsync(context.Background(), spec)
		h.nextStarted()
		second := h.acquireAsync(context.Background(), spec)
		h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
		h.l.gate <- struct{}{}
		if r := h.result(first); !errors.Is(r.err, errBoom) {
			t.Fatalf("caller of the failed launch got %v", r.err)
		}
		h.nextStarted()
		h.l.gate <- struct{}{}
		r := h.result(second)
		if r.err != nil {
			t.Fatal(r.err)
		}
		r.l.Release()
		h.check()
	})
}

func TestCallerGivesUpWhileLaunching(t *testing.T) {
	t.Run("instance ends idle", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.l.gate = make(chan struct{})
		spec := h.spec("k", 128)
		ctx := newExpiringCtx()
		ch := h.acquireAsync(ctx, spec)
		h.nextStarted()
		ctx.end(context.Canceled)
		if r := h.result(ch); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", r.err)
		}
		close(h.l.gate)
		h.await("the launched instance idle", func(s Stats) bool { return keyStats(s, "k").Idle == 1 })
		h.acquire(spec).Release()
		if n := h.l.launches.Load(); n != 1 {
			t.Errorf("%d launches, want 1", n)
		}
		h.check()
	})
	t.Run("launch goes to the next waiter", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 128})
		h.l.gate = make(chan struct{})
		spec := h.spec("k", 128)
		ctx := newExpiringCtx()
		first := h.acquireAsync(ctx, spec)
		h.nextStarted()
		second := h.acquireAsync(context.Background(), spec)
		h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
		ctx.end(context.Canceled)
		h.result(first)
		h.await("the launch to pass on", func(s Stats) bool { return s.Queued == 0 && s.Waiting == 1 })
		close(h.l.gate)
		r := h.result(second)
		if r.err != nil {
			t.Fatal(r.err)
		}
		r.l.Release()
		if n := h.l.launches.Load(); n != 1 {
			t.Errorf("%d launches, want 1", n)
		}
		h.check()
	})
	t.Run("a new caller adopts the orphan launch", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.l.gate = make(chan struct{})
		spec := h.spec("k", 128)
		ctx := newExpiringCtx()
		first := h.acquireAsync(ctx, spec)
		h.nextStarted()
		ctx.end(context.Canceled)
		h.result(first)
		second := h.acquireAsync(context.Background(), spec)
		h.await("the second caller", func(s Stats) bool { return s.Waiting == 1 })
		if s := h.p.Stats(); s.Launching != 1 {
			t.Fatalf("%d launches, want the first one only", s.Launching)
		}
		close(h.l.gate)
		r := h.result(second)
		if r.err != nil {
			t.Fatal(r.err)
		}
		r.l.Release()
		if n := h.l.launches.Load(); n != 1 {
			t.Errorf("%d launches, want 1", n)
		}
	})
}

func TestDrain(t *testing.T) {
	tests := []struct {
		name  string
		drain func(h *harness)
	}{
		{"Drain", func(h *harness) { h.p.Drain("g") }},
		{"new key for the group", func(h *harness) {
			l := h.acquire(grouped(h, "k2"))
			l.Release()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			busy, idle := h.acquire(grouped(h, "k1")), h.acquire(grouped(h, "k1"))
			idle.Release()
			tt.drain(h)
			h.awaitClosed(idle.Instance())
			if busy.Instance().closes.Load() != 0 {
				t.Fatal("closed a busy instance")
			}
			busy.Release()
			h.awaitClosed(busy.Instance())
			l := h.acquire(grouped(h, "k1"))
			if f := l.Instance(); f == busy.Instance() || f == idle.Instance() {
				t.Fatal("reused a drained instance")
			}
			l.Release()
			h.check()
		})
	}
	t.Run("callers already waiting are still served", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 128})
		a := h.acquire(grouped(h, "k1"))
		ch := h.acquireAsync(context.Background(), grouped(h, "k1"))
		h.await("a queued caller", func(s Stats) bool { return s.Queued == 1 })
		h.p.Drain("g")
		a.Release()
		r := h.result(ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Instance() != a.Instance() {
			t.Fatal("waiter of the drained key did not get its instance")
		}
		r.l.Release()
		h.awaitClosed(a.Instance())
		h.check()
	})
}

func grouped(h *harness, key string) Spec[*fakeInst] {
	s := h.spec(key, 128)
	s.Group, s.Fn = "g", "fn"
	return s
}

func TestClose(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newHarness(t, Config{})
	busy := h.acquire(h.spec("busy", 128))
	idle := h.acquire(h.spec("idle", 128))
	idle.Release()
	h.l.gate = make(chan struct{})
	waiting := h.acquireAsync(context.Background(), h.spec("new", 128))
	h.nextStarted()

	closed := make(chan error, 1)
	go func() { closed <- h.p.Close(context.Background()) }()

	if r := h.result(waiting); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("waiting caller got %v, want ErrClosed", r.err)
	}
	h.awaitClosed(idle.Instance())
	h.await("the launch cancelled", func(s Stats) bool { return s.Launching == 0 })
	if _, err := h.p.Acquire(context.Background(), h.spec("idle", 128)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire during Close: %v, want ErrClosed", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a lease still out", err)
	default:
	}
	if busy.Instance().closes.Load() != 0 {
		t.Fatal("closed a busy instance")
	}

	busy.Release()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return after the last lease")
	}
	for _, f := range h.l.all() {
		if f.closes.Load() != 1 {
			t.Errorf("%v closed %d times", f, f.closes.Load())
		}
	}
	if err := h.p.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	h.check()
	awaitGoroutines(t, before)
}

func TestCloseGivesUpOnLeases(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newHarness(t, Config{})
	l := h.acquire(h.spec("k", 128))
	ctx := newExpiringCtx()
	ctx.end(context.DeadlineExceeded)
	err := h.p.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v, want DeadlineExceeded", err)
	}
	if n := l.Instance().closes.Load(); n != 1 {
		t.Fatalf("busy instance closed %d times, want 1", n)
	}
	l.Release() // must be harmless now
	l.Discard()
	awaitGoroutines(t, before)
}

func TestCloseCancelsLaunches(t *testing.T) {
	h := newHarness(t, Config{})
	h.l.gate = make(chan struct{})
	ch := h.acquireAsync(context.Background(), h.spec("k", 128))
	h.nextStarted()
	if err := h.p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := h.result(ch); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", r.err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.launched) != 1 || !errors.Is(h.launched[0], context.Canceled) {
		t.Errorf("launch ended with %v, want context.Canceled", h.launched)
	}
}

func TestCloseFailsQueuedCallers(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 128})
	l := h.acquire(h.spec("k", 128))
	queued := []<-chan acquired{
		h.acquireAsync(context.Background(), h.spec("k", 128)),
		h.acquireAsync(context.Background(), h.spec("other", 128)),
	}
	h.await("two queued callers", func(s Stats) bool { return s.Queued == 2 })
	closed := make(chan error, 1)
	go func() { closed <- h.p.Close(context.Background()) }()
	for _, ch := range queued {
		if r := h.result(ch); !errors.Is(r.err, ErrClosed) {
			t.Fatalf("queued caller got %v, want ErrClosed", r.err)
		}
	}
	l.Release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if n := h.l.launches.Load(); n != 1 {
		t.Errorf("%d launches, want 1", n)
	}
}

// awaitGoroutines polls, since goroutines that are done may take a moment
// to be gone from the count.
func awaitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLeaseEndsOnce(t *testing.T) {
	tests := []struct {
		name       string
		calls      []func(*Lease[*fakeInst])
		wantCloses int32
		wantIdle   int
		wantMB     int64
	}{
		{"release twice", []func(*Lease[*fakeInst]){(*Lease[*fakeInst]).Release, (*Lease[*fakeInst]).Release}, 0, 1, 128},
		{"release then discard", []func(*Lease[*fakeInst]){(*Lease[*fakeInst]).Release, (*Lease[*fakeInst]).Discard}, 0, 1, 128},
		{"discard twice", []func(*Lease[*fakeInst]){(*Lease[*fakeInst]).Discard, (*Lease[*fakeInst]).Discard}, 1, 0, 0},
		{"discard then release", []func(*Lease[*fakeInst]){(*Lease[*fakeInst]).Discard, (*Lease[*fakeInst]).Release}, 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{CapacityMB: 1024})
			l := h.acquire(h.spec("k", 128))
			for _, call := range tt.calls {
				call(l)
			}
			s := h.await("closes to finish", func(s Stats) bool { return s.Closing == 0 })
			if n := l.Instance().closes.Load(); n != tt.wantCloses {
				t.Errorf("closed %d times, want %d", n, tt.wantCloses)
			}
			if ks := keyStats(s, "k"); ks.Idle != tt.wantIdle || ks.Busy != 0 || s.Busy != 0 || s.UsedMB != tt.wantMB {
				t.Errorf("stats %+v, want %d idle, %d MB", s, tt.wantIdle, tt.wantMB)
			}
			h.check()
		})
	}
	t.Run("concurrently", func(t *testing.T) {
		h := newHarness(t, Config{})
		for range 50 {
			l := h.acquire(h.spec("k", 128))
			var wg sync.WaitGroup
			wg.Go(l.Release)
			wg.Go(l.Discard)
			wg.Go(l.Release)
			wg.Wait()
		}
		h.await("closes to finish", func(s Stats) bool { return s.Closing == 0 })
		h.check()
	})
}

func TestHooksChangedReportsFinalCounts(t *testing.T) {
	h := newHarness(t, Config{})
	a, b := h.acquire(h.spec("k", 128)), h.acquire(h.spec("k", 128))
	a.Release()
	h.mu.Lock()
	last := h.changed[len(h.changed)-1]
	h.mu.Unlock()
	if want := (changeEvent{"app", "k", Counts{Idle: 1, Busy: 1}}); last != want {
		t.Errorf("last Changed %+v, want %+v", last, want)
	}
	b.Release()
}

func TestStats(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 512})
	a := h.acquire(grouped(h, "k1"))
	h.acquire(grouped(h, "k1")).Release()
	h.p.Drain("g")
	l := h.acquire(grouped(h, "k1"))
	h.await("the drained idle one closed", func(s Stats) bool { return s.Closing == 0 })
	s := h.p.Stats()
	want := []KeyStats{
		{Key: "k1", Group: "g", App: "app", Fn: "fn", Busy: 1, Drained: true},
		{Key: "k1", Group: "g", App: "app", Fn: "fn", Busy: 1},
	}
	if fmt.Sprint(s.Keys) != fmt.Sprint(want) || s.UsedMB != 256 || s.CapacityMB != 512 || s.Busy != 2 {
		t.Errorf("Stats() = %+v, want keys %+v", s, want)
	}
	a.Release()
	l.Release()
}

// TestStress mixes everything at once with the real clock, then checks the
// bookkeeping, that memory never exceeded capacity, and that every instance
// was closed exactly once.
func TestStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"memory short", Config{CapacityMB: 1000, MaxQueue: 40, MaxLaunches: -1}},
		// Both short at once, and a queue so small groups hit their shares.
		{"memory and launch slots short", Config{CapacityMB: 1000, MaxQueue: 6, MaxLaunches: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Clock = RealClock{}
			stress(t, tt.cfg)
		})
	}
}

func stress(t *testing.T, cfg Config) {
	h := newHarness(t, cfg)
	// The bookkeeping must hold after every critical section, not just
	// at the end.
	var reported atomic.Bool
	h.p.afterUnlock = func() {
		if errs := checkInvariants(h.p); len(errs) > 0 && reported.CompareAndSwap(false, true) {
			t.Errorf("after a change: %v", errs)
		}
		h.record(func() {})
	}
	h.l.fail = func(n int) error {
		if n%17 == 0 {
			return errBoom
		}
		return nil
	}
	h.l.exitEarly = func(n int) bool { return n%23 == 0 }
	specs := []Spec[*fakeInst]{h.spec("a", 100), h.spec("b", 300), h.spec("c", 50), grouped(h, "g1"), grouped(h, "g2")}
	for i := range specs {
		specs[i].IdleTimeout = time.Duration(i+1) * time.Millisecond
	}
	specs[0].MaxRequests = 3
	specs[2].MaxInstances = 2
	specs[3].MaxInstances, specs[4].MaxInstances = 3, 3 // one group, one limit
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := range 60 {
				spec := specs[(w+i)%len(specs)]
				timeout := time.Duration(1+(w*i)%5) * time.Millisecond
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				l, err := h.p.Acquire(ctx, spec)
				cancel()
				if err != nil {
					if !errors.Is(err, ErrNoCapacity) && !errors.Is(err, errBoom) && !errors.Is(err, ErrExited) {
						t.Errorf("Acquire: %v", err)
					}
					continue
				}
				f := l.Instance()
				if !f.inUse.CompareAndSwap(false, true) {
					t.Errorf("instance %v shared", f)
				}
				switch i % 7 {
				case 0:
					f.inUse.Store(false)
					l.Discard()
				case 3:
					if w%4 == 0 {
						f.exit()
					}
					fallthrough
				default:
					f.inUse.Store(false)
					l.Release()
				}
				if i%13 == 0 {
					h.p.Drain("g")
				}
				if w < 2 && i%11 == 0 {
					// Min-warm set, changed and cleared under load;
					// the reservation may not fit.
					warm := specs[2+w]
					if err := h.p.SetMinWarm(warm, (w+i)%3); err != nil && !errors.Is(err, ErrNoCapacity) {
						t.Errorf("SetMinWarm: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	h.check()
	if n := h.l.maxMB.Load(); n > 1000 {
		t.Errorf("%d MB alive at once, capacity 1000", n)
	}
	if n := int(h.l.maxRunning.Load()); cfg.MaxLaunches > 0 && n > cfg.MaxLaunches {
		t.Errorf("%d launches ran at once, MaxLaunches %d", n, cfg.MaxLaunches)
	}
}
