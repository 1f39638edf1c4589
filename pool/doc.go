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
// the least used ones age out), then launches a new one if memory admits,
// then evicts idle instances of other keys (least recently used first), and
// only then queues the caller until its deadline. Queued callers are served
// first come, first served: memory that frees up goes to the oldest waiter,
// and a released instance goes straight to the oldest waiter of its key.
//
// The pool knows nothing of containers, protocols or HTTP: an Instance only
// has to say when it is no longer usable (Done) and how to get rid of it
// (Close). Everything it starts in the background (launches, closes, Done
// watchers) belongs to the Pool, and Close waits for all of it.
package pool
