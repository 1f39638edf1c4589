package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/pool"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// HotInstance is a warm container that answers calls one at a time.
type HotInstance interface {
	pool.Instance
	Call(ctx context.Context, req *protocol.Request, logs io.Writer) (*protocol.Response, error)
}

// Runtime starts containers for fns; cmd/kilnd wires the containerd one.
type Runtime interface {
	// StartHot starts a hot container for fn.
	StartHot(ctx context.Context, app *store.App, fn *store.Fn) (HotInstance, error)
	// RunCold runs one default-format call in a fresh container.
	RunCold(ctx context.Context, app *store.App, fn *store.Fn, req *protocol.Request, logs io.Writer) (*protocol.Response, error)
	// ImageID resolves a reference to the digest that identifies its
	// content, so a re-tagged image gets fresh containers.
	ImageID(ctx context.Context, ref string) (string, error)
}

func (s *Server) registerInvoke(mux *http.ServeMux) {
	mux.HandleFunc("POST /invoke/{fn_id}", s.invokeByID)
	mux.HandleFunc("/t/{app}/{source...}", s.invokeTrigger)
	mux.HandleFunc("/t/{app}", s.invokeTrigger)
}

// SetDraining makes every new call answer 503 while in-flight calls
// finish; kilnd sets it when asked to stop.
func (s *Server) SetDraining() { s.draining.Store(true) }

// fnChanged drains the containers of a fn that was updated or deleted.
func (s *Server) fnChanged(fnID string) {
	if s.cfg.Pool != nil {
		s.cfg.Pool.Drain(fnID)
	}
}

