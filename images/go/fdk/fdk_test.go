package fdk

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

var hotFormats = []string{protocol.HTTP, protocol.JSON, protocol.JSONHTTP, protocol.CloudEvent}

// harness runs serve in a goroutine on pipes, playing kilnd's part.
type harness struct {
	t      *testing.T
	codec  protocol.Codec
	stdin  *io.PipeWriter
	stdout *bufio.Reader
	done   chan error
}

func start(t *testing.T, format string, environ []string, h Handler) *harness {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	codec, err := protocol.New(format, protocol.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	hs := &harness{t: t, codec: codec, stdin: inW, stdout: bufio.NewReader(outR), done: make(chan error, 1)}
	go func() {
		err := serve(context.Background(), format, inR, outW, environ, h)
		outW.Close()
		hs.done <- err
	}()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	return hs
}

// call writes a request and reads one response frame.
func (hs *harness) call(req *protocol.Request) *protocol.Response {
	hs.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- hs.codec.WriteRequest(hs.stdin, req) }()
	resp, err := hs.codec.ReadResponse(hs.stdout)
	if err != nil {
		hs.t.Fatalf("reading response: %v", err)
	}
	if err := <-errc; err != nil {
		hs.t.Fatalf("writing request: %v", err)
	}
	return resp
}

// stop closes stdin and returns serve's result.
func (hs *harness) stop() error {
	hs.t.Helper()
	hs.stdin.Close()
	select {
	case err := <-hs.done:
		return err
	case <-time.After(5 * time.Second):
		hs.t.Fatal("serve did not return after stdin closed")
		return nil
	}
}

// echo answers with what it learned of the call, so the tests can see
// what the FDK gave the handler.
var echo = HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
	body, _ := io.ReadAll(in)
	fc := GetContext(ctx)
	dl, ok := ctx.Deadline()
	SetHeader(out, "Content-Type", "text/plain")
	SetHeader(out, "X-Call-Id", fc.CallID())
	SetHeader(out, "X-Method", fc.Method())
	SetHeader(out, "X-Url", fc.RequestURL())
	SetHeader(out, "X-Format", fc.Format())
	SetHeader(out, "X-Ctx-Deadline", fmt.Sprint(ok && dl.Equal(fc.Deadline())))
	SetHeader(out, "X-Config", fc.Config()["APP_SETTING"])
	SetHeader(out, "X-Got-Header", strings.Join(fc.Header().Values("X-Test"), "|"))
	AddHeader(out, "X-Multi", "1")
	AddHeader(out, "X-Multi", "2")
	if s := fc.Header().Get("X-Status"); s != "" {
		var code int
		fmt.Sscan(s, &code)
		WriteStatus(out, code)
	}
	out.Write(body)
	if fc.Header().Get("X-Panic") != "" {
		panic("handler exploded")
	}
})

var environ = []string{"FN_APP_NAME=app", "APP_SETTING=on", "FN_FORMAT=whatever", "PATH=/bin"}

func TestHot(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			hs := start(t, format, environ, echo)
			deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
			for i := range 3 {
				req := &protocol.Request{
					CallID:   fmt.Sprintf("call-%d", i),
					Deadline: deadline,
					Method:   "POST",
					URL:      "http://kiln/t/app/fn?i=1",
					Header:   http.Header{"X-Test": {"a", "b"}, "Content-Type": {"text/plain"}},
					Body:     []byte(fmt.Sprintf("body %d", i)),
				}
				resp := hs.call(req)
				want := map[string]string{
					"X-Call-Id": req.CallID, "X-Method": "POST", "X-Url": req.URL, "X-Format": format,
					"X-Ctx-Deadline": "true", "X-Config": "on", "X-Got-Header": "a|b", "Content-Type": "text/plain",
				}
				for k, v := range want {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("call %d: %s = %q, want %q", i, k, got, v)
					}
				}
				if resp.Status != 200 || string(resp.Body) != string(req.Body) || len(resp.Header.Values("X-Multi")) != 2 {
					t.Errorf("call %d: %d %v %q", i, resp.Status, resp.Header, resp.Body)
				}
			}
			if err := hs.stop(); err != nil {
				t.Errorf("serve after EOF: %v", err)
			}
		})
	}
}

