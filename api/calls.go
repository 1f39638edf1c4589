package api

import (
	"net/http"
	"strconv"
)

func (s *Server) registerCalls(mux *http.ServeMux) {
	mux.HandleFunc("GET /v2/fns/{fn_id}/calls", s.listCalls)
	mux.HandleFunc("GET /v2/fns/{fn_id}/calls/{call_id}", s.getCall)
	mux.HandleFunc("GET /v2/fns/{fn_id}/calls/{call_id}/log", s.getCallLog)
}

// listCalls answers a fn's calls newest first; only per_page and cursor
// apply, the other list filters are meaningless under one fn.
func (s *Server) listCalls(w http.ResponseWriter, r *http.Request) {
	opts, err := listOptions(r)
	if err != nil {
		writeError(w, err)
		return
	}
	calls, next, err := s.store.ListCalls(r.Context(), r.PathValue("fn_id"), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	writeList(w, calls, next)
}

func (s *Server) getCall(w http.ResponseWriter, r *http.Request) {
	call, err := s.calls.GetCall(r.Context(), r.PathValue("fn_id"), r.PathValue("call_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, call)
}

// getCallLog answers the call's stderr as plain text, so `curl` shows it
// as the function wrote it.
func (s *Server) getCallLog(w http.ResponseWriter, r *http.Request) {
	log, err := s.store.GetCallLog(r.Context(), r.PathValue("fn_id"), r.PathValue("call_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(log)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(log)
}
