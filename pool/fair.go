package pool

import (
	"container/heap"
	"math"
)

// Fairness between groups: a crash-looping or hanging fn must not take
// launch slots, memory or queue slots from the others. All of it is only
// consulted while calls are queued, so the hot path of Acquire and Release
// never touches it.

// groupID names a group. A key without a group is one of its own, under a
// name that no Spec.Group can take.
type groupID struct{ name, key string }

// group is what fairness is measured on. It outlives its keys while their
// instances are still being closed, since that memory stays charged to it.
type group[I Instance] struct {
	id groupID
	// live are its keys not drained, so that a new key can drain the
	// older ones; only named groups keep them.
	live    []*keyState[I]
	keys    int // keys not forgotten
	closing int // instances being closed
	// mb is the memory it holds: starting, idle, busy and closing
	// instances, but for what an eviction already handed to a launch
	// (that is charged to the launch's group).
	mb        int64
	launching int              // launches in flight, orphans included
	queued    ilist[waiter[I]] // waiters without a launch, oldest first
	// instances are its keys' starting, idle and busy ones; no launch
	// starts while that is maxInstances (0: no limit) or more.
	instances, maxInstances int
	// Positions in the pool's heaps; -1 while it has nobody queued who
	// may launch.
	memoryAt, slotsAt int
}

// full reports whether g's MaxInstances keeps it from launching.
func (g *group[I]) full() bool { return g.maxInstances > 0 && g.instances >= g.maxInstances }

func memoryAt[I Instance](g *group[I]) *int { return &g.memoryAt }
func slotsAt[I Instance](g *group[I]) *int  { return &g.slotsAt }

// lessMemory orders groups for memory: the one holding the least first,
// then the one whose oldest waiter came first.
func lessMemory[I Instance](a, b *group[I]) bool {
	if a.mb != b.mb {
		return a.mb < b.mb
	}
	return a.queued.head.seq < b.queued.head.seq
}

// lessSlots orders groups for launch slots: the one with the fewest
// launches in flight first, then the one whose oldest waiter came first.
func lessSlots[I Instance](a, b *group[I]) bool {
	if a.launching != b.launching {
		return a.launching < b.launching
	}
	return a.queued.head.seq < b.queued.head.seq
}

// groupFor returns the group a new key of spec joins.
func (p *Pool[I]) groupFor(spec *Spec[I]) *group[I] {
	id := groupID{name: spec.Group}
	if spec.Group == "" {
		id.key = spec.Key
	}
	g := p.groups[id]
	if g == nil {
		g = &group[I]{id: id, memoryAt: -1, slotsAt: -1}
		g.queued.at = waiterInQueue[I]
		p.groups[id] = g
	}
	return g
}

// dropGroup forgets g once nothing refers to it any more; by then it holds
// no memory and has no launches or waiters.
func (p *Pool[I]) dropGroup(g *group[I]) {
	if g.keys == 0 && g.closing == 0 {
		delete(p.groups, g.id)
	}
}

// enqueue puts w, a waiter without a launch, at the back of its group's
// queue.
func (p *Pool[I]) enqueue(w *waiter[I]) {
	g := w.ks.grp
	g.queued.pushBack(w)
	p.queued++
	p.queuedMB += w.ks.mb
	w.ks.fc.Queued++
	p.touch(w.ks.fc)
	if g.queued.n == 1 {
		p.queuedGrps++
		p.place(g)
	}
}

// dequeue takes w off its group's queue.
func (p *Pool[I]) dequeue(w *waiter[I]) {
	g := w.ks.grp
	head := g.queued.head == w
	g.queued.remove(w)
	p.queued--
	p.queuedMB -= w.ks.mb
	w.ks.fc.Queued--
	p.touch(w.ks.fc)
	switch {
	case g.queued.n == 0:
		p.queuedGrps--
		p.place(g)
	case head && g.memoryAt >= 0:
		// Its oldest waiter breaks ties.
		p.byMemory.fix(g.memoryAt)
		p.bySlots.fix(g.slotsAt)
	}
}