func TestStatusAndPanic(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			hs := start(t, format, environ, echo)
			resp := hs.call(&protocol.Request{Method: "GET", URL: "http://h/", Header: http.Header{"X-Status": {"418"}}})
			if resp.Status != 418 {
				t.Errorf("status %d, want 418", resp.Status)
			}
			resp = hs.call(&protocol.Request{Method: "GET", URL: "http://h/", Header: http.Header{"X-Panic": {"1"}}})
			if resp.Status != 500 || !strings.Contains(string(resp.Body), "handler exploded") {
				t.Errorf("after panic: %d %q", resp.Status, resp.Body)
			}
			// A status no format can carry becomes a 500 the caller can read.
			resp = hs.call(&protocol.Request{Method: "GET", URL: "http://h/", Header: http.Header{"X-Status": {"42"}}})
			if resp.Status != 500 || !strings.Contains(string(resp.Body), "status 42") {
				t.Errorf("bad status: %d %q", resp.Status, resp.Body)
			}
			// Still serving.
			resp = hs.call(&protocol.Request{Method: "GET", URL: "http://h/", Body: []byte("alive")})
			if resp.Status != 200 || string(resp.Body) != "alive" {
				t.Errorf("after panic: %d %q", resp.Status, resp.Body)
			}
			if err := hs.stop(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestGarbageInputStops(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			hs := start(t, format, nil, echo)
			go hs.stdin.Write([]byte("this is not a frame\n\n"))
			go io.Copy(io.Discard, hs.stdout)
			select {
			case err := <-hs.done:
				if !errors.Is(err, protocol.ErrProtocol) {
					t.Errorf("serve: %v, want ErrProtocol", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("serve kept going after garbage")
			}
		})
	}
}

func TestHijack(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			h := HandlerFunc(func(ctx context.Context, in io.Reader, out io.Writer) {
				out.Write([]byte("dropped"))
				raw, ok := Hijack(out)
				if !ok {
					t.Error("Hijack refused the FDK's writer")
					return
				}
				raw.Write([]byte("RAW\n"))
			})
			hs := start(t, format, nil, h)
			go hs.codec.WriteRequest(hs.stdin, &protocol.Request{Method: "GET", URL: "http://h/"})
			line, err := hs.stdout.ReadString('\n')
			if err != nil || line != "RAW\n" {
				t.Errorf("stdout %q, %v", line, err)
			}
			if err := hs.stop(); err != nil {
				t.Error(err)
			}
			if rest, _ := io.ReadAll(hs.stdout); len(rest) != 0 {
				t.Errorf("FDK wrote %q after a hijacked call", rest)
			}
		})
	}
	if _, ok := Hijack(&bytes.Buffer{}); ok {
		t.Error("Hijack accepted a foreign writer")
	}
}

func TestDefault(t *testing.T) {
	env := append([]string{
		"FN_CALL_ID=c1", "FN_DEADLINE=2030-01-02T03:04:05Z", "FN_METHOD=PUT",
		"FN_REQUEST_URL=http://h/x", "FN_HEADER_X-Test=a, b", "FN_HEADER_Content-Type=text/plain",
	}, environ...)
	for _, format := range []string{"", protocol.Default} {
		var out bytes.Buffer
		var seen Context
		h := HandlerFunc(func(ctx context.Context, in io.Reader, w io.Writer) {
			seen = GetContext(ctx)
			if dl, ok := ctx.Deadline(); !ok || !dl.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) {
				t.Errorf("ctx deadline %v %v", dl, ok)
			}
			WriteStatus(w, 201)
			io.Copy(w, in)
		})
		if err := serve(context.Background(), format, strings.NewReader("input"), &out, env, h); err != nil {
			t.Fatal(err)
		}
		if out.String() != "input" {
			t.Errorf("stdout %q", out.String())
		}
		if seen.CallID() != "c1" || seen.Method() != "PUT" || seen.RequestURL() != "http://h/x" ||
			seen.Header().Get("X-Test") != "a, b" || seen.Format() != protocol.Default {
			t.Errorf("context %q %q %q %v %q", seen.CallID(), seen.Method(), seen.RequestURL(), seen.Header(), seen.Format())
		}
		cfg := seen.Config()
		if cfg["APP_SETTING"] != "on" || cfg["FN_APP_NAME"] != "app" || cfg["FN_CALL_ID"] != "" || cfg["FN_HEADER_X-Test"] != "" {
			t.Errorf("config %v", cfg)
		}
	}
	// A panic is a failed call: an error (exit 1), nothing on stdout.
	var out bytes.Buffer
	err := serve(context.Background(), protocol.Default, strings.NewReader(""), &out, env,
		HandlerFunc(func(context.Context, io.Reader, io.Writer) { panic("boom") }))
	if err == nil || !strings.Contains(err.Error(), "boom") || out.Len() != 0 {
		t.Errorf("panic in default: %v, stdout %q", err, out.String())
	}
}

func TestUnknownFormat(t *testing.T) {
	if err := serve(context.Background(), "xml", strings.NewReader(""), io.Discard, nil, echo); err == nil {
		t.Error("serve accepted format xml")
	}
}

func TestGetContextOutsideFDK(t *testing.T) {
	c := GetContext(context.Background())
	if c.CallID() != "" || c.Header() == nil || !c.Deadline().IsZero() {
		t.Errorf("empty context %+v", c)
	}
	// Helpers on a foreign writer are harmless no-ops.
	var b bytes.Buffer
	SetHeader(&b, "A", "b")
	WriteStatus(&b, 500)
}
