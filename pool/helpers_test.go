package pool

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wait is how long a test waits for something that should happen at once;
// only a hung pool ever gets near it.
const wait = 10 * time.Second

// fakeInst is an Instance whose behaviour tests set through function fields.
type fakeInst struct {
	id     int
	key    string
	mb     int64
	done   chan struct{}
	err    error         // set before done is closed
	closed chan struct{} // closed by the first Close
	closes atomic.Int32
	inUse  atomic.Bool

	// closeFn, if set, runs inside Close, e.g. to hold it up.
	closeFn func(ctx context.Context) error
	// onClose runs once, on the first Close.
	onClose func()
}

func (f *fakeInst) Done() <-chan struct{} { return f.done }

func (f *fakeInst) Err() error {
	select {
	case <-f.done:
		return f.err
	default:
		return nil
	}
}

func (f *fakeInst) Close(ctx context.Context) error {
	var err error
	if f.closeFn != nil {
		err = f.closeFn(ctx)
	}
	if f.closes.Add(1) == 1 {
		if f.onClose != nil {
			f.onClose()
		}
		close(f.closed)
	}
	return err
}

// exit makes the instance Done, as if its container died.
func (f *fakeInst) exit() { f.exitWith(nil) }

// exitWith makes the instance Done with err as its Err.
func (f *fakeInst) exitWith(err error) {
	f.err = err
	close(f.done)
}

func (f *fakeInst) String() string { return fmt.Sprintf("%s#%d", f.key, f.id) }

// launcher makes fake instances and keeps score.
type launcher struct {
	launches atomic.Int32
	liveMB   atomic.Int64
	maxMB    atomic.Int64
	live     atomic.Int32
	maxLive  atomic.Int32
	started  chan string // one per launch begun, with its key

	// gate, if set, holds every launch until it can receive from it (or
	// it is closed), or the launch ctx ends.
	gate chan struct{}
	// fail, if set, decides whether launch number n (from 1) fails.
	fail func(n int) error
	// exitEarly, if set, makes launch n return an instance already Done,
	// with exitErr as its Err.
	exitEarly func(n int) bool
	exitErr   error
	// running and maxRunning count launches inside the launch func.
	running, maxRunning atomic.Int32

	mu    sync.Mutex
	insts []*fakeInst
	gates map[string]chan struct{} // per key, instead of gate
}

// keyGate makes the launches of key wait on the returned channel instead
// of gate, so a test can let one key's launches end and not another's.
func (l *launcher) keyGate(key string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gates == nil {
		l.gates = make(map[string]chan struct{})
	}
	g := make(chan struct{})
	l.gates[key] = g
	return g
}

func newLauncher() *launcher { return &launcher{started: make(chan string, 10000)} }

func (l *launcher) fn(key string, mb int64) func(context.Context) (*fakeInst, error) {
	return func(ctx context.Context) (*fakeInst, error) {
		n := int(l.launches.Add(1))
		raise(&l.maxRunning, l.running.Add(1))
		defer l.running.Add(-1)
		l.started <- key
		gate := l.gate
		l.mu.Lock()
		if g, ok := l.gates[key]; ok {
			gate = g
		}
		l.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if l.fail != nil {
			if err := l.fail(n); err != nil {
				return nil, err
			}
		}
		f := &fakeInst{id: n, key: key, mb: mb, done: make(chan struct{}), closed: make(chan struct{})}
		if l.exitEarly != nil && l.exitEarly(n) {
			f.exitWith(l.exitErr)
		}
		raise(&l.maxLive, l.live.Add(1))
		raise(&l.maxMB, l.liveMB.Add(mb))
		f.onClose = func() {
			l.live.Add(-1)
			l.liveMB.Add(-mb)
		}
		l.mu.Lock()
		l.insts = append(l.insts, f)
		l.mu.Unlock()
		return f, nil
	}
}

func (l *launcher) all() []*fakeInst {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*fakeInst(nil), l.insts...)
}

