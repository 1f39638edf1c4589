package calls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// Detached calls and their guarantees.
//
// A detached call is stored, request included, as a queued record in one
// fsynced bbolt transaction before the client gets its 202, so once
// accepted it survives a crash. A dispatcher runs queued calls oldest
// first through the same execute path as synchronous calls, at most
// asyncConcurrency at a time: that bound is the share of the pool async
// work may take, so a sync call never waits behind more detached calls
// than that.
//
// Delivery is at least once. A call is marked running (and its attempt
// counted) in the store before it runs; if kilnd dies while it runs, the
// next start finds it running, cannot know whether the function did its
// work, and queues it again, once: a call interrupted on its second
// attempt ends as an error. Functions that must not act twice should
// make their work idempotent, keyed on the call id, which is the same on
// both attempts.
//
// Queue bounds count queued calls only (running ones hold pool capacity
// instead): per fn and in total, checked in the transaction that stores
// the call, so concurrent clients cannot overshoot them.

const (
	// maxAttempts is how many times a call may be started: the first run
	// and one retry after a crash.
	maxAttempts = 2
	// pollEvery is the dispatcher's backstop against a missed wake-up and
	// how often the cron engine re-reads its triggers.
	pollEvery = time.Second
)

const interruptedMsg = "interrupted by a kilnd restart"

// asyncState is the dispatcher's and the cron engine's share of Service.
type asyncState struct {
	concurrency int
	limits      store.QueueLimits

	stop chan struct{}
	// wg counts the dispatcher and the cron engine; the calls they start
	// are accepted calls, counted by Service.accepted.
	wg       sync.WaitGroup
	started  bool
	stopOnce sync.Once
}

func (a *asyncState) init(cfg Config) {
	a.concurrency = orDefault(cfg.AsyncConcurrency, DefaultAsyncConcurrency)
	a.limits = store.QueueLimits{
		PerFn: orDefault(cfg.QueuePerFn, DefaultQueuePerFn),
		Total: orDefault(cfg.QueueTotal, DefaultQueueTotal),
	}
	a.stop = make(chan struct{})
}

var errStatusChanged = errors.New("call status changed meanwhile")

// Enqueue stores a detached call of t durably, within the queue bounds,
// and returns its id only once the store has committed it. req.CallID
// must be set. A full queue is an errdefs.ErrUnavailable carrying a
// *store.QueueFullError.
func (s *Service) Enqueue(ctx context.Context, t *Target, req *protocol.Request) (string, error) {
	if err := s.accept(); err != nil {
		return "", err
	}
	defer s.release()
	if t.policyErr != nil {
		return "", t.policyErr
	}
	c := &store.Call{
		ID:    req.CallID,
		FnID:  t.Fn.ID,
		AppID: t.App.ID,
		Request: &store.CallRequest{
			Method: req.Method,
			URL:    req.URL,
			Header: req.Header,
			Body:   req.Body,
		},
	}
	if err := s.queueCall(ctx, c, ""); err != nil {
		var full *store.QueueFullError
		switch {
		case errors.As(err, &full) && full.PerFn:
			return "", reworded{fmt.Sprintf("queue for fn %q is full (%d calls waiting)", t.Fn.Name, full.Waiting), err}
		case errors.As(err, &full):
			return "", reworded{fmt.Sprintf("async queue is full (%d calls waiting across all fns)", full.Waiting), err}
		case errors.Is(err, errdefs.ErrNotFound):
			// The fn was deleted between the lookup and the commit.
			return "", fnLookupError(t.Fn.ID, err)
		case ctx.Err() != nil:
			return "", ctx.Err()
		}
		s.log.WithError(err).WithFields(logrus.Fields{"app": t.App.Name, "fn": t.Fn.Name, "call_id": c.ID}).Error("store a detached call")
		return "", fmt.Errorf("store the call: %w", err)
	}
	return c.ID, nil
}

