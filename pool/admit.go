package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// admit starts launches for queued waiters, in the order next picks them,
// while launch slots and memory admit, evicting idle instances of other
// keys (least recently used first) when that makes room; then, with slots
// still free, launches for min-warm keys short of instances. Everything
// that frees a slot or memory, or changes who is queued, calls it, or sets
// admitDue for unlock to.
func (p *Pool[I]) admit() {
	for !p.closed {
		if w := p.next(); w != nil {
			p.startLaunch(w.ks, w, w.launchFn, p.makeRoom(w.ks))
			continue
		}
		if !p.warmOne() {
			break
		}
	}
	// Its own evictions may have asked for it.
	p.admitDue = false
}

// makeRoom evicts the idle instances a launch of ks needs gone; fits (or
// fitsFor) made sure evicting is enough. Only what the launch needs is
// handed over; the rest of the last one stays held until it is really
// gone. What min-warm keys keep is skipped: at most the sum of their n.
//
// It evicts for this launch's memory only, not for what min-warm keys
// reserved and lack: the launch waits for what it is handed, so anything
// handed beyond that would look free while still held. fits keeps the
// reservations instead: it left enough to evict for their launches.
func (p *Pool[I]) makeRoom(ks *keyState[I]) []*entry[I] {
	if p.capacityMB == 0 {
		return nil
	}
	var evicted []*entry[I]
	over := p.usedMB + ks.mb - p.capacityMB
	for e := p.idle.head; over > 0 && e != nil; {
		next := e.byAge.next
		if p.pinned(e) {
			e = next
			continue
		}
		e.handedOff = min(e.mb, over)
		p.usedMB -= e.handedOff
		p.charge(e.ks.grp, -e.handedOff)
		over -= e.handedOff
		p.closeLocked(e, closeEvicted)
		evicted = append(evicted, e)
		e = next
	}
	return evicted
}

// startLaunch reserves memory for a launch of ks and starts it, for w, or
// for no one (a min-warm launch) when w is nil. The launch waits for the
// evicted instances to be gone, so memory is never over-committed.
func (p *Pool[I]) startLaunch(ks *keyState[I], w *waiter[I], launch func(context.Context) (I, error), evicted []*entry[I]) {
	// Not the caller's ctx: a caller that gives up must not leave a
	// half-started container behind, so the launch runs to its end.
	ctx, cancel := context.WithTimeout(context.Background(), p.launchTimeout)
	l := &launchOp[I]{ks: ks, owner: w, cancel: cancel}
	for _, e := range evicted {
		l.handedMB += e.handedOff
	}
	if w != nil {
		p.dequeue(w)
		ks.queued.remove(w)
		ks.withLaunch.pushBack(w)
		w.where = whereLaunch
		w.launch = l
	} else {
		// Orphaned from the start: the next caller of the key adopts it.
		ks.orphans = append(ks.orphans, l)
	}
	p.launches[l] = struct{}{}
	ks.starting++
	ks.fc.Starting++
	p.touch(ks.fc)
	p.usedMB += ks.mb
	p.memDirty = true
	p.charge(ks.grp, ks.mb)
	p.addLaunching(ks.grp, 1)
	p.addInstances(ks.grp, 1)
	p.rewarm(ks)
	p.wg.Add(1)
	go p.runLaunch(ctx, l, launch, evicted)
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
	// Whatever came of it, its launch slot is free again.
	defer p.admit()
	delete(p.launches, l)
	ks := l.ks
	ks.starting--
	ks.fc.Starting--
	p.touch(ks.fc)
	p.addLaunching(ks.grp, -1)
	w := l.owner
	if w != nil {
		w.launch = nil
	} else {
		ks.orphans = slices.DeleteFunc(ks.orphans, func(x *launchOp[I]) bool { return x == l })
	}
	if err != nil {
		p.usedMB -= ks.mb
		p.memDirty = true
		p.charge(ks.grp, -ks.mb)
		p.addInstances(ks.grp, -1)
		p.rewarm(ks)
		p.failed(ks)
		if w != nil {
			p.deliver(w, result[I]{err: err})
		}
		p.refuseHopelessOf(ks)
		p.forget(ks)
		return
	}

	// It moves from starting to live: the group's instances stay as
	// they are, and the key's counts are right again at its setState.
	e := &entry[I]{
		inst:   inst,
		done:   inst.Done(),
		ks:     ks,
		mb:     ks.mb,
		upAt:   p.clock.Now(),
		gone:   make(chan struct{}),
		closed: make(chan struct{}),
	}
	p.live[e] = struct{}{}
	if p.closed {
		p.closeLocked(e, closeGone) // its caller already got ErrClosed
		return
	}
	if isDone(e.done) {
		p.closeLocked(e, closeGone)
		if w != nil {
			// Its own reason, so the caller can tell a crash or an
			// OOM kill from the pool's failures.
			cause := inst.Err()
			if cause == nil {
				cause = ErrExited
			}
			p.deliver(w, result[I]{err: fmt.Errorf("launching an instance of fn %q: %w", ks.fc.fn, cause)})
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
		p.closeLocked(e, closeGone)
		return
	}
	p.putIdle(e)
}