func raise[T int32 | int64](m interface {
	Load() T
	CompareAndSwap(old, new T) bool
}, v T) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// fakeClock only moves when told; due timers run inside Advance, in the
// caller's goroutine, so what they do is done when Advance returns.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock by d and runs every timer due by then, earliest
// first, including ones those timers set.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		idx := -1
		for i, t := range c.timers {
			if !t.at.After(c.now) && (next == nil || t.at.Before(next.at)) {
				next, idx = t, i
			}
		}
		if next == nil {
			c.mu.Unlock()
			return
		}
		c.timers = append(c.timers[:idx], c.timers[idx+1:]...)
		c.mu.Unlock()
		next.f()
	}
}

// pending is how many timers are set.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// expiringCtx is a context whose end the test decides, so "the deadline
// passed while queued" needs no real deadline.
type expiringCtx struct {
	context.Context
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newExpiringCtx() *expiringCtx {
	return &expiringCtx{Context: context.Background(), done: make(chan struct{})}
}

func (c *expiringCtx) Done() <-chan struct{} { return c.done }

func (c *expiringCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *expiringCtx) end(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	close(c.done)
}

type changeEvent struct {
	app, fn string
	Counts
}

// harness is a pool of fake instances whose hooks record what happened
// and wake await.
type harness struct {
	t     *testing.T
	p     *Pool[*fakeInst]
	clock *fakeClock
	l     *launcher
	poke  chan struct{}

	mu       sync.Mutex
	evicted  []string
	retired  []string
	changed  []changeEvent
	launched []error
	closeErr []error
	waits    int
	memory   []int64
	pending  []*pending
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, clock: newFakeClock(), l: newLauncher(), poke: make(chan struct{}, 1)}
	if cfg.Clock == nil {
		cfg.Clock = h.clock
	}
	cfg.Hooks = Hooks{
		Launched: func(app, fn string, took time.Duration, err error) {
			h.record(func() { h.launched = append(h.launched, err) })
		},
		Evicted: func(app, fn string) {
			h.record(func() { h.evicted = append(h.evicted, fn) })
		},
		QueueWait: func(app, fn string, waited time.Duration) {
			h.record(func() { h.waits++ })
		},
		Closed: func(app, fn string, err error) {
			h.record(func() {
				if err != nil {
					h.closeErr = append(h.closeErr, err)
				}
			})
		},
		Retired: func(app, fn string) {
			h.record(func() { h.retired = append(h.retired, fn) })
		},
		Changed: func(app, fn string, c Counts) {
			if c.Starting < 0 || c.Idle < 0 || c.Busy < 0 || c.Queued < 0 || c.Waiting < c.Queued {
				t.Errorf("Changed(%s, %s) with counts out of range %+v", app, fn, c)
			}
			h.record(func() { h.changed = append(h.changed, changeEvent{app, fn, c}) })
		},
		MemoryUsed: func(used, capacity int64) {
			if used < 0 || (capacity > 0 && used > capacity) {
				t.Errorf("MemoryUsed(%d, %d) out of range", used, capacity)
			}
			h.record(func() { h.memory = append(h.memory, used) })
		},
	}
	h.p = New[*fakeInst](cfg)
	h.p.afterUnlock = func() { h.record(func() {}) }
	t.Cleanup(h.shutdown)
	t.Cleanup(h.settle) // runs first
	return h
}

func (h *harness) record(f func()) {
	h.mu.Lock()
	f()
	h.mu.Unlock()
	select {
	case h.poke <- struct{}{}:
	default:
	}
}

// shutdown closes the pool and checks that every instance ever launched
// was closed exactly once.
func (h *harness) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if h.l.gate != nil {
		select {
		case <-h.l.gate:
		default:
			close(h.l.gate)
		}
	}
	if err := h.p.Close(ctx); err != nil {
		h.t.Errorf("Close: %v", err)
	}
	h.check()
	for _, f := range h.l.all() {
		if n := f.closes.Load(); n != 1 {
			h.t.Errorf("instance %v closed %d times, want 1", f, n)
		}
	}
	if s := h.p.Stats(); s.UsedMB != 0 || len(s.Keys) != 0 || len(s.Groups) != 0 || s.Closing != 0 {
		h.t.Errorf("after Close: %+v", s)
	}
}

