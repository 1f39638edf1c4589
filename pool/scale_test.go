package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// capped is spec with MaxInstances set.
func capped(spec Spec[*fakeInst], n int) Spec[*fakeInst] {
	spec.MaxInstances = n
	return spec
}

// watchGroup fails the test if the group ever has more than max
// instances, checked after every change the pool makes; with fake, the
// fake's live instances are checked too (only right while none close,
// since closing ones do not count).
func watchGroup(h *harness, group, key string, max int, fake bool) {
	h.p.afterUnlock = func() {
		s := h.p.Stats()
		g := groupStats(s, group, key)
		ks := keyStats(s, key)
		if g.Instances > max || ks.Starting+ks.Idle+ks.Busy > max {
			h.t.Errorf("group %q/%q has %d instances (key: %d starting, %d idle, %d busy), MaxInstances %d",
				group, key, g.Instances, ks.Starting, ks.Idle, ks.Busy, max)
		}
		if n := h.l.live.Load(); fake && int(n) > max {
			h.t.Errorf("%d instances alive in the fake, MaxInstances %d", n, max)
		}
		h.record(func() {})
	}
}

func TestMaxInstances(t *testing.T) {
	t.Run("6 concurrent callers share 2 instances", func(t *testing.T) {
		h := newHarness(t, Config{MaxLaunches: -1})
		h.l.gate = make(chan struct{})
		spec := capped(h.spec("k", 128), 2)
		watchGroup(h, "", "k", 2, true)
		got := make(chan *Lease[*fakeInst], 6)
		for range 6 {
			go func() {
				l, err := h.p.Acquire(context.Background(), spec)
				if err != nil {
					t.Error(err)
				}
				got <- l
			}()
		}
		s := h.await("every caller waiting", func(s Stats) bool { return s.Waiting == 6 })
		if s.Launching != 2 || s.Queued != 4 {
			t.Fatalf("%d launching, %d queued; want 2 and 4", s.Launching, s.Queued)
		}
		if g := groupStats(s, "", "k"); g.Instances != 2 || g.MaxInstances != 2 {
			t.Errorf("group stats %+v", g)
		}
		h.check()
		close(h.l.gate)
		used := map[*fakeInst]int{}
		for i := range 6 {
			var l *Lease[*fakeInst]
			select {
			case l = <-got:
			case <-time.After(wait):
				t.Fatalf("only %d of 6 callers served", i)
			}
			if l == nil {
				t.FailNow()
			}
			used[l.Instance()]++
			h.check()
			l.Release()
		}
		// Two launches were under way; how many instances the six
		// callers end up on depends on how fast each is released, but
		// never more than the cap.
		if n := h.l.launches.Load(); n < 1 || n > 2 || len(used) > 2 {
			t.Errorf("%d launches, %d instances used; want at most 2", n, len(used))
		}
		if n := h.l.maxLive.Load(); n > 2 {
			t.Errorf("%d alive at once, over the cap of 2", n)
		}
		h.check()
	})

	t.Run("a closing instance no longer counts", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := capped(h.spec("k", 128), 1)
		a := h.acquire(spec)
		p := h.acquirePending(spec)
		h.await("a caller queued", func(s Stats) bool { return s.Queued == 1 && s.Launching == 0 })
		h.blockClose(a.Instance())
		a.Discard()
		r := p.result()
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Instance() == a.Instance() {
			t.Fatal("got the discarded instance")
		}
		s := h.p.Stats()
		if g := groupStats(s, "", "k"); g.Instances != 1 || s.Closing != 1 {
			t.Errorf("with the old one still closing: %+v, group %+v", s, g)
		}
		r.l.Release()
		h.check()
	})

	t.Run("the deadline passes while waiting for an instance", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := capped(h.spec("k", 128), 1)
		h.acquire(spec)
		p := h.acquirePending(spec)
		h.await("a caller queued", func(s Stats) bool { return s.Queued == 1 })
		p.ctx.end(context.DeadlineExceeded)
		if r := p.result(); !errors.Is(r.err, ErrNoCapacity) {
			t.Fatalf("got %v, want ErrNoCapacity", r.err)
		}
		if n := h.l.launches.Load(); n != 1 {
			t.Errorf("%d launches, want 1", n)
		}
		h.check()
	})

	// A group at its limit must not stand in memory order or slot order:
	// the others launch past it.
	t.Run("a group at its limit holds up no other", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 1024, MaxLaunches: 1})
		h.acquire(h.spec("b", 256))
		a := capped(h.spec("a", 128), 1)
		h.acquire(a)
		pa := h.acquirePending(a)
		h.await("a's caller queued", func(s Stats) bool { return s.Queued == 1 })
		// a holds less than b, and its caller came first: were it
		// in either order, it would come first in both.
		h.acquire(h.spec("b", 256))
		if s := h.p.Stats(); groupStats(s, "", "a").Queued != 1 || groupStats(s, "", "a").Instances != 1 || s.UsedMB != 640 {
			t.Errorf("stats %+v", s)
		}
		select {
		case r := <-pa.ch:
			t.Fatalf("a's caller returned %v", r.err)
		default:
		}
		h.check()
	})

	t.Run("instances of drained keys count until they close", func(t *testing.T) {
		h := newHarness(t, Config{})
		k1, k2 := capped(grouped(h, "k1"), 2), capped(grouped(h, "k2"), 2)
		watchGroup(h, "g", "k2", 2, false)
		a, b := h.acquire(k1), h.acquire(k1)
		p := h.acquirePending(k2) // drains k1
		s := h.await("k2's caller queued", func(s Stats) bool { return s.Queued == 1 })
		if g := groupStats(s, "g", ""); g.Instances != 2 || s.Launching != 0 {
			t.Fatalf("stats %+v, group %+v", s, g)
		}
		a.Release() // closes: k1 is drained and nobody waits for it
		r := p.result()
		if r.err != nil {
			t.Fatal(r.err)
		}
		if n := h.l.launches.Load(); n != 3 {
			t.Errorf("%d launches, want 3", n)
		}
		r.l.Release()
		b.Release()
		h.check()
	})
}

