package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// maxResourceBody bounds app, fn and trigger bodies. They are small
// records; the cap only stops a client from making kilnd buffer a large
// upload before the JSON decoder rejects it.
const maxResourceBody = 1 << 20

func (s *Server) registerResources(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/apps", s.createApp)
	mux.HandleFunc("GET /v2/apps", s.listApps)
	mux.HandleFunc("GET /v2/apps/{app_id}", s.getApp)
	mux.HandleFunc("PUT /v2/apps/{app_id}", s.updateApp)
	mux.HandleFunc("DELETE /v2/apps/{app_id}", s.deleteApp)

	mux.HandleFunc("POST /v2/fns", s.createFn)
	mux.HandleFunc("GET /v2/fns", s.listFns)
	mux.HandleFunc("GET /v2/fns/{fn_id}", s.getFn)
	mux.HandleFunc("PUT /v2/fns/{fn_id}", s.updateFn)
	mux.HandleFunc("DELETE /v2/fns/{fn_id}", s.deleteFn)

	mux.HandleFunc("POST /v2/triggers", s.createTrigger)
	mux.HandleFunc("GET /v2/triggers", s.listTriggers)
	mux.HandleFunc("GET /v2/triggers/{trigger_id}", s.getTrigger)
	mux.HandleFunc("PUT /v2/triggers/{trigger_id}", s.updateTrigger)
	mux.HandleFunc("DELETE /v2/triggers/{trigger_id}", s.deleteTrigger)

	s.registerCalls(mux)
}

// listPage is the shape of every list answer.
type listPage[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

func writeList[T any](w http.ResponseWriter, items []T, next string) {
	if items == nil {
		items = []T{}
	}
	writeJSON(w, http.StatusOK, listPage[T]{Items: items, NextCursor: next})
}

// listOptions reads the paging and filter query parameters. per_page above
// the maximum is clamped by the store rather than refused, as Fn does.
func listOptions(r *http.Request) (store.ListOptions, error) {
	q := r.URL.Query()
	opts := store.ListOptions{
		Name:   q.Get("name"),
		AppID:  q.Get("app_id"),
		FnID:   q.Get("fn_id"),
		Cursor: q.Get("cursor"),
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return opts, fmt.Errorf("%w per_page %q: must be a non-negative integer", errdefs.ErrInvalid, v)
		}
		opts.PerPage = n
	}
	return opts, nil
}

// decodeBody reads a JSON object into v. Unknown fields are ignored, as Fn
// ignores them, so newer clients keep working.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxResourceBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("request body over %d bytes: %w", tooBig.Limit, errdefs.ErrTooLarge)
		}
		return fmt.Errorf("%w request: read body: %v", errdefs.ErrInvalid, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("%w request: empty body, want a JSON object", errdefs.ErrInvalid)
	}
	if err := json.Unmarshal(data, v); err != nil {
		if errors.Is(err, errdefs.ErrInvalid) {
			return err // a field's own decoder already said what is wrong
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "" {
				return fmt.Errorf("%w request: body must be a JSON object", errdefs.ErrInvalid)
			}
			return fmt.Errorf("%w request field %s: must not be a JSON %s", errdefs.ErrInvalid, typeErr.Field, typeErr.Value)
		}
		return fmt.Errorf("%w request: malformed JSON: %v", errdefs.ErrInvalid, err)
	}
	return nil
}

// checkImmutable refuses a body that tries to change a field the server
// owns. Sending the current value back is fine: clients often PUT the
// object they just read.
func checkImmutable(kind, field, given, current string) error {
	if given != "" && given != current {
		return invalid(kind, field, "cannot be changed (is %q, got %q)", current, given)
	}
	return nil
}

func checkCreatedAt(kind string, given *time.Time, current time.Time) error {
	if given != nil && !given.Equal(current) {
		return invalid(kind, "created_at", "cannot be changed")
	}
	return nil
}

