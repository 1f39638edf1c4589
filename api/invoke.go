package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

func (s *Server) registerInvoke(mux *http.ServeMux) {
	mux.HandleFunc("POST /invoke/{fn_id}", s.invokeByID)
	mux.HandleFunc("/t/{app}/{source...}", s.invokeTrigger)
	mux.HandleFunc("/t/{app}", s.invokeTrigger)
}

func (s *Server) invokeByID(w http.ResponseWriter, r *http.Request) {
	t, err := s.calls.ByFn(r.Context(), r.PathValue("fn_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.invoke(w, r, t)
}

func (s *Server) invokeTrigger(w http.ResponseWriter, r *http.Request) {
	t, err := s.calls.ByTrigger(r.Context(), r.PathValue("app"), "/"+r.PathValue("source"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.invoke(w, r, t)
}

// invoke turns the HTTP request into a call of t, synchronous or detached,
// and the outcome back into HTTP.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request, t *calls.Target) {
	callID := s.calls.NewCallID()
	w.Header().Set("Fn-Call-Id", callID)
	if s.calls.Draining() {
		// Refused before the body is read; the call itself would be too.
		writeError(w, fmt.Errorf("kilnd is shutting down: %w", errdefs.ErrUnavailable))
		return
	}
	if err := s.authorize(r, t.App, t.Fn); err != nil {
		writeError(w, err)
		return
	}
	body, err := readBody(w, r, s.cfg.MaxBody)
	if err != nil {
		writeError(w, err)
		return
	}
	header := r.Header.Clone()
	protocol.StripHopByHop(header)
	req := &protocol.Request{
		CallID: callID,
		Method: r.Method,
		URL:    requestURL(r),
		Header: header,
		Body:   body,
	}
	if r.Header.Get("Fn-Invoke-Type") == "detached" {
		if _, err := s.calls.Enqueue(r.Context(), t, req); err != nil {
			if r.Context().Err() != nil {
				// The client left before the call was stored: it got no
				// 202, so nothing was accepted and nobody is there to tell.
				return
			}
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"call_id": callID})
		return
	}
	resp, err := s.calls.Call(r.Context(), t, req)
	if err != nil {
		if r.Context().Err() != nil {
			return // nobody to answer; the record says what happened
		}
		writeError(w, err)
		return
	}
	writeResponse(w, resp)
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("body of %d bytes is over the %d byte limit: %w", r.ContentLength, limit, errdefs.ErrTooLarge)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("body is over the %d byte limit: %w", limit, errdefs.ErrTooLarge)
		}
		return nil, fmt.Errorf("%w request: read body: %v", errdefs.ErrInvalid, err)
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