func TestMaxRequests(t *testing.T) {
	t.Run("12 leases of 5 each take 3 instances", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := h.spec("k", 128)
		spec.MaxRequests = 5
		var order []*fakeInst
		served := map[*fakeInst]int{}
		for range 12 {
			l := h.acquire(spec)
			if served[l.Instance()] == 0 {
				order = append(order, l.Instance())
			}
			served[l.Instance()]++
			l.Release()
		}
		if len(order) != 3 {
			t.Fatalf("%d instances used, want 3", len(order))
		}
		for i, want := range []int{5, 5, 2} {
			if served[order[i]] != want {
				t.Errorf("instance %d served %d leases, want %d", i, served[order[i]], want)
			}
		}
		h.awaitClosed(order[0])
		h.awaitClosed(order[1])
		if order[2].closes.Load() != 0 {
			t.Error("the third instance, with 2 leases served, was closed")
		}
		h.mu.Lock()
		if got := strings.Join(h.retired, ","); got != "k,k" {
			t.Errorf("Retired hook saw %q, want k,k", got)
		}
		h.mu.Unlock()
		h.check()
	})

	t.Run("the next caller of its key gets a new instance", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := capped(h.spec("k", 128), 1)
		spec.MaxRequests = 1
		a := h.acquire(spec)
		p := h.acquirePending(spec)
		h.await("a caller queued", func(s Stats) bool { return s.Queued == 1 })
		a.Release()
		r := p.result()
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Instance() == a.Instance() {
			t.Fatal("the retired instance was handed on")
		}
		h.awaitClosed(a.Instance())
		r.l.Release()
		h.awaitClosed(r.l.Instance())
		h.mu.Lock()
		if len(h.retired) != 2 {
			t.Errorf("Retired hook saw %v, want both", h.retired)
		}
		h.mu.Unlock()
		h.check()
	})

	tests := []struct {
		name string
		end  func(l *Lease[*fakeInst]) // the last lease
	}{
		{"discarded on its last lease it is not retired", (*Lease[*fakeInst]).Discard},
		{"dead on its last lease it is not retired", func(l *Lease[*fakeInst]) {
			l.Instance().exit()
			l.Release()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			spec := h.spec("k", 128)
			spec.MaxRequests = 2
			h.acquire(spec).Release()
			l := h.acquire(spec)
			tt.end(l)
			h.awaitClosed(l.Instance())
			h.mu.Lock()
			if len(h.retired) != 0 {
				t.Errorf("Retired hook saw %v", h.retired)
			}
			h.mu.Unlock()
			h.check()
		})
	}
}