// queueCall stores c as queued within the queue bounds (and, for a cron
// fire, only while triggerID still exists) and wakes the dispatcher.
func (s *Service) queueCall(ctx context.Context, c *store.Call, triggerID string) error {
	lim := s.async.limits
	lim.TriggerID = triggerID
	if err := s.store.EnqueueCall(ctx, c, lim); err != nil {
		return err
	}
	if err := s.queue.Publish(ctx, c.FnID, c.ID); err != nil {
		// Stored but never to be delivered: say so in its record rather
		// than leave it queued forever, and refuse it.
		now := time.Now().UTC()
		_, _ = s.store.UpdateCall(context.WithoutCancel(ctx), c.FnID, c.ID, func(c *store.Call) error {
			c.Status, c.Error, c.CompletedAt, c.Request = store.CallError, "not queued: "+err.Error(), &now, nil
			return nil
		})
		return errdefs.Errorf(errdefs.ErrUnavailable, "queue the call: %v", err)
	}
	return nil
}

// startAsync starts the dispatcher and the cron engine.
func (s *Service) startAsync() {
	a := &s.async
	a.started = true
	a.wg.Add(2)
	go s.dispatch()
	go s.runCron()
}

// stopAsync stops taking queued calls and cron fires. Queued calls stay in
// the store for the next start.
func (s *Service) stopAsync() {
	s.async.stopOnce.Do(func() { close(s.async.stop) })
}

// stopAsyncWait stops async work and waits for its goroutines.
func (s *Service) stopAsyncWait() {
	s.stopAsync()
	s.async.wg.Wait()
}

// recoverInterrupted settles the calls a previous kilnd left running: it
// died while they ran. A detached call with attempts left is queued again
// (see the package's at-least-once note above); anything else, including
// the records of synchronous calls, whose client has long gone, ends as an
// error. It runs before the server takes requests, so no running record
// can belong to a call of this process.
func (s *Service) recoverInterrupted(ctx context.Context) error {
	calls, err := s.store.ListCallsByStatus(ctx, store.CallRunning, 0)
	if err != nil {
		return fmt.Errorf("find calls interrupted by a restart: %w", err)
	}
	requeued, failed := 0, 0
	for _, c := range calls {
		now := time.Now().UTC()
		var retry bool
		_, err := s.store.UpdateCall(ctx, c.FnID, c.ID, func(c *store.Call) error {
			if c.Status != store.CallRunning {
				return errStatusChanged
			}
			if c.Request != nil && c.Attempts < maxAttempts {
				retry = true
				c.Status = store.CallQueued
				c.Error = fmt.Sprintf("attempt %d %s; queued again", c.Attempts, interruptedMsg)
				return nil
			}
			c.Status = store.CallError
			c.Error = interruptedMsg
			if c.Request != nil {
				c.Error = fmt.Sprintf("%s (attempt %d of %d)", interruptedMsg, c.Attempts, maxAttempts)
			}
			c.CompletedAt = &now
			c.Request = nil
			return nil
		})
		switch {
		case err != nil:
			s.log.WithError(err).WithField("call_id", c.ID).Warn("settle a call interrupted by a restart")
		case retry:
			requeued++
		default:
			failed++
		}
	}
	if requeued+failed > 0 {
		s.log.WithFields(logrus.Fields{"requeued": requeued, "failed": failed}).Warn("calls were interrupted by a kilnd restart")
	}
	return nil
}

// dispatch claims queued calls oldest first while fewer than concurrency
// run, and starts each in its own goroutine.
func (s *Service) dispatch() {
	a := &s.async
	defer a.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-a.stop
		cancel()
	}()
	// Each runner sends once; running never exceeds concurrency, so the
	// buffer keeps a runner that outlives the dispatcher from blocking.
	done := make(chan struct{}, a.concurrency)
	running := 0
	var queueErr repeatLog
	for {
		// Checked before claiming: a freed slot could otherwise win over
		// stop.
		if stopping(a.stop) {
			return
		}
		for drained := false; !drained; {
			select {
			case <-done:
				running--
			default:
				drained = true
			}
		}
		free := a.concurrency - running
		if free == 0 {
			select {
			case <-a.stop:
				return
			case <-done:
				running--
			}
			continue
		}
		ds, err := s.queue.Fetch(ctx, free, pollEvery)
		queueErr.report(s.log, "fetch queued calls", err)
		if err != nil {
			select {
			case <-a.stop:
				return
			case <-time.After(pollEvery):
			}
			continue
		}
		for _, d := range ds {
			if stopping(a.stop) {
				// Not claimed: the queue hands it out again (JetStream
				// after its ack wait; the store's queue at the next start).
				d.Retry(0)
				continue
			}
			if err := s.accept(); err != nil {
				d.Retry(0) // draining: the rest waits for another node or start
				continue
			}
			claimed, err := s.claim(context.Background(), d)
			if err != nil {
				s.release()
				switch {
				case errors.Is(err, errStatusChanged), errors.Is(err, errdefs.ErrNotFound):
					// Done already, or gone with its fn: nothing to run.
					d.Ack()
				default:
					s.log.WithError(err).WithField("call_id", d.CallID()).Warn("claim a queued call")
					d.Retry(pollEvery)
				}
				continue
			}
			running++
			go func() {
				defer s.release()
				s.runDetached(claimed, d)
				done <- struct{}{}
			}()
		}
	}
}