func (h *harness) spec(key string, mb int64) Spec[*fakeInst] {
	return Spec[*fakeInst]{
		Key: key, App: "app", Fn: key, MemoryMB: mb,
		IdleTimeout: 30 * time.Second,
		Launch:      h.l.fn(key, mb),
	}
}

func (h *harness) acquire(spec Spec[*fakeInst]) *Lease[*fakeInst] {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	l, err := h.p.Acquire(ctx, spec)
	if err != nil {
		h.t.Fatalf("Acquire(%s): %v", spec.Key, err)
	}
	if l.Instance().closes.Load() != 0 {
		h.t.Fatalf("Acquire(%s) gave closed instance %v", spec.Key, l.Instance())
	}
	// Before the pool closes, even if the test fails first; a second
	// Release is a no-op.
	h.t.Cleanup(l.Release)
	return l
}

type acquired struct {
	l   *Lease[*fakeInst]
	err error
}

// acquireAsync acquires in a goroutine that the test waits for through the
// returned channel.
func (h *harness) acquireAsync(ctx context.Context, spec Spec[*fakeInst]) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, err := h.p.Acquire(ctx, spec)
		ch <- acquired{l, err}
	}()
	return ch
}

// pending is an Acquire under way whose ctx the test ends. When the test
// ends, however it ends, every pending Acquire is cancelled and its lease
// released, so the pool can close.
type pending struct {
	h   *harness
	ctx *expiringCtx
	ch  <-chan acquired
	got *acquired
}

func (h *harness) acquirePending(spec Spec[*fakeInst]) *pending {
	ctx := newExpiringCtx()
	p := &pending{h: h, ctx: ctx, ch: h.acquireAsync(ctx, spec)}
	h.mu.Lock()
	h.pending = append(h.pending, p)
	h.mu.Unlock()
	return p
}

// result waits for the Acquire to return.
func (p *pending) result() acquired {
	p.h.t.Helper()
	if p.got == nil {
		r := p.h.result(p.ch)
		p.got = &r
	}
	return *p.got
}

// settle cancels the Acquires still waiting and releases every lease they
// got.
func (h *harness) settle() {
	h.t.Helper()
	h.mu.Lock()
	ps := h.pending
	h.pending = nil
	h.mu.Unlock()
	for _, p := range ps {
		select {
		case <-p.ctx.done:
		default:
			p.ctx.end(context.Canceled)
		}
	}
	for _, p := range ps {
		if r := p.result(); r.l != nil {
			r.l.Release()
		}
	}
}

// blockClose holds f's Close until the returned func is called, or the
// test ends.
func (h *harness) blockClose(f *fakeInst) (unblock func()) {
	c := make(chan struct{})
	f.closeFn = func(context.Context) error { <-c; return nil }
	unblock = sync.OnceFunc(func() { close(c) })
	h.t.Cleanup(unblock)
	return unblock
}

func (h *harness) result(ch <-chan acquired) acquired {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(wait):
		h.t.Fatal("Acquire did not return")
		return acquired{}
	}
}

// await waits until cond holds for the pool's stats; the pool's hooks wake
// it after every change, so it never sleeps on a guess.
func (h *harness) await(what string, cond func(Stats) bool) Stats {
	h.t.Helper()
	timeout := time.After(wait)
	for {
		s := h.p.Stats()
		if cond(s) {
			return s
		}
		select {
		case <-h.poke:
		case <-timeout:
			h.t.Fatalf("waiting for %s; stats: %+v", what, s)
		}
	}
}

func (h *harness) awaitClosed(f *fakeInst) {
	h.t.Helper()
	select {
	case <-f.closed:
	case <-time.After(wait):
		h.t.Fatalf("instance %v was not closed", f)
	}
	// The pool frees its memory just after Close returns.
	h.await("close of "+f.String()+" to finish", func(s Stats) bool { return s.Closing == 0 })
}

