package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

var (
	// ErrNoCapacity means the queue was full, or no instance became free
	// before the caller's deadline; callers answer 503 with Retry-After.
	ErrNoCapacity = errors.New("no capacity")
	// ErrClosed is returned by Acquire once Close has begun.
	ErrClosed = errors.New("pool is shutting down")
)

// Defaults for the zero values in Config and Spec.
const (
	DefaultMaxQueue      = 1024
	DefaultLaunchTimeout = 60 * time.Second
	DefaultCloseTimeout  = 10 * time.Second
	DefaultIdleTimeout   = 30 * time.Second
)

// errExited is what the caller a launch was for gets when the instance was
// already Done by the time it came up (it crashed on start).
var errExited = errors.New("instance exited right after it started")

// Instance is one warm container.
type Instance interface {
	// Done is closed when the instance can no longer serve (it exited or
	// broke). A nil channel means it never reports that on its own.
	Done() <-chan struct{}
	// Close stops and removes it; it must be idempotent.
	Close(ctx context.Context) error
}

// Spec says which instances a call can use and how to start one.
type Spec[I Instance] struct {
	// Key covers everything that changes the container (image digest,
	// format, memory, cpus, config, timeouts). The first Spec seen for a
	// Key decides its MemoryMB and IdleTimeout.
	Key string
	// Group is the fn id: when a new Key shows up for a Group, instances
	// of the group's older keys drain. Empty means no group.
	Group string
	// App and Fn are names for Hooks and error messages only.
	App, Fn string
	// MemoryMB is held while the instance lives (starting, idle, busy or
	// being closed).
	MemoryMB int64
	// IdleTimeout closes instances idle for that long; <= 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Launch starts one instance. Its ctx is the pool's, not the
	// caller's: it ends at Config.LaunchTimeout or when the pool closes.
	// When it fails it must leave nothing behind: the pool frees the
	// memory at once.
	Launch func(ctx context.Context) (I, error)
}

// Config tunes a Pool; the zero value is usable.
type Config struct {
	// CapacityMB is the memory all instances may hold together; 0 means
	// unlimited (see DetectCapacityMB).
	CapacityMB int64
	// MaxQueue bounds the calls waiting for memory across the pool (calls
	// waiting for a launch already under way do not count); 0 means
	// DefaultMaxQueue, negative means no queueing at all.
	MaxQueue int
	// LaunchTimeout bounds one launch regardless of the callers waiting
	// for it; 0 means DefaultLaunchTimeout.
	LaunchTimeout time.Duration
	// CloseTimeout bounds one Instance.Close; 0 means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Clock is nil for RealClock.
	Clock Clock
	Hooks Hooks
}

// Hooks are optional observation callbacks, for metrics and logs; any field
// may be nil. None may block or call back into the Pool.
//
// Changed and MemoryUsed report gauges, so they are called with the pool
// lock held: that keeps them in the order the changes happened, so the last
// value reported is the current one. The others are called without any
// pool lock.
type Hooks struct {
	// Launched reports every launch, failed ones with err set.
	Launched func(app, fn string, took time.Duration, err error)
	// Evicted reports an idle instance closed to make room for another key.
	Evicted func(app, fn string)
	// QueueWait reports how long an Acquire waited, for a launch or in
	// the queue, whatever the outcome; Acquires served by an idle
	// instance at once do not report.
	QueueWait func(app, fn string, waited time.Duration)
	// Closed reports every Instance.Close, with what it returned.
	Closed func(app, fn string, err error)
	// Changed gives the counts for app/fn (all its keys) after they changed.
	Changed func(app, fn string, starting, idle, busy int)
	// MemoryUsed gives the memory held after it changed.
	MemoryUsed func(usedMB, capacityMB int64)
}

// Stats is a snapshot of a Pool.
type Stats struct {
	UsedMB, CapacityMB int64
	Waiting            int // calls blocked in Acquire
	Queued             int // of those, the ones waiting for memory (no launch under way for them)
	Launching          int
	Busy               int // leases held
	Closing            int // instances being closed
	Keys               []KeyStats
}