func (s *Server) invokeByID(w http.ResponseWriter, r *http.Request) {
	app, fn, err := s.resolve.fn(r.Context(), r.PathValue("fn_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.invoke(w, r, app, fn)
}

func (s *Server) invokeTrigger(w http.ResponseWriter, r *http.Request) {
	app, fn, err := s.resolve.trigger(r.Context(), r.PathValue("app"), "/"+r.PathValue("source"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.invoke(w, r, app, fn)
}

func fnLookupError(fnID string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("fn %q not found: %w", fnID, store.ErrNotFound)
	}
	return err
}

// invoke runs one synchronous call and writes the function's answer.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request, app *store.App, fn *store.Fn) {
	callID := s.store.NewID()
	w.Header().Set("Fn-Call-Id", callID)
	if s.draining.Load() {
		writeError(w, fmt.Errorf("kilnd is shutting down: %w", errdefs.ErrUnavailable))
		return
	}
	if err := s.authorize(r, app, fn); err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r, s.cfg.MaxBody)
	if err != nil {
		writeError(w, err)
		return
	}
	if isDetached(r) {
		s.enqueue(w, r, app, fn, callID, body)
		return
	}
	deadline := time.Now().Add(fnTimeout(fn))
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()

	header := r.Header.Clone()
	protocol.StripHopByHop(header)
	req := &protocol.Request{
		CallID:   callID,
		Deadline: deadline,
		Method:   r.Method,
		URL:      requestURL(r),
		Header:   header,
		Body:     body,
	}
	start := time.Now()
	rec := &store.Call{ID: callID, FnID: fn.ID, AppID: app.ID, Status: store.CallRunning, CreatedAt: start, StartedAt: &start}
	logs := &callLog{max: s.cfg.CallLogCap}
	s.records.start(rec)

	resp, err := s.execute(ctx, app, fn, req, logs)
	done := time.Now()
	rec.CompletedAt = &done
	rec.Status = store.CallSuccess
	if err != nil {
		rec.Status, rec.Error = callStatus(err), err.Error()
	}
	s.records.put(rec, logs)
	s.cfg.Metrics.ObserveCall(app.Name, fn.Name, rec.Status, done.Sub(start))
	if err != nil {
		// Built only on failure: a logrus entry costs a map per call.
		log := s.log.WithFields(logrus.Fields{"app": app.Name, "fn": fn.Name, "call_id": callID})
		if r.Context().Err() != nil {
			log.WithError(err).Info("client went away before the call finished")
			return
		}
		log.WithError(err).Warn("call failed")
		writeError(w, callError(fn, err))
		return
	}
	writeResponse(w, resp)
}

// fnTimeout is how long one call of fn may take; stored fns always have
// a validated timeout, the fallback only guards records from elsewhere.
func fnTimeout(fn *store.Fn) time.Duration {
	if fn.Timeout <= 0 {
		return 30 * time.Second
	}
	return time.Duration(fn.Timeout) * time.Second
}

// callStatus is the record status of a failed call.
func callStatus(err error) string {
	if errors.Is(err, errdefs.ErrTimeout) {
		return store.CallTimeout
	}
	return store.CallError
}

// execute runs one call of fn, in a hot container or, for the default
// format, a fresh one. Sync and detached calls both come through here.
func (s *Server) execute(ctx context.Context, app *store.App, fn *store.Fn, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	if fn.Format == protocol.Default {
		return s.cfg.Runtime.RunCold(ctx, app, fn, req, logs)
	}
	return s.callHot(ctx, app, fn, req, logs)
}

// callHot runs a call on a warm container of fn, launching one if needed.
func (s *Server) callHot(ctx context.Context, app *store.App, fn *store.Fn, req *protocol.Request, logs io.Writer) (*protocol.Response, error) {
	imageID, err := s.cfg.Runtime.ImageID(ctx, fn.Image)
	if err != nil {
		return nil, err
	}
	lease, err := s.cfg.Pool.Acquire(ctx, pool.Spec[HotInstance]{
		Key:         poolKey(app, fn, imageID),
		Group:       fn.ID,
		App:         app.Name,
		Fn:          fn.Name,
		MemoryMB:    fn.Memory,
		IdleTimeout: time.Duration(fn.IdleTimeout) * time.Second,
		Launch: func(ctx context.Context) (HotInstance, error) {
			return s.cfg.Runtime.StartHot(ctx, app, fn)
		},
	})
	if err != nil {
		return nil, err
	}
	resp, err := lease.Instance().Call(ctx, req, logs)
	if err != nil {
		// Whatever failed, the container's stream may be out of step
		// with kiln: it never serves again.
		lease.Discard()
		return nil, err
	}
	lease.Release()
	return resp, nil
}

// poolKey covers everything that changes a container: any change to the
// fn or its app bumps UpdatedAt, and the digest catches a re-tagged image.
func poolKey(app *store.App, fn *store.Fn, imageID string) string {
	return fn.ID + "|" + strconv.FormatInt(fn.UpdatedAt.UnixNano(), 36) + "|" +
		strconv.FormatInt(app.UpdatedAt.UnixNano(), 36) + "|" + imageID
}

// callError words the two failures whose status or message differ from
// what statusOf gives the error as it is: a timeout names the fn's limit,
// and a missing image is kiln's failure (500), not an unknown fn (404).
// Crashes and bad frames (502) and capacity (503) map as they are.
func callError(fn *store.Fn, err error) error {
	switch {
	case errors.Is(err, errdefs.ErrTimeout):
		return errorf(http.StatusGatewayTimeout, "fn %q timed out after %ds", fn.Name, fn.Timeout)
	case errors.Is(err, errdefs.ErrNotFound):
		return errorf(http.StatusInternalServerError, "fn %q cannot start: %v", fn.Name, err)
	}
	return err
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("body of %d bytes is over the %d byte limit: %w", r.ContentLength, limit, errTooLarge)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("body is over the %d byte limit: %w", limit, errTooLarge)
		}
		return nil, fmt.Errorf("read request body: %v: %w", err, ErrInvalid)
	}
	return body, nil
}

func requestURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.RequestURI
}

func writeResponse(w http.ResponseWriter, resp *protocol.Response) {
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	protocol.StripHopByHop(h)
	h.Del("Content-Length")
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp.Body)
}