func warmIdle(h *harness, key string, n int) Stats {
	h.t.Helper()
	return h.await(fmt.Sprintf("%d idle instances of %s", n, key), func(s Stats) bool {
		ks := keyStats(s, key)
		return ks.Idle == n && ks.Starting == 0 && s.Closing == 0
	})
}

func TestMinWarm(t *testing.T) {
	t.Run("launches with no caller and keeps them past the idle timeout", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 1024})
		spec := h.spec("k", 128)
		if err := h.p.SetMinWarm(spec, 3); err != nil {
			t.Fatal(err)
		}
		s := warmIdle(h, "k", 3)
		if s.Waiting != 0 || s.ReservedMB != 384 || keyStats(s, "k").MinWarm != 3 {
			t.Errorf("stats %+v", s)
		}
		h.clock.Advance(time.Hour)
		if s := keyStats(h.p.Stats(), "k"); s.Idle != 3 {
			t.Fatalf("an hour later: %+v", s)
		}
		// Beyond n they age out as usual.
		var ls []*Lease[*fakeInst]
		for range 5 {
			ls = append(ls, h.acquire(spec))
		}
		for _, l := range ls {
			l.Release()
		}
		h.clock.Advance(30 * time.Second)
		warmIdle(h, "k", 3)
		if n := h.l.launches.Load(); n != 5 {
			t.Errorf("%d launches, want 5", n)
		}
		h.check()
	})

	t.Run("relaunches after an instance dies", func(t *testing.T) {
		tests := []struct {
			name    string
			lived   time.Duration
			backoff time.Duration
		}{
			{"young: after the back-off", time.Second, warmBackoffMin},
			{"after a long life: at once", 2 * warmStableAfter, 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				h := newHarness(t, Config{})
				if err := h.p.SetMinWarm(h.spec("k", 128), 2); err != nil {
					t.Fatal(err)
				}
				warmIdle(h, "k", 2)
				h.clock.Advance(tt.lived)
				f := h.l.all()[0]
				f.exit()
				h.awaitClosed(f)
				if tt.backoff > 0 {
					if s := h.p.Stats(); s.Launching != 0 {
						t.Fatalf("relaunched at once: %+v", s)
					}
					h.clock.Advance(tt.backoff - time.Millisecond)
					if s := h.p.Stats(); s.Launching != 0 {
						t.Fatalf("relaunched before the back-off: %+v", s)
					}
					h.clock.Advance(time.Millisecond)
				}
				warmIdle(h, "k", 2)
				if n := h.l.launches.Load(); n != 3 {
					t.Errorf("%d launches, want 3", n)
				}
				h.check()
			})
		}
	})

	t.Run("replaces what is discarded or retired, at once", func(t *testing.T) {
		h := newHarness(t, Config{})
		spec := h.spec("k", 128)
		spec.MaxRequests = 1
		if err := h.p.SetMinWarm(spec, 1); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "k", 1)
		h.acquire(spec).Release() // retired
		warmIdle(h, "k", 1)
		h.acquire(spec).Discard()
		warmIdle(h, "k", 1)
		if n := h.l.launches.Load(); n != 3 {
			t.Errorf("%d launches, want 3", n)
		}
		h.check()
	})

	t.Run("refuses more than capacity and changes nothing", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 500})
		a := h.spec("a", 100)
		if err := h.p.SetMinWarm(a, 3); err != nil {
			t.Fatal(err)
		}
		before := warmIdle(h, "a", 3)
		err := h.p.SetMinWarm(h.spec("b", 100), 3)
		if !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("got %v, want ErrNoCapacity", err)
		}
		for _, want := range []string{"needs 300 MB", "200 MB of the pool's 500 MB"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if after := h.p.Stats(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("stats changed:\n%+v\n%+v", before, after)
		}
		// A key's own reservation does not count against it.
		if err := h.p.SetMinWarm(a, 5); err != nil {
			t.Fatal(err)
		}
		if err := h.p.SetMinWarm(h.spec("b", 100), 1); !errors.Is(err, ErrNoCapacity) {
			t.Errorf("with all of it reserved: %v", err)
		}
		if s := warmIdle(h, "a", 5); s.ReservedMB != 500 || len(s.Keys) != 1 {
			t.Errorf("stats %+v", s)
		}
		h.check()
	})

	t.Run("a new key of the group may take what the old one reserved", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 500})
		if err := h.p.SetMinWarm(grouped(h, "k1"), 3); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "k1", 3)
		if err := h.p.SetMinWarm(grouped(h, "k2"), 3); err != nil {
			t.Fatal(err)
		}
		s := warmIdle(h, "k2", 3)
		if s.ReservedMB != 384 || len(s.Keys) != 1 {
			t.Errorf("stats %+v", s)
		}
		h.check()
	})

	t.Run("refuses more than MaxInstances", func(t *testing.T) {
		h := newHarness(t, Config{})
		err := h.p.SetMinWarm(capped(h.spec("k", 128), 2), 3)
		if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "2 instances at most") {
			t.Fatalf("got %v", err)
		}
		if s := h.p.Stats(); len(s.Keys) != 0 || s.ReservedMB != 0 {
			t.Errorf("stats %+v", s)
		}
	})

	t.Run("not evicted for another group", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 300})
		if err := h.p.SetMinWarm(h.spec("warm", 100), 2); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "warm", 2)
		warm := h.l.all()
		// 200 MB can never fit beside the reservation.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_, err := h.p.Acquire(ctx, h.spec("big", 200))
		if !errors.Is(err, ErrNoCapacity) || !strings.Contains(err.Error(), "kept warm") {
			t.Fatalf("big: got %v, want ErrNoCapacity at once", err)
		}
		// 100 MB fits in what is left; the next 100 MB waits for it,
		// and then evicts it, never the warm ones ahead of it in LRU
		// order.
		c := h.acquire(h.spec("c", 100))
		pd := h.acquirePending(h.spec("d", 100))
		h.await("d queued", func(s Stats) bool { return s.Queued == 1 })
		pe := h.acquirePending(h.spec("e", 100))
		h.await("e queued", func(s Stats) bool { return s.Queued == 2 })
		pe.ctx.end(context.DeadlineExceeded)
		if r := pe.result(); !errors.Is(r.err, ErrNoCapacity) {
			t.Fatalf("e: got %v, want ErrNoCapacity", r.err)
		}
		c.Release()
		if r := pd.result(); r.err != nil {
			t.Fatal(r.err)
		}
		h.awaitClosed(c.Instance())
		for _, f := range warm {
			if f.closes.Load() != 0 {
				t.Errorf("warm instance %v closed", f)
			}
		}
		h.check()
	})

	t.Run("instances beyond n may be evicted", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 300})
		spec := h.spec("warm", 100)
		if err := h.p.SetMinWarm(spec, 1); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "warm", 1)
		a, b := h.acquire(spec), h.acquire(spec)
		a.Release()
		b.Release()
		h.acquire(h.spec("big", 200))
		s := h.await("one warm instance evicted", func(s Stats) bool { return s.Closing == 0 && keyStats(s, "warm").Idle == 1 })
		if s.UsedMB != 300 {
			t.Errorf("stats %+v", s)
		}
		h.check()
	})

	t.Run("its reservation holds while an instance is missing", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 200})
		if err := h.p.SetMinWarm(h.spec("warm", 100), 1); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "warm", 1)
		f := h.l.all()[0]
		f.exit()
		h.awaitClosed(f) // and backing off
		h.acquire(h.spec("x", 100))
		py := h.acquirePending(h.spec("y", 100))
		h.await("y queued", func(s Stats) bool { return s.Queued == 1 })
		h.clock.Advance(warmBackoffMin)
		s := warmIdle(h, "warm", 1)
		if s.Queued != 1 {
			t.Errorf("y not queued any more: %+v", s)
		}
		select {
		case r := <-py.ch:
			t.Fatalf("y returned %v", r.err)
		default:
		}
		h.check()
	})

	t.Run("a grown reservation refuses queued callers that cannot fit", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 300})
		x := h.acquire(h.spec("x", 200))
		pb := h.acquirePending(h.spec("big", 200))
		h.await("big queued", func(s Stats) bool { return s.Queued == 1 })
		if err := h.p.SetMinWarm(h.spec("warm", 100), 2); err != nil {
			t.Fatal(err)
		}
		if r := pb.result(); !errors.Is(r.err, ErrNoCapacity) {
			t.Fatalf("big: got %v, want ErrNoCapacity", r.err)
		}
		// x holds what the reservation needs until it is idle.
		if s := h.p.Stats(); s.Launching != 0 {
			t.Fatalf("stats %+v", s)
		}
		x.Release()
		warmIdle(h, "warm", 2)
		h.awaitClosed(x.Instance())
		h.check()
	})

	t.Run("a caller left with nothing to wait for is refused", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 300})
		x := h.acquire(h.spec("x", 200))
		if err := h.p.SetMinWarm(h.spec("warm", 100), 2); err != nil {
			t.Fatal(err)
		}
		// x's busy instance may be released to it, so it waits.
		px := h.acquirePending(h.spec("x", 200))
		h.await("x queued", func(s Stats) bool { return s.Queued == 1 })
		x.Discard()
		if r := px.result(); !errors.Is(r.err, ErrNoCapacity) {
			t.Fatalf("x: got %v, want ErrNoCapacity", r.err)
		}
		warmIdle(h, "warm", 2)
		h.check()
	})

	// Evicting for what a reservation lacks would hand one launch more
	// than it needs, and what it does not need would look free while
	// the evicted instances are still closing.
	t.Run("its launches never take memory still held", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 1000})
		var others []*Lease[*fakeInst]
		for range 9 {
			others = append(others, h.acquire(h.spec("o", 100)))
		}
		var unblock []func()
		for _, l := range others {
			unblock = append(unblock, h.blockClose(l.Instance()))
			l.Release()
		}
		if err := h.p.SetMinWarm(h.spec("warm", 100), 5); err != nil {
			t.Fatal(err)
		}
		// One fits at once; each of the others waits for an eviction.
		s := h.await("the launches admitted", func(s Stats) bool {
			ks := keyStats(s, "warm")
			return ks.Starting+ks.Idle == 5 && s.Closing == 4
		})
		if s.UsedMB > 1000 {
			t.Errorf("stats %+v", s)
		}
		h.check()
		for _, f := range unblock {
			f()
		}
		warmIdle(h, "warm", 5)
		if n := h.l.maxMB.Load(); n > 1000 {
			t.Errorf("%d MB alive at once, capacity 1000", n)
		}
		h.check()
	})

	t.Run("relaunches when its group has room again", func(t *testing.T) {
		h := newHarness(t, Config{})
		k1, k2 := capped(grouped(h, "k1"), 2), capped(grouped(h, "k2"), 2)
		a := h.acquire(k1)
		h.acquire(k1)
		if err := h.p.SetMinWarm(k2, 1); err != nil { // drains k1
			t.Fatal(err)
		}
		if s := h.p.Stats(); s.Launching != 0 {
			t.Fatalf("launched beyond MaxInstances: %+v", s)
		}
		a.Release() // closes, drained
		if s := h.p.Stats(); s.Launching != 1 {
			t.Fatalf("no launch once there was room: %+v", s)
		}
		warmIdle(h, "k2", 1)
		h.check()
	})

	t.Run("Drain clears it", func(t *testing.T) {
		h := newHarness(t, Config{})
		if err := h.p.SetMinWarm(grouped(h, "k1"), 2); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "k1", 2)
		h.p.Drain("g")
		s := h.await("the drained instances closed", func(s Stats) bool { return len(s.Keys) == 0 && s.Closing == 0 })
		h.clock.Advance(time.Hour)
		if n := h.l.launches.Load(); n != 2 || s.ReservedMB != 0 {
			t.Errorf("%d launches, want 2; stats %+v", n, s)
		}
		h.check()
	})

	t.Run("0 clears it", func(t *testing.T) {
		h := newHarness(t, Config{CapacityMB: 256})
		spec := h.spec("k", 128)
		if err := h.p.SetMinWarm(spec, 2); err != nil {
			t.Fatal(err)
		}
		warmIdle(h, "k", 2)
		if err := h.p.SetMinWarm(spec, 0); err != nil {
			t.Fatal(err)
		}
		if s := h.p.Stats(); s.ReservedMB != 0 || keyStats(s, "k").MinWarm != 0 {
			t.Errorf("stats %+v", s)
		}
		h.clock.Advance(30 * time.Second)
		h.await("reaped", func(s Stats) bool { return len(s.Keys) == 0 && s.Closing == 0 })
		h.check()
	})

	t.Run("launches take slots after callers", func(t *testing.T) {
		h := newHarness(t, Config{MaxLaunches: 1})
		h.l.gate = make(chan struct{})
		if err := h.p.SetMinWarm(h.spec("warm", 128), 2); err != nil {
			t.Fatal(err)
		}
		h.acquirePending(h.spec("b", 128))
		h.await("b queued", func(s Stats) bool { return s.Queued == 1 && s.Launching == 1 })
		for _, want := range []string{"warm", "b", "warm"} {
			if k := h.nextStarted(); k != want {
				t.Fatalf("launch of %s, want %s", k, want)
			}
			h.l.gate <- struct{}{}
		}
		warmIdle(h, "warm", 2)
		h.check()
	})

	t.Run("a caller takes over a launch under way", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.l.gate = make(chan struct{})
		spec := h.spec("k", 128)
		if err := h.p.SetMinWarm(spec, 1); err != nil {
			t.Fatal(err)
		}
		h.nextStarted()
		p := h.acquirePending(spec)
		h.await("the caller waiting", func(s Stats) bool { return s.Waiting == 1 })
		close(h.l.gate)
		r := p.result()
		if r.err != nil {
			t.Fatal(r.err)
		}
		r.l.Release()
		warmIdle(h, "k", 1)
		if n := h.l.launches.Load(); n != 1 {
			t.Errorf("%d launches, want 1", n)
		}
		h.check()
	})
}

