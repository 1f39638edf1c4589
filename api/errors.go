package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// statuses is the one table from kiln's sentinel errors to HTTP statuses.
// The first match wins, so an error that wraps two kinds (a timeout
// while reading a function's answer, say) gets the one listed first.
var statuses = []struct {
	kind   error
	status int
}{
	{errdefs.ErrUnauthorized, http.StatusUnauthorized},
	{errdefs.ErrForbidden, http.StatusForbidden},
	{errdefs.ErrTooLarge, http.StatusRequestEntityTooLarge},
	{errdefs.ErrInvalid, http.StatusBadRequest},
	{errdefs.ErrNotFound, http.StatusNotFound},
	{errdefs.ErrConflict, http.StatusConflict},
	{errdefs.ErrTimeout, http.StatusGatewayTimeout},
	{errdefs.ErrFunction, http.StatusBadGateway},
	{errdefs.ErrUpstream, http.StatusBadGateway},
	{errdefs.ErrTooManyRequests, http.StatusTooManyRequests},
	{errdefs.ErrUnavailable, http.StatusServiceUnavailable},
}

// statusOf is err's status; anything unclassified is kiln's own failure.
func statusOf(err error) int {
	for _, s := range statuses {
		if errors.Is(err, s.kind) {
			return s.status
		}
	}
	return http.StatusInternalServerError
}

// queueFullRetry is the Retry-After of a full detached-call queue: it
// drains at the pace of function calls, so retrying at once is pointless.
const queueFullRetry = 5

// writeError answers with Fn's error shape, {"message", "code"}.
func writeError(w http.ResponseWriter, err error) {
	status := statusOf(err)
	h := w.Header()
	if (status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests) && h.Get("Retry-After") == "" {
		retry := 1
		var full *store.QueueFullError
		if errors.As(err, &full) {
			retry = queueFullRetry
		}
		h.Set("Retry-After", strconv.Itoa(retry))
	}
	if status == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
		h.Set("WWW-Authenticate", `Bearer realm="kiln"`)
	}
	writeJSON(w, status, map[string]any{"message": err.Error(), "code": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
