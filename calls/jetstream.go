package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// JetStream's names for kiln's detached calls. One stream, a work queue:
// a message is removed once a node acks it, and every node pulls from the
// same durable consumer, so each call goes to one node at a time.
const (
	jsStream   = "KILN_CALLS"
	jsSubject  = "kiln.calls"
	jsConsumer = "kiln-dispatch"
	// DefaultAckWait is how long a node may hold a call without a word: a
	// node that dies mid-call has its calls redelivered that long after
	// its last heartbeat. Running calls send InProgress three times per
	// wait, so the wait bounds failover, not how long a call may run.
	DefaultAckWait = 30 * time.Second
	// jsMaxDeliver bounds deliveries of one call: a claim counts attempts
	// in the store too (maxAttempts), so this is only a backstop against a
	// message no node can even claim (its store unreachable).
	jsMaxDeliver = 20
)

// jsMessage is what a queued call's message carries: where its record is.
type jsMessage struct {
	FnID   string `json:"fn_id"`
	CallID string `json:"call_id"`
}

// JetStreamQueue is the Queue of a cluster: detached calls on a NATS
// JetStream work queue, at least once across nodes.
type JetStreamQueue struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cons    jetstream.Consumer
	log     *logrus.Entry
	ackWait time.Duration
}

// OpenJetStream connects to url and makes sure the stream and the
// consumer exist (every node may; creating them is idempotent). ackWait
// 0 means DefaultAckWait; every node must use the same.
func OpenJetStream(ctx context.Context, url string, ackWait time.Duration, log *logrus.Entry) (*JetStreamQueue, error) {
	if ackWait <= 0 {
		ackWait = DefaultAckWait
	}
	nc, err := nats.Connect(url,
		nats.Name("kilnd"),
		// A queue that reconnects by itself: kilnd keeps serving sync
		// calls while NATS restarts, and detached ones resume after.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.WithError(err).Warn("queue: disconnected from NATS")
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("queue: reconnected to NATS") }),
	)
	if err != nil {
		return nil, fmt.Errorf("queue: connect to %s: %w", url, err)
	}
	q := &JetStreamQueue{nc: nc, log: log, ackWait: ackWait}
	if err := q.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return q, nil
}

func (q *JetStreamQueue) setup(ctx context.Context) error {
	js, err := jetstream.New(q.nc)
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	q.js = js
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      jsStream,
		Subjects:  []string{jsSubject + ".>"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		// A publish retried after a lost answer must not queue a call
		// twice: messages carry the call id as their id.
		Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("queue: stream %s: %w", jsStream, err)
	}
	q.cons, err = js.CreateOrUpdateConsumer(ctx, jsStream, jetstream.ConsumerConfig{
		Durable:       jsConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.ackWait,
		MaxDeliver:    jsMaxDeliver,
		MaxAckPending: 10000,
	})
	if err != nil {
		return fmt.Errorf("queue: consumer %s: %w", jsConsumer, err)
	}
	return nil
}

// Publish queues a stored call; the call id is the message id, so JetStream
// drops a second publish of the same call.
func (q *JetStreamQueue) Publish(ctx context.Context, fnID, callID string) error {
	data, err := json.Marshal(jsMessage{FnID: fnID, CallID: callID})
	if err != nil {
		return err
	}
	_, err = q.js.Publish(ctx, jsSubject+"."+fnID, data, jetstream.WithMsgID(callID))
	return err
}

// Fetch pulls up to max calls, waiting at most wait.
func (q *JetStreamQueue) Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error) {
	batch, err := q.cons.Fetch(max, jetstream.FetchMaxWait(wait))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	var out []Delivery
	for m := range batch.Messages() {
		var body jsMessage
		if err := json.Unmarshal(m.Data(), &body); err != nil || body.CallID == "" {
			// Not kiln's: nothing will ever run it.
			q.log.WithField("subject", m.Subject()).Warn("queue: dropped a message that names no call")
			_ = m.Term()
			continue
		}
		d := &jsDelivery{m: m, msg: body}
		if md, err := m.Metadata(); err == nil {
			d.redelivered = md.NumDelivered > 1
		}
		out = append(out, d)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return out, err
	}
	return out, nil
}

// Recovers is false: a call a dead node held is redelivered to whichever
// node pulls next, not settled by the node that restarts.
func (q *JetStreamQueue) Recovers() bool { return false }

// Heartbeat is how often a running call must say so.
func (q *JetStreamQueue) Heartbeat() time.Duration { return q.ackWait / 3 }

// Close drains the connection: acks still in flight are sent first.
func (q *JetStreamQueue) Close() error {
	if err := q.nc.Drain(); err != nil {
		q.nc.Close()
		return err
	}
	return nil
}

type jsDelivery struct {
	m           jetstream.Msg
	msg         jsMessage
	redelivered bool
}

func (d *jsDelivery) FnID() string      { return d.msg.FnID }
func (d *jsDelivery) CallID() string    { return d.msg.CallID }
func (d *jsDelivery) Redelivered() bool { return d.redelivered }

// Ack waits for JetStream's answer: a lost ack would run the call again.
func (d *jsDelivery) Ack() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = d.m.DoubleAck(ctx)
}

func (d *jsDelivery) Retry(delay time.Duration) {
	if delay <= 0 {
		_ = d.m.Nak()
		return
	}
	_ = d.m.NakWithDelay(delay)
}

func (d *jsDelivery) Working() { _ = d.m.InProgress() }