// KeyStats are the counts of one key, sorted by Key in Stats.
type KeyStats struct {
	Key, Group, App, Fn           string
	Starting, Idle, Busy, Waiting int
	// Drained keys only finish what they have: their instances close as
	// they are released.
	Drained bool
}

type state uint8

const (
	stateNew state = iota
	stateIdle
	stateBusy
	stateClosing
)

type entry[I Instance] struct {
	inst      I
	done      <-chan struct{}
	ks        *keyState[I]
	mb        int64
	state     state
	idleSince time.Time
	// handedOff is the part of mb an eviction already passed on to the
	// launch it makes room for; closing frees only the rest.
	handedOff int64
	gone      chan struct{} // closed when the pool lets go; ends the Done watcher
	closed    chan struct{} // closed once Close returned: the memory is really free
	byKey     links[entry[I]]
	byAge     links[entry[I]]
}

type launchOp[I Instance] struct {
	ks *keyState[I]
	// owner is the waiter that gets a launch error; nil while orphaned
	// (every waiter of the key already has a launch of its own).
	owner  *waiter[I]
	cancel context.CancelFunc
}

type result[I Instance] struct {
	e   *entry[I]
	err error
}

type where uint8

const (
	nowhere where = iota
	whereQueue
	whereLaunch
)

type waiter[I Instance] struct {
	ks       *keyState[I]
	seq      uint64
	launchFn func(context.Context) (I, error)
	ch       chan result[I] // buffered: the single send never blocks
	where    where
	launch   *launchOp[I]
	served   bool
	byKey    links[waiter[I]]
	inQueue  links[waiter[I]]
}

type keyState[I Instance] struct {
	key, group  string
	fc          *fnCounts
	mb          int64
	idleTimeout time.Duration
	drained     bool
	forgotten   bool
	idle        ilist[entry[I]] // oldest first; LIFO pops from the tail
	busy        int
	starting    int
	// Waiters with a launch under way for them and waiters without one.
	// A launch is always given to the oldest waiter without one, so these
	// are the older and the newer part of the key's waiters.
	withLaunch, queued ilist[waiter[I]]
	orphans            []*launchOp[I]
}

// fnCounts aggregates the keys of one app/fn for Hooks.Changed.
type fnCounts struct {
	app, fn              string
	starting, idle, busy int
	keys                 int
	dirty                bool
}

type fnID struct{ app, fn string }

// Pool keeps warm instances of type I; it is safe for concurrent use.
type Pool[I Instance] struct {
	capacityMB    int64
	maxQueue      int
	launchTimeout time.Duration
	closeTimeout  time.Duration
	clock         Clock
	hooks         Hooks

	// wg counts every goroutine the pool starts. Add happens under mu and
	// never after Close saw the pool empty, or from a goroutine already
	// counted, so it cannot race with Wait.
	wg sync.WaitGroup

	// One mutex guards everything below; waiters block on their own
	// channel, never on the mutex.
	mu         sync.Mutex
	closed     bool
	usedMB     int64
	idleMB     int64
	memDirty   bool
	keys       map[string]*keyState[I] // the live key of each Key
	retired    map[*keyState[I]]struct{}
	groups     map[string][]*keyState[I]
	fns        map[fnID]*fnCounts
	dirty      []*fnCounts
	live       map[*entry[I]]struct{} // every instance not yet being closed
	launches   map[*launchOp[I]]struct{}
	idle       ilist[entry[I]]  // all idle instances, least recently used first
	queue      ilist[waiter[I]] // waiters without a launch, first come first
	waiting    int
	seq        uint64
	inflight   int
	closing    int
	leasesDone chan struct{}
	shutdown   chan struct{}
	reapTimer  Timer
	reapAt     time.Time
	reapGen    uint64

	// afterUnlock lets tests wait for any state change without sleeping.
	afterUnlock func()
}

