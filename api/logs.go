package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/errdefs"
)

func (s *Server) registerLogs(mux *http.ServeMux) {
	mux.HandleFunc("GET /v2/apps/{app_id}/logs", s.followLogs)
}

// followLogs answers an app's (or, with fn_id, one fn's) stderr lines as
// NDJSON, one LogLine per line: those since `since` (RFC 3339, or a
// duration back from now such as 10m; default the last hour), then, with
// follow=true, each new one as the function writes it, flushed at once,
// until the client goes.
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since := time.Now().Add(-time.Hour)
	if v := q.Get("since"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			since = t
		} else {
			writeError(w, fmt.Errorf("%w since %q: want RFC 3339 or a duration such as 10m", errdefs.ErrInvalid, v))
			return
		}
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, fmt.Errorf("%w follow %q: want true or false", errdefs.ErrInvalid, v))
			return
		}
		follow = b
	}
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	started := false
	start := func() {
		if started {
			return
		}
		started = true
		w.Header().Set("Content-Type", ndjson)
		w.Header().Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()
	}
	// The head goes out as soon as the request is known to be good, so a
	// follower knows it is on before the first line.
	err := s.calls.FollowLogs(r.Context(), r.PathValue("app_id"), q.Get("fn_id"), since, follow, start, func(l calls.LogLine) error {
		start()
		if err := enc.Encode(l); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err != nil && !started {
		writeError(w, err)
		return
	}
	start()
}
