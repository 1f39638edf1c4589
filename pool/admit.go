package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// admit starts launches for queued waiters, in the order next picks them,
// while launch slots and memory admit, evicting idle instances of other
// keys (least recently used first) when that makes room. Everything that
// frees a slot or memory, or changes who is queued, calls it.
func (p *Pool[I]) admit() {
	for !p.closed {
		w := p.next()
		if w == nil {
			return
		}
		var evicted []*entry[I]
		// next made sure evicting idle instances is enough. Only what
		// the launch needs is handed over; the rest of the last one
		// stays held until it is really gone.
		for over := p.usedMB + w.ks.mb - p.capacityMB; p.capacityMB > 0 && over > 0; {
			e := p.idle.head
			e.handedOff = min(e.mb, over)
			p.usedMB -= e.handedOff
			p.charge(e.ks.grp, -e.handedOff)
			over -= e.handedOff
			p.closeLocked(e, true)
			evicted = append(evicted, e)
		}
		p.startLaunch(w, evicted)
	}
}

// startLaunch reserves w's memory and launches for it. The launch waits for
// the evicted instances to be gone, so memory is never over-committed.
func (p *Pool[I]) startLaunch(w *waiter[I], evicted []*entry[I]) {
	ks := w.ks
	p.dequeue(w)
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
	p.charge(ks.grp, ks.mb)
	p.addLaunching(ks.grp, 1)
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
	// Whatever came of it, its launch slot is free again.
	defer p.admit()
	delete(p.launches, l)
	ks := l.ks
	ks.starting--
	ks.fc.starting--
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
		if w != nil {
			p.deliver(w, result[I]{err: err})
		}
		p.forget(ks)
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
		p.closeLocked(e, false)
		return
	}
	p.putIdle(e)
}