// mergeConfig applies a patch in Fn's way: given keys replace, a key with
// an empty value is removed. The result is a new map, nil when empty, so
// records do not carry "config": {}.
func mergeConfig(cur, patch map[string]string) map[string]string {
	out := maps.Clone(cur)
	for k, v := range patch {
		if v == "" {
			delete(out, k)
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// mergeAnnotations is mergeConfig for annotations, where null or an empty
// string removes a key.
func mergeAnnotations(cur, patch map[string]any) map[string]any {
	out := maps.Clone(cur)
	for k, v := range patch {
		if s, ok := v.(string); v == nil || (ok && s == "") {
			delete(out, k)
			continue
		}
		if out == nil {
			out = map[string]any{}
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func deleted(w http.ResponseWriter, kind, id string) {
	writeJSON(w, http.StatusOK, map[string]string{"message": fmt.Sprintf("%s %q deleted", kind, id)})
}

// ---- apps

type appBody struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Config      map[string]string `json:"config"`
	Annotations map[string]any    `json:"annotations"`
	CreatedAt   *time.Time        `json:"created_at"`
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var body appBody
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.ID != "" {
		writeError(w, invalid("app", "id", "is assigned by the server"))
		return
	}
	app := &store.App{
		Name:        body.Name,
		Config:      mergeConfig(nil, body.Config),
		Annotations: mergeAnnotations(nil, body.Annotations),
	}
	if err := validateApp(app); err != nil {
		writeError(w, err)
		return
	}
	app, err := s.store.CreateApp(r.Context(), app)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, app)
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	opts, err := listOptions(r)
	if err != nil {
		writeError(w, err)
		return
	}
	apps, next, err := s.store.ListApps(r.Context(), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeList(w, apps, next)
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) {
	app, err := s.store.GetApp(r.Context(), r.PathValue("app_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, app)
}

func (s *Server) updateApp(w http.ResponseWriter, r *http.Request) {
	var body appBody
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	app, err := s.store.UpdateApp(r.Context(), r.PathValue("app_id"), func(a *store.App) error {
		if err := checkImmutable("app", "id", body.ID, a.ID); err != nil {
			return err
		}
		if err := checkCreatedAt("app", body.CreatedAt, a.CreatedAt); err != nil {
			return err
		}
		if body.Name != "" {
			a.Name = body.Name
		}
		a.Config = mergeConfig(a.Config, body.Config)
		a.Annotations = mergeAnnotations(a.Annotations, body.Annotations)
		return validateApp(a)
	})
	if err != nil {
		writeError(w, err)
		return
	}
	s.calls.RefreshApp(r.Context(), app.ID)
	writeJSON(w, http.StatusOK, app)
}

func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("app_id")
	fnIDs, err := s.store.DeleteApp(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	s.calls.Refresh(r.Context(), fnIDs...)
	deleted(w, "app", id)
}

// ---- fns

type fnBody struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	AppID       string     `json:"app_id"`
	Image       string     `json:"image"`
	Format      string     `json:"format"`
	Memory      *int64     `json:"memory"`
	CPUs        *milliCPUs `json:"cpus"`
	Timeout     *int       `json:"timeout"`
	IdleTimeout *int       `json:"idle_timeout"`
	TmpfsSize   *int64     `json:"tmpfs_size"`
	// Scaling knobs: pointers, since 0 (no limit) is a value an update
	// must be able to set.
	MaxConcurrency *int `json:"max_concurrency"`
	MaxInstances   *int `json:"max_instances"`
	MinWarm        *int `json:"min_warm"`
	MaxRequests    *int `json:"max_requests"`
	// Secrets replaces the fn's list when given ([] clears it).
	Secrets     *[]string         `json:"secrets"`
	Config      map[string]string `json:"config"`
	Annotations map[string]any    `json:"annotations"`
	CreatedAt   *time.Time        `json:"created_at"`
}

// milliCPUs accepts kiln's integer milli-CPUs and also Fn's string forms,
// "100m" (milli) and "0.5" (whole CPUs), so Fn clients keep working.
type milliCPUs int64

func (m *milliCPUs) UnmarshalJSON(data []byte) error {
	var n int64
	if err := json.Unmarshal(data, &n); err == nil {
		*m = milliCPUs(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return invalid("fn", "cpus", "must be an integer of milli-CPUs or a string like \"100m\" or \"0.5\"")
	}
	if s == "" {
		*m = 0
		return nil
	}
	if milli, ok := strings.CutSuffix(s, "m"); ok {
		n, err := strconv.ParseInt(milli, 10, 64)
		if err != nil {
			return invalid("fn", "cpus", "%q is not a number of milli-CPUs", s)
		}
		*m = milliCPUs(n)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > maxCPUs {
		return invalid("fn", "cpus", "%q is not a number of CPUs", s)
	}
	*m = milliCPUs(f * 1000)
	return nil
}

// Zero memory and timeouts mean "not given", as in Fn: the default on
// create, unchanged on update. cpus is a pointer for the opposite reason:
// 0 is a real value (no limit) that an update must be able to set.
func applyFnBody(f *store.Fn, b *fnBody) {
	if b.Name != "" {
		f.Name = b.Name
	}
	if b.Image != "" {
		f.Image = b.Image
	}
	if b.Format != "" {
		f.Format = b.Format
	}
	if b.Memory != nil && *b.Memory != 0 {
		f.Memory = *b.Memory
	}
	if b.CPUs != nil {
		f.CPUs = int64(*b.CPUs)
	}
	if b.Timeout != nil && *b.Timeout != 0 {
		f.Timeout = *b.Timeout
	}
	if b.IdleTimeout != nil && *b.IdleTimeout != 0 {
		f.IdleTimeout = *b.IdleTimeout
	}
	if b.TmpfsSize != nil && *b.TmpfsSize != 0 {
		f.TmpfsSize = *b.TmpfsSize
	}
	if b.Secrets != nil {
		f.Secrets = append([]string(nil), (*b.Secrets)...)
	}
	for _, k := range []struct {
		given *int
		field *int
	}{
		{b.MaxConcurrency, &f.MaxConcurrency}, {b.MaxInstances, &f.MaxInstances},
		{b.MinWarm, &f.MinWarm}, {b.MaxRequests, &f.MaxRequests},
	} {
		if k.given != nil {
			*k.field = *k.given
		}
	}
	f.Config = mergeConfig(f.Config, b.Config)
	f.Annotations = mergeAnnotations(f.Annotations, b.Annotations)
}

func (s *Server) createFn(w http.ResponseWriter, r *http.Request) {
	var body fnBody
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.ID != "" {
		writeError(w, invalid("fn", "id", "is assigned by the server"))
		return
	}
	fn := &store.Fn{
		AppID:       body.AppID,
		Format:      store.DefaultFormat,
		Memory:      store.DefaultMemoryMB,
		Timeout:     store.DefaultTimeout,
		IdleTimeout: store.DefaultIdleTimeout,
		TmpfsSize:   store.DefaultTmpfsMB,
	}
	applyFnBody(fn, &body)
	if err := validateFn(fn); err != nil {
		writeError(w, err)
		return
	}
	fn, err := s.store.CreateFn(r.Context(), fn)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.deployFn(r, fn.ID); err != nil {
		// Refused as a whole: the fn is not left half deployed.
		if derr := s.store.DeleteFn(r.Context(), fn.ID); derr != nil {
			s.log.WithError(derr).WithField("fn_id", fn.ID).Error("remove a fn whose deploy was refused")
		}
		s.calls.Refresh(r.Context(), fn.ID)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fn)
}

// deployFn starts what a fn's record asks for (its min_warm containers).
// A refusal (no room for them) is returned for the caller to undo the
// change; any other failure (the image is not there yet) leaves the fn as
// saved, to be warmed at its first call, and is only logged.
func (s *Server) deployFn(r *http.Request, fnID string) error {
	err := s.calls.Deploy(r.Context(), fnID)
	if err == nil || errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	s.log.WithError(err).WithField("fn_id", fnID).Warn("fn saved; its warm containers start at its first call")
	return nil
}

func (s *Server) listFns(w http.ResponseWriter, r *http.Request) {
	opts, err := listOptions(r)
	if err != nil {
		writeError(w, err)
		return
	}
	fns, next, err := s.store.ListFns(r.Context(), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeList(w, fns, next)
}

func (s *Server) getFn(w http.ResponseWriter, r *http.Request) {
	fn, err := s.store.GetFn(r.Context(), r.PathValue("fn_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fn)
}

func (s *Server) updateFn(w http.ResponseWriter, r *http.Request) {
	var body fnBody
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	var old store.Fn
	fn, err := s.store.UpdateFn(r.Context(), r.PathValue("fn_id"), func(f *store.Fn) error {
		old = *f
		if err := checkImmutable("fn", "id", body.ID, f.ID); err != nil {
			return err
		}
		if err := checkImmutable("fn", "app_id", body.AppID, f.AppID); err != nil {
			return err
		}
		if err := checkCreatedAt("fn", body.CreatedAt, f.CreatedAt); err != nil {
			return err
		}
		applyFnBody(f, &body)
		return validateFn(f)
	})
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.deployFn(r, fn.ID); err != nil {
		if _, rerr := s.store.UpdateFn(r.Context(), fn.ID, func(f *store.Fn) error { *f = old; return nil }); rerr != nil {
			s.log.WithError(rerr).WithField("fn_id", fn.ID).Error("undo a fn update whose deploy was refused")
		}
		_ = s.deployFn(r, fn.ID)
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fn)
}

func (s *Server) deleteFn(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("fn_id")
	if err := s.store.DeleteFn(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	s.calls.Refresh(r.Context(), id)
	deleted(w, "fn", id)
}

// ---- triggers

type triggerBody struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	AppID       string         `json:"app_id"`
	FnID        string         `json:"fn_id"`
	Type        string         `json:"type"`
	Source      string         `json:"source"`
	Annotations map[string]any `json:"annotations"`
	CreatedAt   *time.Time     `json:"created_at"`
}

func (s *Server) createTrigger(w http.ResponseWriter, r *http.Request) {
	var body triggerBody
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.ID != "" {
		writeError(w, invalid("trigger", "id", "is assigned by the server"))
		return
	}
	t := &store.Trigger{
		Name:        body.Name,
		AppID:       body.AppID,
		FnID:        body.FnID,
		Type:        body.Type,
		Source:      body.Source,
		Annotations: mergeAnnotations(nil, body.Annotations),
	}
	if t.Type == "" {
		t.Type = store.TriggerHTTP
	}
	// The fn determines the app, so app_id may be left out; the store
	// still checks that a given app_id matches.
	if t.AppID == "" && t.FnID != "" {
		fn, err := s.store.GetFn(r.Context(), t.FnID)
		if err != nil {
			writeError(w, err)
			return
		}
		t.AppID = fn.AppID
	}
	if err := validateTrigger(t); err != nil {
		writeError(w, err)
		return
	}
	t, err := s.store.CreateTrigger(r.Context(), t)
	if err != nil {
		writeError(w, err)
		return
	}
	// A fn's first http trigger is its containers' FN_PATH.
	s.calls.Refresh(r.Context(), t.FnID)
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) listTriggers(w http.ResponseWriter, r *http.Request) {
	opts, err := listOptions(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ts, next, err := s.store.ListTriggers(r.Context(), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeList(w, ts, next)
}

func (s *Server) getTrigger(w http.ResponseWriter, r *http.Request) {
	t, err := s.store.GetTrigger(r.Context(), r.PathValue("trigger_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) updateTrigger(w http.ResponseWriter, r *http.Request) {
	var body triggerBody
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	t, err := s.store.UpdateTrigger(r.Context(), r.PathValue("trigger_id"), func(t *store.Trigger) error {
		if err := checkImmutable("trigger", "id", body.ID, t.ID); err != nil {
			return err
		}
		if err := checkImmutable("trigger", "app_id", body.AppID, t.AppID); err != nil {
			return err
		}
		// As in Fn, a trigger stays with its fn; point a new trigger
		// at the other fn instead.
		if err := checkImmutable("trigger", "fn_id", body.FnID, t.FnID); err != nil {
			return err
		}
		if err := checkCreatedAt("trigger", body.CreatedAt, t.CreatedAt); err != nil {
			return err
		}
		if body.Name != "" {
			t.Name = body.Name
		}
		if body.Type != "" {
			t.Type = body.Type
		}
		if body.Source != "" {
			t.Source = body.Source
		}
		t.Annotations = mergeAnnotations(t.Annotations, body.Annotations)
		return validateTrigger(t)
	})
	if err != nil {
		writeError(w, err)
		return
	}
	s.calls.Refresh(r.Context(), t.FnID)
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) deleteTrigger(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("trigger_id")
	// Read first: the fn it served must be refreshed once it is gone.
	t, err := s.store.GetTrigger(r.Context(), id)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.store.DeleteTrigger(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	s.calls.Refresh(r.Context(), t.FnID)
	deleted(w, "trigger", id)
}