func stopping(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// claim marks a queued call running and counts the attempt, committed
// before the call runs, so a crash from here on is seen at the next start
// (or by the queue's redelivery). A redelivered call may be found running:
// the node that had it died; with attempts left, this one takes it over.
func (s *Service) claim(ctx context.Context, d Delivery) (*store.Call, error) {
	now := time.Now().UTC()
	return s.store.UpdateCall(ctx, d.FnID(), d.CallID(), func(c *store.Call) error {
		switch {
		case c.Status == store.CallQueued:
		case c.Status == store.CallRunning && d.Redelivered():
			if c.Attempts >= maxAttempts {
				c.Status = store.CallError
				c.Error = fmt.Sprintf("%s (attempt %d of %d)", interruptedMsg, c.Attempts, maxAttempts)
				c.CompletedAt = &now
				c.Request = nil
				return nil
			}
		default:
			return errStatusChanged
		}
		c.Status = store.CallRunning
		c.StartedAt = &now
		c.CompletedAt = nil
		c.Attempts++
		return nil
	})
}

// runDetached runs one claimed call, records its outcome and acks it.
func (s *Service) runDetached(c *store.Call, d Delivery) {
	if c.Status != store.CallRunning {
		// claim settled it (out of attempts).
		d.Ack()
		return
	}
	// The queue must know it is still running, however long it runs.
	stopBeat := heartbeat(d, s.queue.Heartbeat())
	defer stopBeat()
	start := time.Now()
	ctx := context.Background()
	log := s.log.WithFields(logrus.Fields{"call_id": c.ID, "fn_id": c.FnID, "attempt": c.Attempts})
	t, err := s.targets.fn(ctx, c.FnID)
	if err != nil {
		// Deleting a fn deletes its calls too, so this record is most
		// likely gone; recording is best effort.
		log.WithError(err).Info("detached call of a deleted fn")
		s.finishDetached(ctx, log, c, store.CallError, "fn deleted", nil)
		d.Ack()
		return
	}
	log = log.WithFields(logrus.Fields{"app": t.App.Name, "fn": t.Fn.Name})
	if c.Request == nil {
		s.finishDetached(ctx, log, c, store.CallError, "no request was stored for this call", nil)
		d.Ack()
		return
	}
	if t.policyErr != nil {
		s.finishDetached(ctx, log, c, store.CallError, t.policyErr.Error(), nil)
		d.Ack()
		return
	}
	if !s.conc.enter(t.Fn.ID, t.Fn.MaxConcurrency) {
		// Queued, not refused: it waits for the fn's sync calls to
		// leave room, as it does for capacity.
		log.Debug("fn at its max_concurrency; detached call queued again")
		s.requeue(ctx, log, c)
		d.Retry(pollEvery)
		return
	}
	defer s.conc.leave(t.Fn.ID, t.Fn.MaxConcurrency)
	deadline := start.Add(fnTimeout(t.Fn))
	// Not tied to shutdown: Close lets an accepted call finish, and the
	// deadline bounds how long that takes.
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req := &protocol.Request{
		CallID:   c.ID,
		Deadline: deadline,
		Method:   c.Request.Method,
		URL:      c.Request.URL,
		Header:   http.Header(c.Request.Header).Clone(),
		Body:     c.Request.Body,
	}
	logs := s.newCallLog(t, c.ID)
	// The response has no one to go to: a detached call's outcome is its
	// record and its log.
	resp, err := s.execute(cctx, t, req, logs)
	if err == nil && resp != nil && resp.Stream != nil {
		// Nobody reads it, but the container is busy until it ends.
		_, err = io.Copy(io.Discard, resp.Stream)
		resp.Stream.Close()
	}
	if busy(err) {
		// Sync calls had the node's capacity for the whole deadline (or
		// containerd is restarting): the call did not run, so it goes
		// back in the queue as it was, attempt uncounted, rather than
		// fail for a reason that says nothing about the function. During
		// shutdown this leaves it queued for the next start, as intended.
		log.WithError(err).Info("no capacity for a detached call; queued again")
		s.requeue(ctx, log, c)
		d.Retry(pollEvery)
		return
	}
	status, msg := store.CallSuccess, ""
	if err != nil {
		err = callError(t.Fn, err)
		status, msg = callStatus(err), err.Error()
		log.WithError(err).Warn("detached call failed")
	}
	s.finishDetached(ctx, log, c, status, msg, logs)
	d.Ack()
	s.mx.ObserveCall(t.App.Name, t.Fn.Name, status, time.Since(start))
}

// heartbeat tells the queue a delivery is still running, every, until
// the returned func is called.
func heartbeat(d Delivery, every time.Duration) func() {
	if every <= 0 {
		return func() {}
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d.Working()
			}
		}
	}()
	return func() { close(stop) }
}

