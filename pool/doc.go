// Package pool keeps warm ("hot") instances of functions, one pool per key,
// and hands them out one call at a time.
//
// A Key stands for everything that makes a container what it is (image
// digest, format, memory, config, timeouts), so two calls with the same Key
// can share an instance and a changed fn never reuses an old container. A
// Group (the fn id) ties the keys of one fn together: when a new Key shows
// up for a Group, the older keys drain.
//
// Acquire prefers an idle instance of the key (most recently used first, so
// the least used ones age out), then launches a new one if memory, a launch
// slot and the group's MaxInstances admit, then evicts idle instances of
// other keys (least recently used first), and only then queues the caller
// until its deadline. A released instance goes straight to the oldest
// waiter of its key, and no more launches start for a key than it has
// waiters, but for those SetMinWarm asks for.
//
// # Fairness between groups
//
// Launch slots, memory and the queue are shared between groups, so that a
// crash-looping or hanging fn cannot take them from the others. A key
// without a Group is a group of its own. A group's memory is what its
// starting, idle, busy and closing instances hold: an instance being closed
// stays charged to its group until its Close returns, but for what an
// eviction already handed to a launch, which is charged to the launch's
// group.
//
// A queued caller (one with no launch under way for it) needs memory and a
// launch slot (Config.MaxLaunches) before its launch starts, and room under
// its group's MaxInstances (a group at its limit takes part in neither
// order below). The memory it may have leaves out what min-warm keys
// reserved and do not hold yet, but a caller of such a key may launch into
// its own reservation:
//
//   - Memory order decides who may launch: the oldest waiter of the group
//     holding the least memory, then, with that waiter's memory charged to
//     its group, the next one picked the same way, and so on up to the first
//     waiter that does not fit even after evicting every idle instance of
//     other keys. Nobody behind that waiter launches before it, so a big fn
//     is not starved by a stream of small ones.
//   - Slot order decides which of those does: the group with the fewest
//     launches in flight, ties going to the group with the oldest waiter,
//     launches its oldest waiter. So one group's burst or crash loop never
//     holds every slot while another group waits for one.
//
// As slot order only chooses among the callers memory order admits, with
// no limit on launches it makes no difference; when memory admits every
// queued caller, slot order alone decides.
//
// The queue is shared the same way. With G groups having queued callers
// (counting the newcomer's), a group may have max(1, MaxQueue/G) of them. A
// caller over its group's share is refused with ErrNoCapacity at once, even
// if other groups leave theirs unused; one within it is queued even if the
// queue already holds MaxQueue calls. Callers already queued are never
// pushed out: after more groups arrive, a group may stay over its new,
// smaller share until its callers are served or give up, and gets no more
// until then. While every group is within its share, the queue holds at
// most max(MaxQueue, G) callers; it holds more only while some group is
// still over a share that shrank.
//
// # Scaling each fn
//
// Three knobs per fn, the min and max scale of Knative and OpenFaaS and a
// limit of requests per instance, are decided by the first Spec of a Key
// (SetMinWarm's included), like its memory:
//
//   - Spec.MaxInstances bounds the group's starting, idle and busy
//     instances, those of keys it drained included (closing ones do not
//     count); the newest key's limit holds for the group. Callers beyond it
//     queue, counted against MaxQueue, until an instance of their key is
//     released to them or one of the group's closes. A group at its limit
//     is out of memory order and slot order, so it holds up nobody.
//   - Spec.MaxRequests retires an instance at the Release of its last
//     lease: it is closed (Hooks.Retired) instead of being reused, and a
//     caller waiting for its key gets a launch in its place. An instance
//     discarded or found dead on that lease is closed for that instead.
//   - SetMinWarm keeps n instances of a key alive however idle they are:
//     launches no caller owns start them (a caller arriving meanwhile
//     takes one over), and relaunch whatever dies or is closed, until
//     Drain, Close, or n = 0 ends it. Reaping and eviction never take the
//     key below n. Its n instances' memory is reserved: nothing else
//     launches into it, the reservations together never exceed
//     CapacityMB, and a caller whose launch could never fit beside them,
//     with no instance of its key to be released to it, is refused
//     (ErrNoCapacity) rather than left queued until its deadline. Its
//     launches take launch slots only after queued callers, and take no
//     memory from them. A key whose launches fail, or whose instances die
//     within a minute of starting, backs off: 100 ms after the first
//     failure, doubling up to 30 s, back to 100 ms after a minute without
//     one.
//
// The pool knows nothing of containers, protocols or HTTP: an Instance only
// has to say when it is no longer usable (Done), why (Err), and how to get
// rid of it (Close). Everything it starts in the background (launches,
// closes, Done watchers) belongs to the Pool, and Close waits for all of it.
package pool