func (h *harness) nextStarted() string {
	h.t.Helper()
	select {
	case k := <-h.l.started:
		return k
	case <-time.After(wait):
		h.t.Fatal("no launch started")
		return ""
	}
}

// groupStats finds a group: group is Spec.Group, or "" with key for a key
// without a group.
func groupStats(s Stats, group, key string) GroupStats {
	for _, g := range s.Groups {
		if g.Group == group && g.Key == key {
			return g
		}
	}
	return GroupStats{Group: group, Key: key}
}

func keyStats(s Stats, key string) KeyStats {
	for _, k := range s.Keys {
		if k.Key == key && !k.Drained {
			return k
		}
	}
	return KeyStats{Key: key}
}

// check verifies the pool's bookkeeping against its lists.
func (h *harness) check() {
	h.t.Helper()
	for _, err := range checkInvariants(h.p) {
		h.t.Error(err)
	}
}

func checkInvariants[I Instance](p *Pool[I]) (errs []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var idle, queued, waiting, starting, inflightKeys int
	var idleMB, heldMB, reservedMB, floorMB int64
	fns := map[*fnCounts]Counts{}
	warming := map[*keyState[I]]bool{}
	for ks := p.warming.head; ks != nil; ks = ks.warm.links.next {
		warming[ks] = true
	}
	if len(warming) != p.warming.n {
		bad("warming list has %d keys, count %d", len(warming), p.warming.n)
	}
	for _, ks := range p.allKeys() {
		if ks.forgotten {
			bad("key %s forgotten but listed", ks.key)
		}
		n := 0
		for e := ks.idle.head; e != nil; e = e.byKey.next {
			n++
			if e.state != stateIdle || e.ks != ks {
				bad("key %s: idle list holds %v in state %d", ks.key, e.inst, e.state)
			}
			if _, ok := p.live[e]; !ok {
				bad("idle instance not live")
			}
			idleMB += e.mb
		}
		if n != ks.idle.n {
			bad("key %s: idle list has %d, count %d", ks.key, n, ks.idle.n)
		}
		if ks.idle.n > 0 && ks.withLaunch.n+ks.queued.n > 0 {
			bad("key %s has both idle instances and waiters", ks.key)
		}
		if ks.drained && ks.idle.n > 0 {
			bad("drained key %s has idle instances", ks.key)
		}
		for w := ks.withLaunch.head; w != nil; w = w.byKey.next {
			if w.launch == nil || w.launch.owner != w || w.where != whereLaunch {
				bad("key %s: waiter with launch is inconsistent", ks.key)
			}
		}
		for w := ks.queued.head; w != nil; w = w.byKey.next {
			if w.launch != nil || w.where != whereQueue {
				bad("key %s: queued waiter is inconsistent", ks.key)
			}
		}
		if ks.starting != ks.withLaunch.n+len(ks.orphans) {
			bad("key %s: %d starting but %d waiters with launch and %d orphans",
				ks.key, ks.starting, ks.withLaunch.n, len(ks.orphans))
		}
		if len(ks.orphans) > 0 && ks.queued.n > 0 {
			bad("key %s: orphan launch while waiters are queued", ks.key)
		}
		idle += ks.idle.n
		queued += ks.queued.n
		waiting += ks.withLaunch.n + ks.queued.n
		starting += ks.starting
		inflightKeys += ks.busy
		heldMB += int64(ks.starting) * ks.mb
		c := fns[ks.fc]
		c.Starting += ks.starting
		c.Idle += ks.idle.n
		c.Busy += ks.busy
		c.Waiting += ks.withLaunch.n + ks.queued.n
		c.Queued += ks.queued.n
		fns[ks.fc] = c

		// Min-warm.
		w := &ks.warm
		if ks.drained && w.n > 0 {
			bad("drained key %s keeps %d warm", ks.key, w.n)
		}
		reservedMB += int64(w.n) * ks.mb
		wantFloor := max(0, w.n-ks.starting-ks.busy)
		wantGap := max(0, w.n-ks.live())
		if w.floor != wantFloor || w.gap != wantGap {
			bad("key %s: min-warm %d with %d starting, %d idle, %d busy has floor %d, gap %d; want %d, %d",
				ks.key, w.n, ks.starting, ks.idle.n, ks.busy, w.floor, w.gap, wantFloor, wantGap)
		}
		floorMB += int64(w.floor) * ks.mb
		if ready := w.gap > 0 && w.holding == nil && !p.closed; ready != warming[ks] || w.listed != warming[ks] {
			bad("key %s: short of min-warm and ready %v, on the warming list %v (listed %v)", ks.key, ready, warming[ks], w.listed)
		}
		if !p.closed && ks.queued.n > 0 && p.hopeless(ks) {
			bad("key %s: %d callers queued for a launch that cannot fit beside the reservations", ks.key, ks.queued.n)
		}
		if w.n == 0 && w.holding != nil {
			bad("key %s backs off with no min-warm", ks.key)
		}
		if ks.maxRequests > 0 {
			for e := ks.idle.head; e != nil; e = e.byKey.next {
				if e.leases >= ks.maxRequests {
					bad("key %s: idle instance served %d leases, MaxRequests %d", ks.key, e.leases, ks.maxRequests)
				}
			}
		}
	}
	for fc, c := range fns {
		if c != fc.Counts {
			bad("fn %s/%s counts %+v, keys say %+v", fc.app, fc.fn, fc.Counts, c)
		}
	}
	if reservedMB != p.reservedMB || floorMB != p.floorMB {
		bad("pool reserves %d MB, floor %d; keys say %d, %d",
			p.reservedMB, p.floorMB, reservedMB, floorMB)
	}
	if p.capacityMB > 0 && reservedMB > p.capacityMB {
		bad("%d MB reserved, capacity %d", reservedMB, p.capacityMB)
	}

	if idle != p.idle.n || idleMB != p.idleMB {
		bad("pool idle %d (%d MB), keys say %d (%d MB)", p.idle.n, p.idleMB, idle, idleMB)
	}
	if queued != p.queued {
		bad("pool queue %d, keys say %d", p.queued, queued)
	}
	if waiting != p.waiting {
		bad("pool waiting %d, keys say %d", p.waiting, waiting)
	}
	if starting != len(p.launches) {
		bad("%d launches, keys say %d starting", len(p.launches), starting)
	}
	for e := range p.live {
		if e.state == stateClosing {
			bad("closing instance still live")
		}
		heldMB += e.mb
	}
	if p.closing == 0 && heldMB != p.usedMB {
		bad("usedMB %d, instances and launches hold %d", p.usedMB, heldMB)
	}
	if p.capacityMB > 0 && p.usedMB > p.capacityMB {
		bad("usedMB %d over capacity %d", p.usedMB, p.capacityMB)
	}
	for l := range p.launches {
		if l.handedMB > l.ks.mb {
			bad("a launch of key %s (%d MB) was handed %d MB by evictions", l.ks.key, l.ks.mb, l.handedMB)
		}
	}
	if len(p.launches) > p.maxLaunches {
		bad("%d launches in flight, at most %d allowed", len(p.launches), p.maxLaunches)
	}
	if !p.closed && len(p.byMemory.gs) > 0 && len(p.launches) < p.maxLaunches {
		if m := p.byMemory.top().queued.head; p.fitsFor(m.ks) {
			bad("a launch slot is free and queued waiter %d of key %s fits", m.seq, m.ks.key)
		}
	}
	if !p.closed && len(p.launches) < p.maxLaunches && p.fits(0) {
		for ks := p.warming.head; ks != nil; ks = ks.warm.links.next {
			if !ks.grp.full() {
				bad("a launch slot is free and key %s, short of its min-warm, fits", ks.key)
			}
		}
	}
	errs = append(errs, checkGroups(p)...)
	if !p.closed && inflightKeys != p.inflight {
		bad("%d busy in keys, %d leases out", inflightKeys, p.inflight)
	}
	return errs
}