// busy reports an error that means the call never reached a container:
// the pool had no room before the deadline, or containerd was away.
func busy(err error) bool {
	return errors.Is(err, errdefs.ErrUnavailable)
}

// requeue puts a claimed call that never ran back in the queue.
func (s *Service) requeue(ctx context.Context, log *logrus.Entry, c *store.Call) {
	_, err := s.store.UpdateCall(ctx, c.FnID, c.ID, func(c *store.Call) error {
		c.Status = store.CallQueued
		c.StartedAt = nil
		if c.Attempts > 0 {
			c.Attempts--
		}
		return nil
	})
	if err != nil {
		log.WithError(err).Error("queue a detached call again")
	}
}

// finishDetached writes a call's final state and its log in one
// transaction. The stored request is dropped: a finished call is never
// run again, and bodies of up to MaxBody would otherwise pile up in the
// records retention keeps. It writes only over its own attempt: a node
// that was thought dead and comes back after the call was redelivered and
// finished elsewhere must not overwrite that outcome. (The check and the
// write are two transactions; a take-over between them, within
// milliseconds of this node's own end, is not guarded against.)
func (s *Service) finishDetached(ctx context.Context, log *logrus.Entry, c *store.Call, status, msg string, logs *callLog) {
	if cur, err := s.store.GetCall(ctx, c.FnID, c.ID); err == nil && (cur.Status != store.CallRunning || cur.Attempts != c.Attempts) {
		log.Warn("a detached call ended here after it was taken over elsewhere; its outcome there stands")
		return
	}
	done := time.Now().UTC()
	c.Status, c.Error, c.CompletedAt = status, msg, &done
	c.Request = nil
	w := store.CallWrite{Call: c}
	if logs != nil {
		w.Log = logs.Bytes()
	}
	if err := s.store.SaveCalls(ctx, []store.CallWrite{w}); err != nil {
		// The record stays running: the next start (or a redelivery)
		// settles it.
		log.WithError(err).Error("record the outcome of a detached call")
	}
}

// repeatLog reports a failure that recurs at every poll (a store gone
// bad) once as a warning and then at debug level until it clears, so it
// cannot flood the log. It belongs to one goroutine.
type repeatLog struct{ last string }

func (q *repeatLog) report(log *logrus.Entry, what string, err error) {
	if err == nil {
		if q.last != "" {
			log.WithField("was", q.last).Info(what + ": working again")
		}
		q.last = ""
		return
	}
	if msg := err.Error(); msg != q.last {
		q.last = msg
		log.WithError(err).Warn(what)
		return
	}
	log.WithError(err).Debug(what)
}

// reworded gives an error a message for people (a fn's name rather than
// its id) and keeps what it wraps for errors.Is and errors.As.
type reworded struct {
	msg string
	err error
}

func (r reworded) Error() string { return r.msg }
func (r reworded) Unwrap() error { return r.err }
