package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	stream := jetstream.StreamConfig{
		Name:      jsStream,
		Subjects:  []string{jsSubject + ".>"},
		Retention: jetstream.WorkQueuePolicy,
		Storage:   jetstream.FileStorage,
		// A publish retried after a lost answer must not queue a call
		// twice: messages carry the call id as their id.
		Duplicates: 2 * time.Minute,
	}
	if err := retryJetStream(ctx, func(ctx context.Context) error { return ensureStream(ctx, js, stream) }); err != nil {
		return fmt.Errorf("queue: stream %s: %w", jsStream, err)
	}
	consumer := jetstream.ConsumerConfig{
		Durable:       jsConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.ackWait,
		MaxDeliver:    jsMaxDeliver,
		MaxAckPending: 10000,
	}
	err = retryJetStream(ctx, func(ctx context.Context) (err error) {
		q.cons, err = js.CreateOrUpdateConsumer(ctx, jsStream, consumer)
		return err
	})
	if err != nil {
		return fmt.Errorf("queue: consumer %s: %w", jsConsumer, err)
	}
	return nil
}

// jsRequestWait bounds one JetStream API request of setup. An answer that
// does not come is asked for again rather than waited for until the
// caller's deadline: nats-server 2.9 leaves a request now and then
// unanswered while several nodes create the stream at once.
const jsRequestWait = 2 * time.Second

// retryJetStream runs step, each try bounded by jsRequestWait, until it
// succeeds, fails for good or ctx ends. Every step of setup is safe to
// repeat.
func retryJetStream(ctx context.Context, step func(context.Context) error) error {
	for try := 1; ; try++ {
		tryCtx, cancel := context.WithTimeout(ctx, jsRequestWait)
		err := step(tryCtx)
		cancel()
		if err == nil || !transientSetupErr(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(time.Duration(try)*50*time.Millisecond, 500*time.Millisecond)):
		}
	}
}

// transientSetupErr: the answers a node gets while other nodes set up the
// same stream, which pass once they are done.
func transientSetupErr(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsErrSubjectsOverlap, // a create that raced another node's create
		jetstream.JSErrCodeConsumerCreate: // "invalid stream": listed, not yet ready
		return true
	}
	return false
}

// jsErrSubjectsOverlap is nats-server's code for a stream whose subjects
// another stream has; nats.go names no constant for it.
const jsErrSubjectsOverlap jetstream.ErrorCode = 10065

// ensureStream makes the stream exist with cfg without updating a stream
// that may still be being created. Nodes start together: with
// CreateOrUpdateStream every node sends an update first, and nats-server
// 2.9 (Debian's) crashes now and then on an update that races the first
// create. So: look, and create only when there is nothing to look at (a
// create that loses the race is retried and finds the winner's stream).
// An update is sent only when an existing stream differs from cfg (a
// kilnd of another version made it).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		if streamConfigMatches(s.CachedInfo().Config, cfg) {
			return nil
		}
		_, err = js.UpdateStream(ctx, cfg)
		return err
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	_, err = js.CreateStream(ctx, cfg)
	return err
}

// streamConfigMatches compares the fields kiln sets; the server fills in
// the others with its defaults.
func streamConfigMatches(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention &&
		have.Storage == want.Storage &&
		have.Duplicates == want.Duplicates
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