// A min-warm fn that cannot start must not spin: each failure doubles the
// wait before the next launch, up to warmBackoffMax, until it has gone
// warmStableAfter without one.
func TestMinWarmBacksOff(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(h *harness, broken *atomic.Bool)
	}{
		{"dies on arrival", func(h *harness, broken *atomic.Bool) {
			h.l.exitEarly = func(int) bool { return broken.Load() }
		}},
		{"launch fails", func(h *harness, broken *atomic.Bool) {
			h.l.fail = func(int) error {
				if broken.Load() {
					return errBoom
				}
				return nil
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			var broken atomic.Bool
			broken.Store(true)
			tt.breakIt(h, &broken)
			h.l.gate = make(chan struct{})
			if err := h.p.SetMinWarm(h.spec("k", 128), 1); err != nil {
				t.Fatal(err)
			}
			// fail lets the launch under way end, broken, and checks
			// that the next one starts after exactly d.
			fail := func(d time.Duration) {
				t.Helper()
				h.nextStarted()
				h.l.gate <- struct{}{}
				h.await("the launch to fail", func(s Stats) bool { return s.Launching == 0 && s.Closing == 0 })
				h.clock.Advance(d - time.Millisecond)
				if s := h.p.Stats(); s.Launching != 0 {
					t.Fatalf("relaunched before %v", d)
				}
				h.clock.Advance(time.Millisecond)
				if s := h.p.Stats(); s.Launching != 1 {
					t.Fatalf("not relaunched after %v", d)
				}
			}
			for d := warmBackoffMin; d < warmBackoffMax; d *= 2 {
				fail(d)
			}
			fail(warmBackoffMax)
			fail(warmBackoffMax)

			// It comes up and stays up: the next failure starts over.
			broken.Store(false)
			h.nextStarted()
			h.l.gate <- struct{}{}
			warmIdle(h, "k", 1)
			h.clock.Advance(warmStableAfter)
			broken.Store(true)
			all := h.l.all()
			f := all[len(all)-1]
			f.exit()
			h.awaitClosed(f)
			if s := h.p.Stats(); s.Launching != 1 {
				t.Fatalf("not relaunched at once after a long life: %+v", s)
			}
			fail(warmBackoffMin)
			fail(2 * warmBackoffMin)
			h.nextStarted()
			// The first, the doublings, twice the longest, the one that
			// stayed up, its replacement and one more.
			if n, want := h.l.launches.Load(), int32(1+bitsUpTo(warmBackoffMin, warmBackoffMax)+2+1+2); n != want {
				t.Errorf("%d launches, want %d", n, want)
			}
			h.check()
		})
	}
}