func entryByKey[I Instance](e *entry[I]) *links[entry[I]]      { return &e.byKey }
func entryByAge[I Instance](e *entry[I]) *links[entry[I]]      { return &e.byAge }
func waiterByKey[I Instance](w *waiter[I]) *links[waiter[I]]   { return &w.byKey }
func waiterInQueue[I Instance](w *waiter[I]) *links[waiter[I]] { return &w.inQueue }

// New returns an empty pool.
func New[I Instance](cfg Config) *Pool[I] {
	p := &Pool[I]{
		capacityMB:    max(cfg.CapacityMB, 0),
		maxQueue:      cfg.MaxQueue,
		launchTimeout: cmp.Or(cfg.LaunchTimeout, DefaultLaunchTimeout),
		closeTimeout:  cmp.Or(cfg.CloseTimeout, DefaultCloseTimeout),
		clock:         cfg.Clock,
		hooks:         cfg.Hooks,
		keys:          make(map[string]*keyState[I]),
		retired:       make(map[*keyState[I]]struct{}),
		groups:        make(map[string][]*keyState[I]),
		fns:           make(map[fnID]*fnCounts),
		live:          make(map[*entry[I]]struct{}),
		launches:      make(map[*launchOp[I]]struct{}),
		shutdown:      make(chan struct{}),
	}
	switch {
	case p.maxQueue == 0:
		p.maxQueue = DefaultMaxQueue
	case p.maxQueue < 0:
		p.maxQueue = 0
	}
	if p.clock == nil {
		p.clock = RealClock{}
	}
	p.idle.at = entryByAge[I]
	p.queue.at = waiterInQueue[I]
	if h := p.hooks.MemoryUsed; h != nil {
		h(0, p.capacityMB)
	}
	return p
}

// Acquire returns a lease on an instance for spec.Key: an idle one, a new
// one, or one released by another call while this one waited. It waits at
// most until ctx is done; a deadline that passes while waiting gives an
// ErrNoCapacity, a cancelled ctx gives ctx.Err(). A launch started for this
// call that fails returns the launch error.
func (p *Pool[I]) Acquire(ctx context.Context, spec Spec[I]) (*Lease[I], error) {
	if spec.Launch == nil {
		return nil, fmt.Errorf("pool: spec of fn %q has no Launch func", spec.Fn)
	}
	if ctx.Err() != nil {
		return nil, waitErr(ctx, spec.Fn)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	if p.capacityMB > 0 && spec.MemoryMB > p.capacityMB {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: fn %q needs %d MB, more than the %d MB the pool has",
			ErrNoCapacity, spec.Fn, spec.MemoryMB, p.capacityMB)
	}
	ks := p.keyFor(&spec)
	for e := ks.idle.tail; e != nil; e = ks.idle.tail {
		if isDone(e.done) {
			// Its watcher has not got to it yet.
			p.closeLocked(e, false)
			continue
		}
		p.setState(e, stateBusy)
		p.inflight++
		p.unlock()
		return &Lease[I]{p: p, e: e}, nil
	}
	if ks.forgotten {
		ks = p.keyFor(&spec)
	}

	w := &waiter[I]{ks: ks, seq: p.seq, launchFn: spec.Launch, ch: make(chan result[I], 1)}
	p.seq++
	p.waiting++
	if n := len(ks.orphans); n > 0 {
		// A launch whose caller gave up is already on its way: take it
		// over rather than start another.
		l := ks.orphans[n-1]
		ks.orphans = ks.orphans[:n-1]
		l.owner, w.launch, w.where = w, l, whereLaunch
		ks.withLaunch.pushBack(w)
	} else {
		w.where = whereQueue
		ks.queued.pushBack(w)
		p.queue.pushBack(w)
		p.admit()
		if w.where == whereQueue && p.queue.n > p.maxQueue {
			p.removeWaiter(w)
			p.unlock()
			return nil, fmt.Errorf("%w: %d calls already queued, fn %q cannot wait",
				ErrNoCapacity, p.maxQueue, spec.Fn)
		}
	}
	since := p.clock.Now()
	p.unlock()

	select {
	case r := <-w.ch:
		p.reportWait(ks, since)
		if r.err != nil {
			return nil, r.err
		}
		return &Lease[I]{p: p, e: r.e}, nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	if w.served {
		p.mu.Unlock()
		r := <-w.ch
		if r.err != nil {
			p.reportWait(ks, since)
			return nil, r.err
		}
		// Served just as ctx ended: the caller has no time left to
		// use it, so it goes to the next caller.
		(&Lease[I]{p: p, e: r.e}).Release()
	} else {
		p.removeWaiter(w)
		p.admit()
		p.unlock()
	}
	p.reportWait(ks, since)
	return nil, waitErr(ctx, spec.Fn)
}

func waitErr(ctx context.Context, fn string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: no instance for fn %q became free before the deadline", ErrNoCapacity, fn)
	}
	return ctx.Err()
}

