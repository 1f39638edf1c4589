package pool

import (
	"context"
	"fmt"
	"time"
)

// Back-off of a min-warm key's launches after failures: a fn that dies on
// start must not turn the pool into a crash loop, yet one that died once
// after serving for a while comes back at once.
const (
	warmBackoffMin = 100 * time.Millisecond
	warmBackoffMax = 30 * time.Second
	// warmStableAfter without a failure resets the back-off. It is longer
	// than warmBackoffMax, so a key that keeps failing keeps backing off.
	warmStableAfter = time.Minute
)

// warmState is a key's min-warm: n instances kept alive however idle.
//
// Its reservation is n instances' memory, which no other key may launch
// into. Part of it the key's starting and busy instances already hold;
// floor is the rest, counted in instances: the key's idle instances that
// may not be evicted, plus gap, the instances it lacks. The pool keeps the
// sum of floor in MB, so admission stays O(1).
type warmState[I Instance] struct {
	n          int
	floor, gap int
	launch     func(context.Context) (I, error) // from SetMinWarm, for launches no caller owns
	links      links[keyState[I]]               // on the pool's warming list
	listed     bool

	// Back-off: failedAt is the last failure, backoff the delay it
	// brought, and holding the timer that ends it.
	backoff  time.Duration
	failedAt time.Time
	holding  Timer
	holdGen  uint64

	simGap int // scratch for firstInSlotOrder
	simGen uint64
}