// bitsUpTo is how many doublings take min below max.
func bitsUpTo(min, max time.Duration) int {
	n := 0
	for d := min; d < max; d *= 2 {
		n++
	}
	return n
}

func TestHooksChangedCountsCallers(t *testing.T) {
	h := newHarness(t, Config{CapacityMB: 256})
	h.acquire(h.spec("k", 128))
	other := h.acquire(h.spec("other", 128))
	h.l.gate = make(chan struct{})
	last := func() Counts {
		h.mu.Lock()
		defer h.mu.Unlock()
		for i := len(h.changed) - 1; i >= 0; i-- {
			if c := h.changed[i]; c.fn == "k" {
				return c.Counts
			}
		}
		return Counts{}
	}
	steps := []struct {
		name string
		do   func()
		want Counts
	}{
		{"two callers wait for memory", func() {
			for range 2 {
				h.acquirePending(h.spec("k", 128))
			}
			h.await("two queued", func(s Stats) bool { return s.Queued == 2 })
		}, Counts{Busy: 1, Waiting: 2, Queued: 2}},
		{"one has a launch", func() {
			other.Release() // evicted for it
			h.await("a launch", func(s Stats) bool { return s.Launching == 1 })
		}, Counts{Starting: 1, Busy: 1, Waiting: 2, Queued: 1}},
		{"they give up", func() {
			h.settle()
		}, Counts{Starting: 1, Busy: 1}},
		{"the launch ends", func() {
			close(h.l.gate)
			h.await("it idle", func(s Stats) bool { return keyStats(s, "k").Idle == 1 })
		}, Counts{Idle: 1, Busy: 1}},
	}
	for _, st := range steps {
		st.do()
		if c := last(); c != st.want {
			t.Errorf("%s: Changed reported %+v, want %+v", st.name, c, st.want)
		}
	}
	h.check()
}
