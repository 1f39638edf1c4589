package pool

import "time"

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

// reap closes instances idle longer than their key's IdleTimeout, but for
// those a min-warm keeps. It runs without the lock, from the clock's timer.
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
		// Oldest first: the first one not yet due ends the key, and so
		// does reaching its min-warm; the next one to go idle above
		// that re-arms the timer.
		for e := ks.idle.head; e != nil && (ks.warm.n == 0 || ks.live() > ks.warm.n); e = ks.idle.head {
			at := e.idleSince.Add(ks.idleTimeout)
			if at.After(now) {
				if next.IsZero() || at.Before(next) {
					next = at
				}
				break
			}
			p.closeLocked(e, closeGone)
		}
	}
	if !next.IsZero() {
		p.arm(next)
	}
	p.unlock()
}
