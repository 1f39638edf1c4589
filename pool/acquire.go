package pool

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Acquire returns a lease on an instance for spec.Key: an idle one, a new
// one, or one released by another call while this one waited. It waits at
// most until ctx is done; a deadline that passes while waiting gives an
// ErrNoCapacity, a cancelled ctx gives ctx.Err(). A launch started for this
// call that fails returns the launch error. A call that would have to wait
// for a launch that cannot fit beside the min-warm reservations of other
// keys, with no instance of its key to be released to it, gets
// ErrNoCapacity as soon as that is so.
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
			p.closeLocked(e, closeGone)
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

	if p.hopeless(ks) {
		err := p.hopelessErr(ks)
		p.forget(ks)
		p.unlock()
		return nil, err
	}

	w := &waiter[I]{ks: ks, seq: p.seq, launchFn: spec.Launch, ch: make(chan result[I], 1)}
	p.seq++
	p.waiting++
	ks.fc.Waiting++
	p.touch(ks.fc)
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
		p.enqueue(w)
		p.admit()
		// Over its group's share it is refused, however much of the
		// other groups' shares is unused: a crash-looping fn cannot
		// fill the queue and leave other fns nowhere to wait.
		if w.where == whereQueue && ks.grp.queued.n > p.queueShare() {
			n, share := ks.grp.queued.n-1, p.queueShare()
			p.removeWaiter(w)
			p.admit()
			p.unlock()
			return nil, fmt.Errorf("%w: %d calls of fn %q already queued, its share of the queue is %d",
				ErrNoCapacity, n, spec.Fn, share)
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
		r := <-w.ch // sent along with served
		if r.err == nil {
			r.e.leases-- // it serves nobody, so MaxRequests does not count it
		}
		p.mu.Unlock()
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
			p.closeLocked(e, closeGone)
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
		p.dequeue(w)
		ks.queued.remove(w)
	case whereLaunch:
		ks.withLaunch.remove(w)
		if l := w.launch; l != nil {
			w.launch = nil
			if x := ks.queued.head; x != nil {
				p.dequeue(x)
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
	ks.fc.Waiting--
	p.touch(ks.fc)
	p.forget(ks)
}
