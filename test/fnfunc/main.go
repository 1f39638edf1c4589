// Command fnfunc is a function written against Fn's published http-stream
// contract alone (docs/developers/fn-format.md in fnproject/fn), with
// nothing of kiln's: it listens on the unix socket FN_LISTENER names, the
// way Fn's FDKs do (a socket under another name, then lsnr.sock as a
// relative link to it), reads Fn's headers and answers through
// Fn-Http-Status and Fn-Http-H-*. The end-to-end tests run it to show that
// a function made for Fn runs on kiln unchanged.
//
// Behaviour, by the client header X-Test-Action (Fn-Http-H-X-Test-Action
// on the socket): absent echoes the body with status X-Want-Status and an
// X-Fn-Seen header describing what arrived; "sse" streams 5 events 100 ms
// apart; "crash" exits mid-call; "hang" never answers; "garbage" writes
// bytes that are not HTTP. The env var FNFUNC_START=never-listen (fn
// config) makes it never listen, FNFUNC_START=exit exit at start.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	switch os.Getenv("FNFUNC_START") {
	case "exit":
		fmt.Fprintln(os.Stderr, "fnfunc: exiting at start")
		os.Exit(4)
	case "never-listen":
		for {
			time.Sleep(time.Hour)
		}
	}
	if os.Getenv("FN_FORMAT") != "http-stream" {
		fmt.Fprintf(os.Stderr, "fnfunc: FN_FORMAT=%q, want http-stream\n", os.Getenv("FN_FORMAT"))
		os.Exit(2)
	}
	path, ok := strings.CutPrefix(os.Getenv("FN_LISTENER"), "unix:")
	if !ok {
		fmt.Fprintln(os.Stderr, "fnfunc: FN_LISTENER must be unix:/path")
		os.Exit(2)
	}
	phony := filepath.Join(filepath.Dir(path), "phony"+filepath.Base(path))
	os.Remove(phony)
	os.Remove(path)
	ln, err := net.Listen("unix", phony)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fnfunc: listen:", err)
		os.Exit(1)
	}
	if err := os.Chmod(phony, 0o666); err != nil {
		fmt.Fprintln(os.Stderr, "fnfunc: chmod:", err)
		os.Exit(1)
	}
	if err := os.Symlink(filepath.Base(phony), path); err != nil {
		fmt.Fprintln(os.Stderr, "fnfunc: symlink:", err)
		os.Exit(1)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		os.Remove(path)
		os.Remove(phony)
		os.Exit(0)
	}()
	fmt.Fprintln(os.Stderr, "fnfunc: listening on", path)
	_ = http.Serve(ln, http.HandlerFunc(serve))
}

func serve(w http.ResponseWriter, r *http.Request) {
	in := r.Header
	switch in.Get("Fn-Http-H-X-Test-Action") {
	case "crash":
		fmt.Fprintln(os.Stderr, "fnfunc: crashing")
		os.Exit(3)
	case "hang":
		<-r.Context().Done()
		return
	case "garbage":
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Write([]byte("this is not an http response\r\n\r\n"))
			conn.Close()
		}
		return
	case "sse":
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Fn-Http-Status", "200")
		w.(http.Flusher).Flush()
		for i := 0; i < 5; i++ {
			if i > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
		}
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	client := map[string][]string{}
	for k, vs := range in {
		if name, ok := strings.CutPrefix(k, "Fn-Http-H-"); ok {
			client[name] = vs
		}
	}
	seen, _ := json.Marshal(map[string]any{
		"path":           r.URL.Path,
		"method":         r.Method,
		"call_id":        in.Get("Fn-Call-Id"),
		"deadline":       in.Get("Fn-Deadline"),
		"intent":         in.Get("Fn-Intent"),
		"client_method":  in.Get("Fn-Http-Method"),
		"client_url":     in.Get("Fn-Http-Request-Url"),
		"client_headers": client,
		"content_type":   in.Get("Content-Type"),
		"format":         os.Getenv("FN_FORMAT"),
		"listener":       os.Getenv("FN_LISTENER"),
		"pid":            os.Getpid(),
	})
	status := http.StatusOK
	if s := in.Get("Fn-Http-H-X-Want-Status"); s != "" {
		status, _ = strconv.Atoi(s)
	}
	w.Header().Set("Fn-Http-Status", strconv.Itoa(status))
	w.Header().Set("Fn-Http-H-X-Fn-Seen", string(seen))
	if ct := in.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Write(body)
}
