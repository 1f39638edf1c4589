package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
)

// stateAPI is a fake kilnd that keeps apps, fns, triggers and images, with
// kilnd's merge rules on PUT, for tests of commands that read what they
// wrote (deploy). fail, when set, answers a request with an error instead.
type stateAPI struct {
	*fakeAPI
	mu       sync.Mutex
	next     int
	apps     map[string]map[string]any
	fns      map[string]map[string]any
	triggers map[string]map[string]any
	images   map[string]string // name -> digest
	imports  int
	fail     func(r *http.Request) bool
}

func newStateAPI(t *testing.T) *stateAPI {
	s := &stateAPI{fakeAPI: newFakeAPI(t), apps: map[string]map[string]any{}, fns: map[string]map[string]any{},
		triggers: map[string]map[string]any{}, images: map[string]string{}}
	for _, kind := range []string{"apps", "fns", "triggers"} {
		kind := kind
		s.handle("GET /v2/"+kind, func(w http.ResponseWriter, r *http.Request) { s.list(w, r, kind) })
		s.handle("POST /v2/"+kind, func(w http.ResponseWriter, r *http.Request) { s.create(w, r, kind) })
		s.handle("PUT /v2/"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.update(w, r, kind) })
		s.handle("DELETE /v2/"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.remove(w, r, kind) })
	}
	s.handle("GET /v2/images", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		items := []any{}
		for n, d := range s.images {
			items = append(items, map[string]any{"name": n, "digest": d})
		}
		writeJSONBody(w, 200, map[string]any{"items": items, "next_cursor": ""})
	})
	s.handle("POST /v2/images/import", func(w http.ResponseWriter, r *http.Request) {
		names, dgst, err := archiveNamesFrom(r.Body)
		if err != nil {
			writeJSONBody(w, 400, map[string]any{"message": err.Error(), "code": 400})
			return
		}
		s.mu.Lock()
		s.imports++
		for _, n := range names {
			s.images[normalizeRef(n)] = dgst
		}
		s.mu.Unlock()
		writeJSONBody(w, 200, map[string]any{"images": names})
	})
	s.handle("DELETE /v2/images/{ref...}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		delete(s.images, normalizeRef(r.PathValue("ref")))
		s.mu.Unlock()
		writeJSONBody(w, 200, map[string]any{"message": "deleted"})
	})
	return s
}

func (s *stateAPI) store(kind string) map[string]map[string]any {
	return map[string]map[string]map[string]any{"apps": s.apps, "fns": s.fns, "triggers": s.triggers}[kind]
}

func (s *stateAPI) failed(w http.ResponseWriter, r *http.Request) bool {
	if s.fail != nil && s.fail(r) {
		writeJSONBody(w, 500, map[string]any{"message": "injected failure", "code": 500})
		return true
	}
	return false
}

func (s *stateAPI) list(w http.ResponseWriter, r *http.Request, kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := r.URL.Query()
	var ids []string
	for id, o := range s.store(kind) {
		if (q.Get("name") == "" || o["name"] == q.Get("name")) && (q.Get("app_id") == "" || o["app_id"] == q.Get("app_id")) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	items := []any{}
	for _, id := range ids {
		items = append(items, s.store(kind)[id])
	}
	writeJSONBody(w, 200, map[string]any{"items": items, "next_cursor": ""})
}

func (s *stateAPI) create(w http.ResponseWriter, r *http.Request, kind string) {
	if s.failed(w, r) {
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := fmt.Sprintf("%s%d", kind[:1], s.next)
	body["id"] = id
	if kind == "fns" {
		for k, v := range map[string]any{"memory": 128.0, "timeout": 30.0, "idle_timeout": 30.0} {
			if _, ok := body[k]; !ok {
				body[k] = v
			}
		}
	}
	s.store(kind)[id] = body
	writeJSONBody(w, 200, body)
}

// update merges as kilnd does: fields replace, config and annotations
// merge, an empty config value or a null annotation removes the key.
func (s *stateAPI) update(w http.ResponseWriter, r *http.Request, kind string) {
	if s.failed(w, r) {
		return
	}
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.store(kind)[r.PathValue("id")]
	if !ok {
		writeJSONBody(w, 404, map[string]any{"message": kind + " not found", "code": 404})
		return
	}
	for k, v := range body {
		switch k {
		case "config", "annotations":
			m, _ := cur[k].(map[string]any)
			m = maps.Clone(m)
			if m == nil {
				m = map[string]any{}
			}
			for kk, vv := range v.(map[string]any) {
				if vv == nil || vv == "" {
					delete(m, kk)
				} else {
					m[kk] = vv
				}
			}
			cur[k] = m
		default:
			cur[k] = v
		}
	}
	writeJSONBody(w, 200, cur)
}

func (s *stateAPI) remove(w http.ResponseWriter, r *http.Request, kind string) {
	if s.failed(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.store(kind), r.PathValue("id"))
	writeJSONBody(w, 200, map[string]any{"message": "deleted"})
}

func (s *stateAPI) count(kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.store(kind))
}

// archiveNamesFrom is archiveNames on a stream, for the fake's import.
func archiveNamesFrom(r io.Reader) ([]string, string, error) {
	f, err := createTempFrom(r)
	if err != nil {
		return nil, "", err
	}
	defer os.Remove(f)
	return archiveNames(f)
}

func createTempFrom(r io.Reader) (string, error) {
	f, err := os.CreateTemp("", "fake-import-*.tar")
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = io.Copy(f, r)
	return f.Name(), err
}
