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
	detached := r.Header.Get("Fn-Invoke-Type") == "detached"
	header := r.Header.Clone()
	protocol.StripHopByHop(header)
	req := &protocol.Request{
		CallID: callID,
		Method: r.Method,
		URL:    requestURL(r),
		Header: header,
	}
	if !detached && (r.ContentLength < 0 || r.ContentLength > streamAbove) && protocol.StreamsRequest(t.Fn.Format, r.ContentLength) {
		// Streamed to the function as it arrives; the limit still holds,
		// checked as the bytes go by (a 413 then discards the container,
		// which got half a frame).
		if r.ContentLength > s.cfg.MaxBody {
			writeError(w, fmt.Errorf("body of %d bytes is over the %d byte limit: %w", r.ContentLength, s.cfg.MaxBody, errdefs.ErrTooLarge))
			return
		}
		req.BodyStream, req.BodyLength = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody), r.ContentLength
	} else {
		body, err := readBody(w, r, s.cfg.MaxBody)
		if err != nil {
			writeError(w, err)
			return
		}
		req.Body = body
	}
	if detached {
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
	if resp.Stream != nil {
		s.writeStream(w, resp)
		return
	}
	writeResponse(w, resp)
}

// streamAbove is the body size from which a request streams to the
// function: a small body read whole goes out with its frame in one write,
// which a hot call's cost is mostly made of; a stream costs a write more.
const streamAbove = 64 << 10

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

// writeStream passes a streamed answer on as it arrives, flushing after
// every piece, so an event reaches the client when the function wrote it.
// A client that goes away closes the stream (the call's record says so);
// a stream that fails mid-way is cut, so the client sees an incomplete
// response, not a clean end.
func (s *Server) writeStream(w http.ResponseWriter, resp *protocol.Response) {
	defer resp.Stream.Close()
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	protocol.StripHopByHop(h)
	h.Del("Content-Length")
	// Proxies such as nginx would otherwise hold the stream back.
	h.Set("X-Accel-Buffering", "no")
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Stream.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			// The status is out already: only cutting the connection
			// tells the client the body is not whole.
			panic(http.ErrAbortHandler)
		}
	}
}
