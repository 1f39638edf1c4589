package pool

import "slices"

// live is how many instances of ks are starting, idle or busy.
func (ks *keyState[I]) live() int { return ks.starting + ks.idle.n + ks.busy }

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
	g := p.groupFor(spec)
	g.keys++
	ks := &keyState[I]{
		key:         spec.Key,
		group:       spec.Group,
		grp:         g,
		fc:          fc,
		mb:          max(spec.MemoryMB, 0),
		idleTimeout: spec.IdleTimeout,
		maxRequests: max(spec.MaxRequests, 0),
	}
	if ks.idleTimeout <= 0 {
		ks.idleTimeout = DefaultIdleTimeout
	}
	ks.idle.at = entryByKey[I]
	ks.withLaunch.at = waiterByKey[I]
	ks.queued.at = waiterByKey[I]
	p.keys[spec.Key] = ks
	if spec.Group != "" {
		g.live = append(g.live, ks)
	}
	// The newest key decides the group's limit: it is the fn as it is
	// now, and the keys it drained are on their way out.
	g.maxInstances = max(spec.MaxInstances, 0)
	p.place(g)
	return ks
}

// forget drops a key that has nothing left, so keys of deleted or changed
// fns do not pile up; one with a min-warm is kept, even with no instances
// (its launches may be failing). Instances still closing keep their
// pointer to it.
func (p *Pool[I]) forget(ks *keyState[I]) {
	if ks.forgotten || ks.starting > 0 || ks.busy > 0 || ks.idle.n > 0 ||
		ks.withLaunch.n > 0 || ks.queued.n > 0 || ks.warm.n > 0 {
		return
	}
	ks.forgotten = true
	g := ks.grp
	if p.keys[ks.key] == ks {
		delete(p.keys, ks.key)
		g.live = slices.DeleteFunc(g.live, func(x *keyState[I]) bool { return x == ks })
	}
	delete(p.retired, ks)
	ks.fc.keys--
	if ks.fc.keys == 0 {
		delete(p.fns, fnID{ks.fc.app, ks.fc.fn})
	}
	g.keys--
	p.dropGroup(g)
}