// place keeps g in the heaps exactly while it has queued waiters and
// MaxInstances lets it launch: a group at its limit waits for one of its
// instances to be released or closed, and must hold up nobody meanwhile,
// neither in memory order nor in slot order. Whatever changes either
// calls it.
func (p *Pool[I]) place(g *group[I]) {
	want := g.queued.n > 0 && !g.full()
	switch in := g.memoryAt >= 0; {
	case want && !in:
		p.byMemory.push(g)
		p.bySlots.push(g)
		p.admitDue = true
	case !want && in:
		p.byMemory.remove(g)
		p.bySlots.remove(g)
	}
}

// addInstances adds n to g's starting, idle and busy instances.
func (p *Pool[I]) addInstances(g *group[I], n int) {
	g.instances += n
	if g.maxInstances > 0 {
		p.place(g)
		if n < 0 && p.warming.n > 0 {
			p.admitDue = true // a min-warm key of g may launch now
		}
	}
}

// charge adds mb (negative to free it) to the memory g holds.
func (p *Pool[I]) charge(g *group[I], mb int64) {
	g.mb += mb
	if g.memoryAt >= 0 && mb != 0 {
		p.byMemory.fix(g.memoryAt)
	}
}

// addLaunching adds n to g's launches in flight.
func (p *Pool[I]) addLaunching(g *group[I], n int) {
	g.launching += n
	if g.slotsAt >= 0 {
		p.bySlots.fix(g.slotsAt)
	}
}

// fits reports whether mb more could be held once every idle instance
// that may be evicted is, leaving room for what min-warm keys have
// reserved and not yet filled. Only keys without waiters have idle
// instances (a waiter would have been handed one), so for a queued waiter
// these are all other keys.
func (p *Pool[I]) fits(mb int64) bool {
	return p.capacityMB == 0 || p.unevictableMB()+mb <= p.capacityMB
}

// fitsFor is fits for one more launch of ks, which may use what its own
// min-warm reserved.
func (p *Pool[I]) fitsFor(ks *keyState[I]) bool {
	return p.fits(ks.mb - ks.warmCredit())
}

// next picks the queued waiter to launch for now, or nil if none may start.
//
// A launch needs a slot and memory. Memory order decides who may launch:
// the oldest waiter of the group holding the least memory, then, with that
// waiter's memory charged to its group, the next one chosen the same way,
// and so on up to the first waiter that cannot fit even after evicting
// every idle instance. A big fn is not starved by a stream of small ones
// that way: nobody behind it in memory order goes first. Slot order decides
// who of those does: the group with the fewest launches in flight, ties to
// the oldest waiter, launches its oldest waiter.
//
// Groups at their MaxInstances are left out of both orders (see place).
// A waiter of a key whose min-warm has not filled its reservation needs
// none of the free memory: it launches into the reservation.
func (p *Pool[I]) next() *waiter[I] {
	if len(p.byMemory.gs) == 0 || len(p.launches) >= p.maxLaunches {
		return nil
	}
	m := p.byMemory.top()
	if !p.fitsFor(m.queued.head.ks) {
		return nil
	}
	s := p.bySlots.top()
	switch {
	case s == m || p.fits(p.queuedMB):
		// Memory order admits s: it comes first, or everyone fits
		// (queuedMB overstates what they need, counting the waiters of
		// full groups and none of the reservations they may use).
		return s.queued.head
	case p.maxLaunches-len(p.launches) >= p.queued:
		// Slots for everyone: all that memory order admits launch
		// now whatever the order.
		return m.queued.head
	}
	return p.firstInSlotOrder().queued.head
}

