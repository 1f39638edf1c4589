package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/protocol"
)

// echoHot answers with the request's body, doing nothing else: what is
// left in a benchmark of it is kilnd's own work per call.
type echoHot struct{}

func (echoHot) Done() <-chan struct{}       { return nil }
func (echoHot) Err() error                  { return nil }
func (echoHot) Close(context.Context) error { return nil }
func (echoHot) Call(_ context.Context, req *protocol.Request, _ io.Writer) (*protocol.Response, error) {
	return &protocol.Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: req.Body}, nil
}

// BenchmarkInvokeHot is kilnd's CPU and allocations per hot call from the
// HTTP handler down to the instance and back, without containers, syscalls
// or the network: the part of a call's cost kilnd's code decides.
func BenchmarkInvokeHot(b *testing.B) {
	e, rt := newSecEnv(&testing.T{}, Config{})
	rt.hot = func() (calls.Instance, error) { return echoHot{}, nil }
	a := e.app("bench")
	f := ok[fnJSON](e, "POST", "/v2/fns", map[string]any{"name": "echo", "app_id": a.ID, "image": "img:1", "format": "json-http"})
	body := bytes.Repeat([]byte("k"), 1024)
	run := func() {
		req := httptest.NewRequest("POST", "/invoke/"+f.ID, bytes.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
	run()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		run()
	}
}