// checkGroups verifies the fairness bookkeeping; p.mu is held.
func checkGroups[I Instance](p *Pool[I]) (errs []error) {
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	type sums struct {
		keys, launching, queued, instances int
		liveMB                             int64 // starting and live instances; closing ones are not listed
	}
	want := map[*group[I]]*sums{}
	sumsOf := func(g *group[I]) *sums {
		if want[g] == nil {
			want[g] = &sums{}
		}
		return want[g]
	}
	for _, ks := range p.allKeys() {
		g := ks.grp
		if p.groups[g.id] != g {
			bad("key %s: its group %v is not the pool's", ks.key, g.id)
		}
		c := sumsOf(g)
		c.keys++
		c.launching += ks.starting
		c.queued += ks.queued.n
		c.liveMB += int64(ks.starting) * ks.mb
		c.instances += ks.starting
	}
	for e := range p.live {
		sumsOf(e.ks.grp).liveMB += e.mb
		sumsOf(e.ks.grp).instances++
	}
	var totalMB int64
	var closing, queued, queuedGrps int
	for id, g := range p.groups {
		c := sumsOf(g)
		if g.id != id {
			bad("group %v filed under %v", g.id, id)
		}
		if g.keys != c.keys || g.launching != c.launching || g.queued.n != c.queued {
			bad("group %v: %d keys, %d launching, %d queued; keys say %d, %d, %d",
				id, g.keys, g.launching, g.queued.n, c.keys, c.launching, c.queued)
		}
		if g.mb < c.liveMB || (g.closing == 0 && g.mb != c.liveMB) {
			bad("group %v holds %d MB with %d closing; its starting and live instances %d MB",
				id, g.mb, g.closing, c.liveMB)
		}
		if g.keys == 0 && g.closing == 0 {
			bad("group %v kept with nothing in it", id)
		}
		var last *waiter[I]
		for w := g.queued.head; w != nil; w = w.inQueue.next {
			if w.ks.grp != g || w.where != whereQueue {
				bad("group %v: queue holds a waiter that is not its or not queued", id)
			}
			if last != nil && last.seq >= w.seq {
				bad("group %v: queue out of order", id)
			}
			last = w
		}
		if g.instances != c.instances {
			bad("group %v: %d instances, its keys and live instances say %d", id, g.instances, c.instances)
		}
		// Every key of a group in the tests has the same MaxInstances,
		// so it is never exceeded.
		if g.maxInstances > 0 && g.instances > g.maxInstances {
			bad("group %v: %d instances, MaxInstances %d", id, g.instances, g.maxInstances)
		}
		in := g.queued.n > 0 && !g.full()
		if (g.memoryAt >= 0) != in || (g.slotsAt >= 0) != in {
			bad("group %v with %d queued, %d of %d instances, at heap positions %d, %d",
				id, g.queued.n, g.instances, g.maxInstances, g.memoryAt, g.slotsAt)
		}
		if g.queued.n > 0 {
			queuedGrps++
		}
		totalMB += g.mb
		closing += g.closing
		queued += g.queued.n
	}
	if queuedGrps != p.queuedGrps {
		bad("%d groups with queued waiters, the pool counts %d", queuedGrps, p.queuedGrps)
	}
	for g := range want {
		if p.groups[g.id] != g {
			bad("group %v in use but not the pool's", g.id)
		}
	}
	if totalMB != p.usedMB {
		bad("groups hold %d MB, the pool %d", totalMB, p.usedMB)
	}
	if closing != p.closing || queued != p.queued {
		bad("groups have %d closing and %d queued, the pool %d and %d", closing, queued, p.closing, p.queued)
	}
	for _, h := range []*groupHeap[I]{&p.byMemory, &p.bySlots} {
		if len(h.gs) != len(p.byMemory.gs) {
			bad("heaps of %d and %d groups", len(h.gs), len(p.byMemory.gs))
		}
		for i, g := range h.gs {
			if *h.at(g) != i {
				bad("group %v at %d in a heap thinks it is at %d", g.id, i, *h.at(g))
			}
			if i > 0 && h.less(g, h.gs[(i-1)/2]) {
				bad("heap out of order at %d", i)
			}
		}
	}
	return errs
}
