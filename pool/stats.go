package pool

import (
	"cmp"
	"slices"
)

// Stats returns a snapshot of the pool.
func (p *Pool[I]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{
		UsedMB:     p.usedMB,
		CapacityMB: p.capacityMB,
		ReservedMB: p.reservedMB,
		Waiting:    p.waiting,
		Queued:     p.queued,
		Launching:  len(p.launches),
		Busy:       p.inflight,
		Closing:    p.closing,
		Keys:       make([]KeyStats, 0, len(p.keys)+len(p.retired)),
		Groups:     make([]GroupStats, 0, len(p.groups)),
	}
	for _, g := range p.groups {
		s.Groups = append(s.Groups, GroupStats{
			Group: g.id.name, Key: g.id.key,
			Launching: g.launching, Queued: g.queued.n, Closing: g.closing,
			MemoryMB:  g.mb,
			Instances: g.instances, MaxInstances: g.maxInstances,
		})
	}
	slices.SortFunc(s.Groups, func(a, b GroupStats) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Key, b.Key))
	})
	for _, ks := range p.allKeys() {
		s.Keys = append(s.Keys, KeyStats{
			Key: ks.key, Group: ks.group, App: ks.fc.app, Fn: ks.fc.fn,
			Starting: ks.starting, Idle: ks.idle.n, Busy: ks.busy,
			Waiting: ks.withLaunch.n + ks.queued.n,
			MinWarm: ks.warm.n,
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

// unlock runs admit if something asked for it, reports the gauges that
// changed, then releases the lock; every critical section that changes
// state ends with it.
func (p *Pool[I]) unlock() {
	if p.admitDue {
		p.admit()
	}
	if len(p.dirty) > 0 {
		h := p.hooks.Changed
		for i, fc := range p.dirty {
			fc.dirty = false
			if h != nil {
				h(fc.app, fc.fn, fc.Counts)
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
