package pool

import (
	"context"
	"fmt"
)

// Drain retires every key of group (a fn that was updated or deleted): idle
// instances close now, busy ones when released, and their min-warm is
// cleared. Calls already waiting for those keys are still served; later
// Acquires start fresh.
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
	// Nothing is kept warm any more, so every key can be forgotten.
	for _, ks := range p.allKeys() {
		p.clearWarm(ks)
	}
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
		p.closeLocked(e, closeGone)
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
		p.closeLocked(e, closeGone)
	}
	p.unlock()
	p.wg.Wait()
	close(p.shutdown)
	return err
}

func (p *Pool[I]) drainGroup(group string) {
	// "" names no group (keys without one are groups of their own only
	// for fairness), so there is nothing to drain.
	if group == "" {
		return
	}
	g := p.groups[groupID{name: group}]
	if g == nil {
		return
	}
	olds := g.live
	g.live = nil
	for _, ks := range olds {
		ks.drained = true
		delete(p.keys, ks.key)
		p.retired[ks] = struct{}{}
		p.clearWarm(ks)
		for e := ks.idle.head; e != nil; e = ks.idle.head {
			p.closeLocked(e, closeGone)
		}
		p.forget(ks)
	}
}