// firstInSlotOrder walks memory order, as next describes it, on a copy of
// the groups' memory, and returns the first group in slot order whose
// oldest waiter it reaches. It only runs when memory and slots are both
// short, and stops as soon as the answer cannot change.
func (p *Pool[I]) firstInSlotOrder() *group[I] {
	p.simGen++
	sim := p.sim[:0]
	for _, g := range p.byMemory.gs {
		left := math.MaxInt
		if g.maxInstances > 0 {
			left = g.maxInstances - g.instances
		}
		sim = append(sim, simGroup[I]{g: g, mb: g.mb, next: g.queued.head, left: left})
	}
	h := simHeap[I](sim)
	heap.Init(&h)
	free := p.capacityMB - p.unevictableMB()
	slotsFirst := p.bySlots.top()
	var best *group[I]
	for len(h) > 0 {
		t := &h[0]
		w := t.next
		need := w.ks.mb - p.simCredit(w.ks)
		if need > free {
			break
		}
		free -= need
		if w == t.g.queued.head && (best == nil || lessSlots(t.g, best)) {
			if best = t.g; best == slotsFirst {
				break
			}
		}
		t.mb += w.ks.mb
		// A group stops at its MaxInstances: the waiters behind that
		// take nothing from anyone.
		if t.left--; t.left > 0 && w.inQueue.next != nil {
			t.next = w.inQueue.next
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	clear(h[:cap(h)]) // no pointers kept past the call
	p.sim = h[:0]
	return best
}

// simCredit is warmCredit for firstInSlotOrder, which may admit several
// waiters of one key: each launch into the key's reservation uses up one
// instance of it.
func (p *Pool[I]) simCredit(ks *keyState[I]) int64 {
	if ks.warm.simGen != p.simGen {
		ks.warm.simGen, ks.warm.simGap = p.simGen, ks.warm.gap
	}
	if ks.warm.simGap == 0 {
		return 0
	}
	ks.warm.simGap--
	return ks.mb
}

// simGroup is a group as memory order would find it after admitting the
// waiters before next.
type simGroup[I Instance] struct {
	g    *group[I]
	mb   int64
	next *waiter[I]
	left int // launches its MaxInstances still allows
}

type simHeap[I Instance] []simGroup[I]

func (h simHeap[I]) Len() int { return len(h) }
func (h simHeap[I]) Less(i, j int) bool {
	if h[i].mb != h[j].mb {
		return h[i].mb < h[j].mb
	}
	return h[i].next.seq < h[j].next.seq
}
func (h simHeap[I]) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simHeap[I]) Push(x any)   { *h = append(*h, x.(simGroup[I])) }
func (h *simHeap[I]) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// queueShare is how many queued waiters a group may have, given how many
// groups have some (the one asking is counted by being queued already).
func (p *Pool[I]) queueShare() int {
	if p.maxQueue == 0 {
		return 0
	}
	return max(1, p.maxQueue/max(p.queuedGrps, 1))
}

// groupHeap is a binary heap of the groups that have queued waiters who
// may launch. Each
// group keeps its position in it, so a change to its memory, its launches
// or its oldest waiter is an O(log n) fix.
type groupHeap[I Instance] struct {
	gs   []*group[I]
	less func(a, b *group[I]) bool
	at   func(*group[I]) *int
}

func (h *groupHeap[I]) top() *group[I] { return h.gs[0] }

func (h *groupHeap[I]) push(g *group[I]) {
	*h.at(g) = len(h.gs)
	h.gs = append(h.gs, g)
	h.up(len(h.gs) - 1)
}

func (h *groupHeap[I]) remove(g *group[I]) {
	i, n := *h.at(g), len(h.gs)-1
	if i != n {
		h.swap(i, n)
	}
	h.gs[n] = nil
	h.gs = h.gs[:n]
	*h.at(g) = -1
	if i != n {
		h.fix(i)
	}
}

// fix restores the order after the group at i changed.
func (h *groupHeap[I]) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *groupHeap[I]) swap(i, j int) {
	h.gs[i], h.gs[j] = h.gs[j], h.gs[i]
	*h.at(h.gs[i]) = i
	*h.at(h.gs[j]) = j
}

func (h *groupHeap[I]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.gs[i], h.gs[parent]) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down reports whether it moved the group at i.
func (h *groupHeap[I]) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h.gs) {
			break
		}
		if r := c + 1; r < len(h.gs) && h.less(h.gs[r], h.gs[c]) {
			c = r
		}
		if !h.less(h.gs[c], h.gs[i]) {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
