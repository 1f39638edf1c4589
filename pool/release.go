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
		if p.queued > 0 {
			// Whoever is next in line for memory or a slot may
			// have changed, and may fit where w did not.
			p.admit()
		}
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
	if p.queued > 0 {
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

// closeLocked takes e out of the pool and closes it in the background with
// its own timeout. Its memory stays held, and charged to its group, until
// Close returns (but for what an eviction already passed on): a fn whose
// instances break and hang in Close must not look like it holds nothing.
func (p *Pool[I]) closeLocked(e *entry[I], evicted bool) {
	if e.state == stateClosing {
		return
	}
	p.setState(e, stateClosing)
	delete(p.live, e)
	close(e.gone)
	p.closing++
	e.ks.grp.closing++ // before forget, which may drop the group otherwise
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