// SetMinWarm keeps at least n instances of spec.Key alive (starting, idle
// or busy), however long they stay idle: it launches what is missing now,
// with no caller waiting for them, and again whenever one dies or is
// closed (discarded, retired, found dead), backing off while launches fail
// or instances die on start. Idle reaping and eviction leave them alone,
// though instances beyond n are reaped and evicted as usual.
//
// The first Spec seen for a Key decides its memory, as for Acquire; a Key
// new to its Group drains the group's other keys, as Acquire would. n
// instances' memory is reserved for the key, so nothing else launches into
// it: if that and every other key's reservation together exceed
// CapacityMB, or n exceeds the group's MaxInstances, SetMinWarm changes
// nothing and returns an error wrapping ErrNoCapacity. n = 0 clears the
// key's min-warm; Drain clears those of the group's keys. Callers queued
// for a launch that can now never fit, with no instance of their key to be
// released to them, get ErrNoCapacity at once.
func (p *Pool[I]) SetMinWarm(spec Spec[I], n int) error {
	if n < 0 {
		return fmt.Errorf("pool: min warm of fn %q is %d, below 0", spec.Fn, n)
	}
	if n > 0 && spec.Launch == nil {
		return fmt.Errorf("pool: spec of fn %q has no Launch func", spec.Fn)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	ks := p.keys[spec.Key]
	if n == 0 {
		if ks != nil {
			p.clearWarm(ks)
		}
		p.unlock()
		return nil
	}
	// What this key would have: its own, or the Spec's if it is new.
	mb, maxInst := max(spec.MemoryMB, 0), max(spec.MaxInstances, 0)
	others := p.reservedMB
	if ks != nil {
		mb, maxInst = ks.mb, ks.grp.maxInstances
		others -= int64(ks.warm.n) * ks.mb
	} else if g := p.groups[groupID{name: spec.Group}]; spec.Group != "" && g != nil {
		// A new key drains these, and their reservations with them.
		for _, old := range g.live {
			others -= int64(old.warm.n) * old.mb
		}
	}
	if need := int64(n) * mb; p.capacityMB > 0 && others+need > p.capacityMB {
		p.mu.Unlock()
		return fmt.Errorf("%w: keeping %d instances of fn %q warm needs %d MB, and %d MB of the pool's %d MB are not kept warm for other fns",
			ErrNoCapacity, n, spec.Fn, need, p.capacityMB-others, p.capacityMB)
	}
	if maxInst > 0 && n > maxInst {
		p.mu.Unlock()
		return fmt.Errorf("%w: fn %q may have %d instances at most, fewer than the %d to keep warm",
			ErrNoCapacity, spec.Fn, maxInst, n)
	}

	ks = p.keyFor(&spec)
	grew := n > ks.warm.n
	p.reservedMB += int64(n-ks.warm.n) * ks.mb
	ks.warm.n = n
	ks.warm.launch = spec.Launch
	p.rewarm(ks)
	if grew {
		p.refuseHopeless()
	} else {
		// Those beyond n are reaped as usual now.
		p.arm(p.clock.Now())
	}
	p.unlock()
	return nil
}

// clearWarm ends ks's min-warm; its instances age out as any others.
func (p *Pool[I]) clearWarm(ks *keyState[I]) {
	if ks.warm.n == 0 {
		return
	}
	p.reservedMB -= int64(ks.warm.n) * ks.mb
	ks.warm.n = 0
	ks.warm.launch = nil
	p.stopHold(ks)
	p.rewarm(ks)
	p.arm(p.clock.Now())
	p.forget(ks)
}

// warmCredit is the memory a launch for ks takes from its own reservation.
func (ks *keyState[I]) warmCredit() int64 {
	if ks.warm.gap > 0 {
		return ks.mb
	}
	return 0
}

// unevictableMB is the memory no launch can have: what instances hold but
// for the idle ones that may be evicted, plus what min-warm keys reserve
// beyond what they hold.
func (p *Pool[I]) unevictableMB() int64 {
	return p.usedMB - p.idleMB + p.floorMB
}

// pinned reports whether e, idle, is one its key's min-warm keeps: closing it
// would leave fewer than n.
func (p *Pool[I]) pinned(e *entry[I]) bool {
	ks := e.ks
	return ks.warm.n > 0 && ks.live() <= ks.warm.n
}

// rewarm brings ks's share of floorMB, its gap, and its place on the
// warming list, in step with its counts; everything that changes those or
// its min-warm calls it.
func (p *Pool[I]) rewarm(ks *keyState[I]) {
	w := &ks.warm
	if w.n == 0 && w.floor == 0 && !w.listed {
		return // gap is 0 whenever floor is
	}
	floor, gap := 0, 0
	if w.n > 0 {
		floor = max(0, w.n-ks.starting-ks.busy)
		gap = max(0, floor-ks.idle.n)
	}
	if floor < w.floor && (p.queued > 0 || p.warming.n > 0) {
		p.admitDue = true // less is held back from everyone
	}
	p.floorMB += int64(floor-w.floor) * ks.mb
	w.floor, w.gap = floor, gap
	switch ready := gap > 0 && w.holding == nil && !p.closed; {
	case ready && !w.listed:
		p.warming.pushBack(ks)
		w.listed = true
		p.admitDue = true
	case !ready && w.listed:
		p.warming.remove(ks)
		w.listed = false
	}
}

// warmOne starts one launch for a min-warm key short of instances, if a
// launch slot, memory and its MaxInstances allow, and reports whether it
// did. admit calls it once no queued caller can launch, so callers go
// first; what it launches takes no memory from them, only what the key
// reserved.
func (p *Pool[I]) warmOne() bool {
	if len(p.launches) >= p.maxLaunches || !p.fits(0) {
		// fits(0): every key on the list may use its reservation, so
		// they all fit or none does.
		return false
	}
	for ks := p.warming.head; ks != nil; ks = ks.warm.links.next {
		if ks.grp.full() {
			continue
		}
		evicted := p.makeRoom(ks)
		if w := ks.queued.head; w != nil {
			// Its caller, queued behind others in memory order, gets
			// it: a launch into the reservation was due anyway.
			p.startLaunch(ks, w, w.launchFn, evicted)
		} else {
			p.startLaunch(ks, nil, ks.warm.launch, evicted)
		}
		return true
	}
	return false
}

// failed backs ks's min-warm launches off after a launch of it failed or
// one of its instances died young.
func (p *Pool[I]) failed(ks *keyState[I]) {
	w := &ks.warm
	if w.n == 0 || p.closed {
		return
	}
	now := p.clock.Now()
	if now.Sub(w.failedAt) >= warmStableAfter {
		w.backoff = 0
	}
	w.backoff = min(max(2*w.backoff, warmBackoffMin), warmBackoffMax)
	w.failedAt = now
	p.stopHold(ks)
	w.holdGen++
	gen := w.holdGen
	// Counted as a pool goroutine while pending, as the reaper's timer.
	p.wg.Add(1)
	w.holding = p.clock.AfterFunc(w.backoff, func() {
		defer p.wg.Done()
		p.mu.Lock()
		if gen == w.holdGen && w.holding != nil {
			w.holding = nil
			p.rewarm(ks)
		}
		p.unlock()
	})
	p.rewarm(ks)
}

// stopHold ends ks's back-off without launching; one whose callback
// already started finds its generation outdated.
func (p *Pool[I]) stopHold(ks *keyState[I]) {
	w := &ks.warm
	if w.holding == nil {
		return
	}
	w.holdGen++
	if w.holding.Stop() {
		p.wg.Done()
	}
	w.holding = nil
}

// noteClose counts a closing instance of a min-warm key that died young
// as a failure. One that served warmStableAfter or longer is replaced at
// once, as is one closed on purpose (discarded alive, retired).
func (p *Pool[I]) noteClose(e *entry[I]) {
	if e.ks.warm.n > 0 && isDone(e.done) && p.clock.Now().Sub(e.upAt) < warmStableAfter {
		p.failed(e.ks)
	}
}

// hopeless reports whether a caller of ks queued for a launch can never
// have one while the reservations stand: it does not fit beside them, no
// reservation of its own can take it, and no instance of its key may be
// released to it.
func (p *Pool[I]) hopeless(ks *keyState[I]) bool {
	return p.capacityMB > 0 && ks.starting+ks.busy == 0 && ks.warm.n == 0 &&
		ks.mb > p.capacityMB-p.reservedMB
}

// refuseHopeless fails the queued callers that a grown reservation left
// hopeless: they would wait for their deadline, holding up everyone behind
// them in memory order.
func (p *Pool[I]) refuseHopeless() {
	for _, ks := range p.allKeys() {
		p.refuseHopelessOf(ks)
	}
}

// refuseHopelessOf does that for the callers of ks, which may have just
// lost its last instance or launch.
func (p *Pool[I]) refuseHopelessOf(ks *keyState[I]) {
	if ks.queued.n == 0 || p.reservedMB == 0 || !p.hopeless(ks) {
		return
	}
	err := p.hopelessErr(ks)
	for w := ks.queued.head; w != nil; w = ks.queued.head {
		p.deliver(w, result[I]{err: err})
	}
}

func (p *Pool[I]) hopelessErr(ks *keyState[I]) error {
	return fmt.Errorf("%w: fn %q needs %d MB, and %d MB of the pool's %d MB are kept warm for other fns",
		ErrNoCapacity, ks.fc.fn, ks.mb, p.reservedMB, p.capacityMB)
}
