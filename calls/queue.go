package calls

import (
	"context"
	"time"

	"github.com/kiln-run/kiln/store"
)

// Queue carries detached calls from Enqueue to the dispatchers. The store
// holds every call's record and request whichever queue is used; the
// queue only says which call to run next, and to whom. The default is
// the store itself (one node); JetStream spreads calls over many nodes
// and redelivers those of a node that died.
type Queue interface {
	// Publish tells the dispatchers that a call, already stored as
	// queued, is to run.
	Publish(ctx context.Context, fnID, callID string) error
	// Fetch returns up to max calls to run, waiting at most wait for the
	// first. It returns nothing (and no error) when wait passes.
	Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error)
	// Recovers reports whether calls left running by a crashed kilnd are
	// this node's to settle at its start: true for a queue only this node
	// reads; a shared queue redelivers them instead.
	Recovers() bool
	// Heartbeat is how often a running call must tell the queue so (with
	// Delivery.Working); 0 means never.
	Heartbeat() time.Duration
	Close() error
}

// Delivery is one call handed to this node to run.
type Delivery interface {
	FnID() string
	CallID() string
	// Redelivered: another node (or this one, before a crash) was given
	// this call before and did not finish it.
	Redelivered() bool
	// Ack: the call reached its final record; it is not delivered again.
	Ack()
	// Retry hands it back to be delivered again after delay (it did not
	// run: no capacity).
	Retry(delay time.Duration)
	// Working tells the queue the call is still running, so it is not
	// given to another node meanwhile.
	Working()
}

// storeQueue is the one-node queue: the store's queued records, oldest
// first; a wake-up on Publish, a poll as the backstop.
type storeQueue struct {
	st   *store.Store
	wake chan struct{}
}

func newStoreQueue(st *store.Store) *storeQueue {
	return &storeQueue{st: st, wake: make(chan struct{}, 1)}
}

func (q *storeQueue) Publish(context.Context, string, string) error {
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

func (q *storeQueue) Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error) {
	calls, err := q.st.ListCallsByStatus(ctx, store.CallQueued, max)
	if err != nil || len(calls) > 0 {
		return storeDeliveries(calls), err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-q.wake:
	case <-t.C:
	case <-ctx.Done():
		return nil, nil
	}
	calls, err = q.st.ListCallsByStatus(ctx, store.CallQueued, max)
	return storeDeliveries(calls), err
}

func (q *storeQueue) Recovers() bool           { return true }
func (q *storeQueue) Heartbeat() time.Duration { return 0 }
func (q *storeQueue) Close() error             { return nil }

func storeDeliveries(calls []*store.Call) []Delivery {
	out := make([]Delivery, len(calls))
	for i, c := range calls {
		out[i] = storeDelivery{fnID: c.FnID, callID: c.ID}
	}
	return out
}

// storeDelivery needs no acknowledging: the record's status is the queue.
type storeDelivery struct{ fnID, callID string }

func (d storeDelivery) FnID() string        { return d.fnID }
func (d storeDelivery) CallID() string      { return d.callID }
func (d storeDelivery) Redelivered() bool   { return false }
func (d storeDelivery) Ack()                {}
func (d storeDelivery) Retry(time.Duration) {}
func (d storeDelivery) Working()            {}
