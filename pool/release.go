package pool

import "context"

// watch closes e as soon as it dies while idle; a busy one is dealt with
// when its lease ends. It runs without the lock.
func (p *Pool[I]) watch(e *entry[I]) {
	defer p.wg.Done()
	select {
	case <-e.done:
		p.mu.Lock()
		if e.state == stateIdle {
			p.closeLocked(e, closeGone)
		}
		p.unlock()
	case <-e.gone:
	}
}

// putBack is where a busy instance goes when its call is done.
func (p *Pool[I]) putBack(e *entry[I]) {
	ks := e.ks
	if p.closed || isDone(e.done) {
		p.closeLocked(e, closeGone)
		return
	}
	if ks.maxRequests > 0 && e.leases >= ks.maxRequests {
		// Its waiters, if any, get a launch in its place: closing it
		// makes room under MaxInstances at once, and its memory as
		// soon as it is gone.
		p.closeLocked(e, closeRetired)
		return
	}
	if w := ks.headWaiter(); w != nil {
		p.serve(w, e)
		if p.queued > 0 {
			// Whoever is next in line for memory or a slot may
			// have changed, and may fit where w did not.
			p.admit()
		}
		return
	}
	if ks.drained {
		p.closeLocked(e, closeGone)
		return
	}
	p.putIdle(e)
}

func (p *Pool[I]) putIdle(e *entry[I]) {
	p.setState(e, stateIdle)
	p.arm(e.idleSince.Add(e.ks.idleTimeout))
	if p.queued > 0 || p.warming.n > 0 {
		// Someone waits for memory this instance could give up.
		p.admit()
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
		fc.Idle--
	case stateBusy:
		ks.busy--
		fc.Busy--
	}
	e.state = s
	switch s {
	case stateIdle:
		e.idleSince = p.clock.Now()
		ks.idle.pushBack(e)
		p.idle.pushBack(e)
		p.idleMB += e.mb
		fc.Idle++
	case stateBusy:
		ks.busy++
		fc.Busy++
		e.leases++
	}
	p.touch(fc)
	if ks.warm.n > 0 {
		p.rewarm(ks)
	}
}

// closeReason says why closeLocked closes an instance, for Hooks.
type closeReason uint8

const (
	closeGone    closeReason = iota // dead, discarded, drained, reaped or shut down
	closeEvicted                    // to make room for another key
	closeRetired                    // it served MaxRequests leases
)

// closeLocked takes e out of the pool and closes it in the background with
// its own timeout. Its memory stays held, and charged to its group, until
// Close returns (but for what an eviction already passed on): a fn whose
// instances break and hang in Close must not look like it holds nothing.
// It stops counting against MaxInstances at once.
func (p *Pool[I]) closeLocked(e *entry[I], why closeReason) {
	if e.state == stateClosing {
		return
	}
	p.setState(e, stateClosing)
	delete(p.live, e)
	close(e.gone)
	p.closing++
	e.ks.grp.closing++ // before forget, which may drop the group otherwise
	p.addInstances(e.ks.grp, -1)
	p.noteClose(e)
	p.wg.Add(1)
	go p.closeInstance(e, why)
	p.refuseHopelessOf(e.ks)
	p.forget(e.ks)
}

// closeInstance runs without the lock.
func (p *Pool[I]) closeInstance(e *entry[I], why closeReason) {
	defer p.wg.Done()
	fc := e.ks.fc
	switch why {
	case closeEvicted:
		if h := p.hooks.Evicted; h != nil {
			h(fc.app, fc.fn)
		}
	case closeRetired:
		if h := p.hooks.Retired; h != nil {
			h(fc.app, fc.fn)
		}
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
	g := e.ks.grp
	p.charge(g, -(e.mb - e.handedOff))
	g.closing--
	p.dropGroup(g)
	// Reported even when unchanged: it tells observers a close finished.
	p.memDirty = true
	close(e.closed)
	p.admit()
	p.unlock()
}