func (p *Pool[I]) reportWait(ks *keyState[I], since time.Time) {
	if h := p.hooks.QueueWait; h != nil {
		h(ks.fc.app, ks.fc.fn, p.clock.Now().Sub(since))
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Lease is one call's exclusive hold on an instance. Exactly one of Release
// or Discard should be called; further calls are no-ops.
type Lease[I Instance] struct {
	p    *Pool[I]
	e    *entry[I]
	done bool // guarded by p.mu
}

// Instance is the leased instance.
func (l *Lease[I]) Instance() I { return l.e.inst }

// Release gives the instance back: to the oldest caller waiting for its key,
// else to the idle pool. An instance that is Done, or whose key was drained
// and has nobody left waiting for it, is closed instead.
func (l *Lease[I]) Release() { l.finish(false) }

// Discard closes the instance, never to be reused, and frees its memory once
// it is gone. Use it whenever the instance may be in a bad state.
func (l *Lease[I]) Discard() { l.finish(true) }

func (l *Lease[I]) finish(discard bool) {
	p := l.p
	p.mu.Lock()
	if l.done {
		p.mu.Unlock()
		return
	}
	l.done = true
	// A lease still out when Close gave up waiting had its instance
	// closed under it; nothing is left to give back then.
	if e := l.e; e.state == stateBusy {
		p.inflight--
		if discard {
			p.closeLocked(e, false)
		} else {
			p.putBack(e)
		}
		if p.inflight == 0 && p.leasesDone != nil {
			close(p.leasesDone)
			p.leasesDone = nil
		}
	}
	p.unlock()
}

// Drain retires every key of group (a fn that was updated or deleted): idle
// instances close now, busy ones when released. Calls already waiting for
// those keys are still served; later Acquires start fresh.
func (p *Pool[I]) Drain(group string) {
	p.mu.Lock()
	p.drainGroup(group)
	p.unlock()
}

// Close shuts the pool down: new Acquires fail with ErrClosed, so do the
// ones waiting, launches are cancelled and idle instances closed. It then
// waits, until ctx is done, for the leases still out; after that every
// instance is closed, even busy ones. It returns once all closes and all of
// the pool's goroutines are finished, and an error if leases were still out
// when ctx ended. Calling it again waits for the first call to finish.
func (p *Pool[I]) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		select {
		case <-p.shutdown:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.closed = true
	p.stopReaper()
	for l := range p.launches {
		l.cancel()
	}
	for _, ks := range p.allKeys() {
		for w := ks.withLaunch.head; w != nil; w = ks.withLaunch.head {
			p.deliver(w, result[I]{err: ErrClosed})
		}
		for w := ks.queued.head; w != nil; w = ks.queued.head {
			p.deliver(w, result[I]{err: ErrClosed})
		}
	}
	for e := p.idle.head; e != nil; e = p.idle.head {
		p.closeLocked(e, false)
	}
	var leases chan struct{}
	if p.inflight > 0 {
		p.leasesDone = make(chan struct{})
		leases = p.leasesDone
	}
	p.unlock()

	var err error
	if leases != nil {
		select {
		case <-leases:
		case <-ctx.Done():
			p.mu.Lock()
			err = fmt.Errorf("pool: %d leases still held at shutdown: %w", p.inflight, ctx.Err())
			p.mu.Unlock()
		}
	}

	p.mu.Lock()
	p.leasesDone = nil
	for e := range p.live {
		p.closeLocked(e, false)
	}
	p.unlock()
	p.wg.Wait()
	close(p.shutdown)
	return err
}

// Stats returns a snapshot of the pool.
func (p *Pool[I]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{
		UsedMB:     p.usedMB,
		CapacityMB: p.capacityMB,
		Waiting:    p.waiting,
		Queued:     p.queue.n,
		Launching:  len(p.launches),
		Busy:       p.inflight,
		Closing:    p.closing,
		Keys:       make([]KeyStats, 0, len(p.keys)+len(p.retired)),
	}
	for _, ks := range p.allKeys() {
		s.Keys = append(s.Keys, KeyStats{
			Key: ks.key, Group: ks.group, App: ks.fc.app, Fn: ks.fc.fn,
			Starting: ks.starting, Idle: ks.idle.n, Busy: ks.busy,
			Waiting: ks.withLaunch.n + ks.queued.n,
			Drained: ks.drained,
		})
	}
	slices.SortFunc(s.Keys, func(a, b KeyStats) int {
		if c := cmp.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		// The live key after the drained ones of the same Key.
		if a.Drained == b.Drained {
			return 0
		}
		if a.Drained {
			return -1
		}
		return 1
	})
	return s
}

// Everything below runs with p.mu held unless it says otherwise.

// unlock reports the gauges that changed, then releases the lock; every
// critical section that changes state ends with it.
func (p *Pool[I]) unlock() {
	if len(p.dirty) > 0 {
		h := p.hooks.Changed
		for i, fc := range p.dirty {
			fc.dirty = false
			if h != nil {
				h(fc.app, fc.fn, fc.starting, fc.idle, fc.busy)
			}
			p.dirty[i] = nil
		}
		p.dirty = p.dirty[:0]
	}
	if p.memDirty {
		p.memDirty = false
		if h := p.hooks.MemoryUsed; h != nil {
			h(p.usedMB, p.capacityMB)
		}
	}
	p.mu.Unlock()
	if p.afterUnlock != nil {
		p.afterUnlock()
	}
}

func (p *Pool[I]) touch(fc *fnCounts) {
	if !fc.dirty {
		fc.dirty = true
		p.dirty = append(p.dirty, fc)
	}
}

func (p *Pool[I]) allKeys() []*keyState[I] {
	all := make([]*keyState[I], 0, len(p.keys)+len(p.retired))
	for _, ks := range p.keys {
		all = append(all, ks)
	}
	for ks := range p.retired {
		all = append(all, ks)
	}
	return all
}

// keyFor returns the live state of spec.Key, creating it (and draining the
// group's other keys) when it is new.
func (p *Pool[I]) keyFor(spec *Spec[I]) *keyState[I] {
	if ks := p.keys[spec.Key]; ks != nil {
		return ks
	}
	if spec.Group != "" {
		p.drainGroup(spec.Group)
	}
	id := fnID{spec.App, spec.Fn}
	fc := p.fns[id]
	if fc == nil {
		fc = &fnCounts{app: spec.App, fn: spec.Fn}
		p.fns[id] = fc
	}
	fc.keys++
	ks := &keyState[I]{
		key:         spec.Key,
		group:       spec.Group,
		fc:          fc,
		mb:          max(spec.MemoryMB, 0),
		idleTimeout: spec.IdleTimeout,
	}
	if ks.idleTimeout <= 0 {
		ks.idleTimeout = DefaultIdleTimeout
	}
	ks.idle.at = entryByKey[I]
	ks.withLaunch.at = waiterByKey[I]
	ks.queued.at = waiterByKey[I]
	p.keys[spec.Key] = ks
	if spec.Group != "" {
		p.groups[spec.Group] = append(p.groups[spec.Group], ks)
	}
	return ks
}

func (p *Pool[I]) drainGroup(group string) {
	olds := p.groups[group]
	delete(p.groups, group)
	for _, ks := range olds {
		ks.drained = true
		delete(p.keys, ks.key)
		p.retired[ks] = struct{}{}
		for e := ks.idle.head; e != nil; e = ks.idle.head {
			p.closeLocked(e, false)
		}
		p.forget(ks)
	}
}

// forget drops a key that has nothing left, so keys of deleted or changed
// fns do not pile up. Instances still closing keep their pointer to it.
func (p *Pool[I]) forget(ks *keyState[I]) {
	if ks.forgotten || ks.starting > 0 || ks.busy > 0 || ks.idle.n > 0 ||
		ks.withLaunch.n > 0 || ks.queued.n > 0 {
		return
	}
	ks.forgotten = true
	if p.keys[ks.key] == ks {
		delete(p.keys, ks.key)
		if ks.group != "" {
			g := slices.DeleteFunc(p.groups[ks.group], func(x *keyState[I]) bool { return x == ks })
			if len(g) == 0 {
				delete(p.groups, ks.group)
			} else {
				p.groups[ks.group] = g
			}
		}
	}
	delete(p.retired, ks)
	ks.fc.keys--
	if ks.fc.keys == 0 {
		delete(p.fns, fnID{ks.fc.app, ks.fc.fn})
	}
}

// setState moves e to s, keeping every count and list in step.
func (p *Pool[I]) setState(e *entry[I], s state) {
	ks, fc := e.ks, e.ks.fc
	switch e.state {
	case stateIdle:
		ks.idle.remove(e)
		p.idle.remove(e)
		p.idleMB -= e.mb
		fc.idle--
	case stateBusy:
		ks.busy--
		fc.busy--
	}
	e.state = s
	switch s {
	case stateIdle:
		e.idleSince = p.clock.Now()
		ks.idle.pushBack(e)
		p.idle.pushBack(e)
		p.idleMB += e.mb
		fc.idle++
	case stateBusy:
		ks.busy++
		fc.busy++
	}
	p.touch(fc)
}

// admit starts launches for queued waiters, oldest first, while memory
// admits, evicting idle instances of other keys when that makes room. It
// stops at the first waiter that cannot fit, so a big fn is not starved by
// a stream of small ones.
func (p *Pool[I]) admit() {
	for !p.closed && p.queue.head != nil {
		w := p.queue.head
		var evicted []*entry[I]
		if over := p.usedMB + w.ks.mb - p.capacityMB; p.capacityMB > 0 && over > 0 {
			if p.idleMB < over {
				return // evicting everything idle would not be enough
			}
			// No idle instance is of w's key: it would have been
			// handed to w. So these are all other keys. Only what
			// the launch needs is handed over; the rest of the last
			// one stays held until it is really gone.
			for over > 0 {
				e := p.idle.head
				e.handedOff = min(e.mb, over)
				p.usedMB -= e.handedOff
				over -= e.handedOff
				p.closeLocked(e, true)
				evicted = append(evicted, e)
			}
		}
		p.startLaunch(w, evicted)
	}
}

// startLaunch reserves w's memory and launches for it. The launch waits for
// the evicted instances to be gone, so memory is never over-committed.
func (p *Pool[I]) startLaunch(w *waiter[I], evicted []*entry[I]) {
	ks := w.ks
	p.queue.remove(w)
	ks.queued.remove(w)
	ks.withLaunch.pushBack(w)
	w.where = whereLaunch

	// Not the caller's ctx: a caller that gives up must not leave a
	// half-started container behind, so the launch runs to its end.
	ctx, cancel := context.WithTimeout(context.Background(), p.launchTimeout)
	l := &launchOp[I]{ks: ks, owner: w, cancel: cancel}
	w.launch = l
	p.launches[l] = struct{}{}
	ks.starting++
	ks.fc.starting++
	p.touch(ks.fc)
	p.usedMB += ks.mb
	p.memDirty = true
	p.wg.Add(1)
	go p.runLaunch(ctx, l, w.launchFn, evicted)
}

// runLaunch runs without the lock.
func (p *Pool[I]) runLaunch(ctx context.Context, l *launchOp[I], launch func(context.Context) (I, error), evicted []*entry[I]) {
	defer p.wg.Done()
	defer l.cancel()
	for _, e := range evicted {
		select {
		case <-e.closed:
		case <-ctx.Done():
		}
	}
	start := p.clock.Now()
	var inst I
	err := ctx.Err()
	if err == nil {
		inst, err = launch(ctx)
		if err == nil && any(inst) == nil {
			err = errors.New("launch returned neither an instance nor an error")
		}
	}
	fc := l.ks.fc
	if h := p.hooks.Launched; h != nil {
		h(fc.app, fc.fn, p.clock.Now().Sub(start), err)
	}
	if err != nil {
		err = fmt.Errorf("launching an instance of fn %q: %w", fc.fn, err)
	}
	p.mu.Lock()
	p.launchDone(l, inst, err)
	p.unlock()
}

func (p *Pool[I]) launchDone(l *launchOp[I], inst I, err error) {
	delete(p.launches, l)
	ks := l.ks
	ks.starting--
	ks.fc.starting--
	p.touch(ks.fc)
	w := l.owner
	if w != nil {
		w.launch = nil
	} else {
		ks.orphans = slices.DeleteFunc(ks.orphans, func(x *launchOp[I]) bool { return x == l })
	}
	if err != nil {
		p.usedMB -= ks.mb
		p.memDirty = true
		if w != nil {
			p.deliver(w, result[I]{err: err})
		}
		p.forget(ks)
		p.admit()
		return
	}

	e := &entry[I]{
		inst:   inst,
		done:   inst.Done(),
		ks:     ks,
		mb:     ks.mb,
		gone:   make(chan struct{}),
		closed: make(chan struct{}),
	}
	p.live[e] = struct{}{}
	if p.closed {
		p.closeLocked(e, false) // its caller already got ErrClosed
		return
	}
	if isDone(e.done) {
		p.closeLocked(e, false)
		if w != nil {
			p.deliver(w, result[I]{err: fmt.Errorf("launching an instance of fn %q: %w", ks.fc.fn, errExited)})
		}
		return
	}
	p.wg.Add(1)
	go p.watch(e)
	if w == nil {
		w = ks.headWaiter()
	}
	if w != nil {
		p.serve(w, e)
		return
	}
	if ks.drained {
		p.closeLocked(e, false)
		return
	}
	p.putIdle(e)
}

// watch closes e as soon as it dies while idle; a busy one is dealt with
// when its lease ends. It runs without the lock.
func (p *Pool[I]) watch(e *entry[I]) {
	defer p.wg.Done()
	select {
	case <-e.done:
		p.mu.Lock()
		if e.state == stateIdle {
			p.closeLocked(e, false)
		}
		p.unlock()
	case <-e.gone:
	}
}

// putBack is where a busy instance goes when its call is done.
func (p *Pool[I]) putBack(e *entry[I]) {
	ks := e.ks
	if p.closed || isDone(e.done) {
		p.closeLocked(e, false)
		return
	}
	if w := ks.headWaiter(); w != nil {
		p.serve(w, e)
		return
	}
	if ks.drained {
		p.closeLocked(e, false)
		return
	}
	p.putIdle(e)
}

func (p *Pool[I]) putIdle(e *entry[I]) {
	p.setState(e, stateIdle)
	p.arm(e.idleSince.Add(e.ks.idleTimeout))
	if p.queue.n > 0 {
		// Someone waits for memory this instance could give up.
		p.admit()
	}
}

// headWaiter is the key's oldest waiter, with or without a launch.
func (ks *keyState[I]) headWaiter() *waiter[I] {
	a, b := ks.withLaunch.head, ks.queued.head
	switch {
	case a == nil:
		return b
	case b == nil || a.seq < b.seq:
		return a
	default:
		return b
	}
}

func (p *Pool[I]) serve(w *waiter[I], e *entry[I]) {
	p.setState(e, stateBusy)
	p.inflight++
	p.deliver(w, result[I]{e: e})
}

func (p *Pool[I]) deliver(w *waiter[I], r result[I]) {
	p.removeWaiter(w)
	w.served = true
	w.ch <- r
}

// removeWaiter takes w off every list. A launch under way for it goes to
// the key's oldest waiter without one, or is orphaned: it still counts as
// serving one future waiter, so no extra launch starts for that one.
func (p *Pool[I]) removeWaiter(w *waiter[I]) {
	ks := w.ks
	switch w.where {
	case whereQueue:
		p.queue.remove(w)
		ks.queued.remove(w)
	case whereLaunch:
		ks.withLaunch.remove(w)
		if l := w.launch; l != nil {
			w.launch = nil
			if x := ks.queued.head; x != nil {
				p.queue.remove(x)
				ks.queued.remove(x)
				ks.withLaunch.pushBack(x)
				x.where, x.launch, l.owner = whereLaunch, l, x
			} else {
				l.owner = nil
				ks.orphans = append(ks.orphans, l)
			}
		}
	}
	w.where = nowhere
	p.waiting--
	p.forget(ks)
}

// closeLocked takes e out of the pool and closes it in the background with
// its own timeout. Its memory stays held until Close returns (but for what
// an eviction already passed on).
func (p *Pool[I]) closeLocked(e *entry[I], evicted bool) {
	if e.state == stateClosing {
		return
	}
	p.setState(e, stateClosing)
	delete(p.live, e)
	close(e.gone)
	p.closing++
	p.wg.Add(1)
	go p.closeInstance(e, evicted)
	p.forget(e.ks)
}

// closeInstance runs without the lock.
func (p *Pool[I]) closeInstance(e *entry[I], evicted bool) {
	defer p.wg.Done()
	fc := e.ks.fc
	if h := p.hooks.Evicted; evicted && h != nil {
		h(fc.app, fc.fn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.closeTimeout)
	err := e.inst.Close(ctx)
	cancel()
	if h := p.hooks.Closed; h != nil {
		h(fc.app, fc.fn, err)
	}
	p.mu.Lock()
	p.closing--
	p.usedMB -= e.mb - e.handedOff
	// Reported even when unchanged: it tells observers a close finished.
	p.memDirty = true
	close(e.closed)
	p.admit()
	p.unlock()
}

// arm makes sure the reaper runs by at. One timer serves the whole pool and
// is only moved earlier, so the hot path of Release rarely touches it: a
// timer that fires early finds nothing due and re-arms for the next expiry.
func (p *Pool[I]) arm(at time.Time) {
	if p.closed || (p.reapTimer != nil && !at.Before(p.reapAt)) {
		return
	}
	p.stopReaper()
	gen := p.reapGen
	p.reapAt = at
	// The pending callback counts as a pool goroutine, so Close waits for
	// one that is already running; it is uncounted again when it ends, or
	// when Stop keeps it from ever running.
	p.wg.Add(1)
	p.reapTimer = p.clock.AfterFunc(max(at.Sub(p.clock.Now()), 0), func() {
		defer p.wg.Done()
		p.reap(gen)
	})
}

// stopReaper cancels the pending reap. One whose callback already started
// finds its generation outdated and does nothing.
func (p *Pool[I]) stopReaper() {
	p.reapGen++
	if p.reapTimer != nil && p.reapTimer.Stop() {
		p.wg.Done()
	}
	p.reapTimer = nil
}

// reap closes instances idle longer than their key's IdleTimeout. It runs
// without the lock, from the clock's timer.
func (p *Pool[I]) reap(gen uint64) {
	p.mu.Lock()
	if p.closed || gen != p.reapGen {
		p.mu.Unlock() // stopped too late
		return
	}
	p.reapTimer = nil
	now := p.clock.Now()
	var next time.Time
	for _, ks := range p.keys {
		// Oldest first: the first one not yet due ends the key.
		for e := ks.idle.head; e != nil; e = ks.idle.head {
			at := e.idleSince.Add(ks.idleTimeout)
			if at.After(now) {
				if next.IsZero() || at.Before(next) {
					next = at
				}
				break
			}
			p.closeLocked(e, false)
		}
	}
	if !next.IsZero() {
		p.arm(next)
	}
	p.unlock()
}
