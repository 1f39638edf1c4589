package fdk

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/images/internal/fdktest"
)

// TestMain lets this test binary be the function fdktest starts, so the
// Go FDK is held to the same process-level checks as the others: a real
// socket, real signals, real pipes.
func TestMain(m *testing.M) {
	fdktest.ServeChild(map[string]func(){
		"echo":   func() { Handle(HandlerFunc(echoFunc)) },
		"status": func() { Handle(HandlerFunc(statusFunc)) },
		"stream": func() { Handle(HandlerFunc(streamFunc)) },
	})
	os.Exit(m.Run())
}

func TestProcess(t *testing.T) {
	rt := fdktest.Runtime{
		Command:    fdktest.SelfCommand,
		EchoFunc:   fdktest.Func{Name: "echo"},
		StatusFunc: fdktest.Func{Name: "status"},
		StreamFunc: fdktest.Func{Name: "stream"},
	}
	t.Run("http-stream", rt.CheckHTTPStream)
	t.Run("status, headers and errors", rt.CheckStatus)
	t.Run("streaming", rt.CheckStreaming)
}

// echoFunc is fdktest's EchoFunc.
func echoFunc(ctx context.Context, in io.Reader, out io.Writer) {
	fc := GetContext(ctx)
	SetHeader(out, "Content-Type", "application/octet-stream")
	SetHeader(out, "X-Call-Id", fc.CallID())
	SetHeader(out, "X-Deadline", fc.Deadline().Format(time.RFC3339Nano))
	SetHeader(out, "X-Method", fc.Method())
	SetHeader(out, "X-Url", fc.RequestURL())
	SetHeader(out, "X-Format", fc.Format())
	SetHeader(out, "X-Config", fc.Config()["ENV1"])
	SetHeader(out, "X-Content-Type", fc.Header().Get("Content-Type"))
	SetHeader(out, "X-Got-Header", strings.Join(fc.Header().Values("X-Test"), "|"))
	AddHeader(out, "X-Multi", "1")
	AddHeader(out, "X-Multi", "2")
	if s := fc.Header().Get("X-Status"); s != "" {
		var code int
		fmt.Sscan(s, &code)
		WriteStatus(out, code)
	}
	io.Copy(out, in)
}

// statusFunc is fdktest's StatusFunc.
func statusFunc(ctx context.Context, in io.Reader, out io.Writer) {
	body, _ := io.ReadAll(in)
	fc := GetContext(ctx)
	switch string(body) {
	case "boom":
		panic("boom")
	case "resp":
		WriteStatus(out, 201)
		SetHeader(out, "Content-Type", "application/octet-stream")
		AddHeader(out, "X-Multi", "a")
		AddHeader(out, "X-Multi", "b")
		out.Write([]byte("\x00\xffbin"))
		return
	}
	fmt.Fprintln(os.Stderr, "this goes to stderr, not to kiln")
	WriteStatus(out, 202)
	AddHeader(out, "X-Out", "1")
	AddHeader(out, "x-out", "2")
	fmt.Fprintf(out, "text %s %s %s", fc.Method(), fc.RequestURL(), fc.CallID())
}

// streamFunc is fdktest's StreamFunc.
func streamFunc(ctx context.Context, in io.Reader, out io.Writer) {
	gate := GetContext(ctx).Header().Get("X-Gate")
	if gate == "" {
		SetHeader(out, "Content-Type", "text/plain")
		io.WriteString(out, "whole")
		return
	}
	WriteStatus(out, 201)
	SetHeader(out, "X-Stream", "yes")
	SetHeader(out, "Content-Type", "text/event-stream")
	io.WriteString(out, "data: event 0\n\n")
	Flush(out)
	for {
		if _, err := os.Stat(gate); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	for i := 1; i <= 2; i++ {
		fmt.Fprintf(out, "data: event %d\n\n", i)
		Flush(out)
	}
}
