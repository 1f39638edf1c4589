// Package fdktest checks an FDK the same way for every language: it starts
// the FDK with a function as a process, over pipes in the stdio formats
// and over a unix socket in http-stream, and talks to it as kilnd does
// (with kiln's own codecs on stdio), so each FDK is held to the framing
// kilnd really writes and reads. The interpreted FDKs (Python's, Node's)
// run every check with Run; the Go FDK, whose functions are compiled,
// runs its test binary as the function (SelfCommand, ServeChild) and
// picks the checks that apply.
package fdktest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// Func is a function of the FDK's language: Source is written to a file
// called Name in a temporary directory and that file is served. With no
// Source, Name is passed as it is (a file, or a name Command knows).
type Func struct{ Name, Source string }

// Runtime describes one FDK under test.
type Runtime struct {
	// Bin is the interpreter, looked up in PATH.
	Bin string
	// FDK is the FDK's file, run as: Bin FDK FUNCTION_FILE.
	FDK string
	// Command, when set, replaces "Bin FDK FUNCTION_FILE": it returns the
	// command that serves function fn, with any environment it needs in
	// its Env (the rest of the environment is added).
	Command func(fn string) *exec.Cmd
	// Env is added to the FDK's environment (module paths and the like).
	Env []string
	// Conformance is the conformance function's file.
	Conformance string
	// StatusFunc is a function that sets a status and headers, raises
	// "boom" and returns a Response object for "resp" (see the Python
	// and Node tests for what each must do).
	StatusFunc Func
	// EchoFunc answers with the request body, byte for byte, status
	// X-Status when the request has that header (else 200), and headers
	// Content-Type: application/octet-stream, X-Multi: 1 and X-Multi: 2,
	// and what it learned of the call: X-Call-Id, X-Deadline (RFC 3339),
	// X-Method, X-Url, X-Format, X-Config (the config value ENV1),
	// X-Content-Type (the request's) and X-Got-Header (the values of
	// request header X-Test joined with "|"). It never flushes.
	EchoFunc Func
	// StreamFunc answers "whole" (200, text/plain, never flushed) to a
	// request without an X-Gate header. Given X-Gate: PATH it answers 201
	// with X-Stream: yes and Content-Type: text/event-stream, sends
	// "data: event 0\n\n" and flushes, waits until PATH exists, then sends
	// "data: event 1\n\n" and "data: event 2\n\n", flushing after each.
	StreamFunc Func
	// SSE is the runtime's example server-sent events function: 5 events
	// "data: event N\n\n" (N from 1), 200 ms apart, or X-Events events
	// X-Gap-Ms apart, flushed one by one.
	SSE string
	// Embedded is what the package embeds; it must equal the FDK file.
	Embedded []byte
}

// Run runs every check against rt.
func Run(t *testing.T, rt Runtime) {
	t.Run("conformance", rt.CheckConformance)
	t.Run("status, headers and errors", rt.CheckStatus)
	t.Run("garbage ends the process", rt.garbageEndsTheProcess)
	t.Run("http-stream", rt.CheckHTTPStream)
	t.Run("streaming", rt.CheckStreaming)
	t.Run("sse example", rt.CheckSSE)
	t.Run("embedded FDK is the file", func(t *testing.T) {
		b, err := os.ReadFile(rt.FDK)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, rt.Embedded) {
			t.Errorf("the embedded FDK differs from %s", rt.FDK)
		}
	})
}

// CheckConformance calls the conformance function in every format.
func (rt Runtime) CheckConformance(t *testing.T) {
	t.Run("hot formats", rt.conformanceHotFormats)
	t.Run("chunked request in http", rt.chunkedRequest)
	t.Run("default format", rt.defaultFormat)
	t.Run("http-stream", rt.conformanceHTTPStream)
}

// CheckStatus checks StatusFunc in the hot formats.
func (rt Runtime) CheckStatus(t *testing.T) {
	t.Run("stdio", rt.statusHeadersAndErrors)
	t.Run("http-stream", rt.statusHTTPStream)
}

// fdkProc is the FDK serving one function as a process.
type fdkProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr bytes.Buffer
	// exited is closed once the process is waited for; waitErr is then
	// its exit status.
	exited  chan struct{}
	waitErr error
}

// file is f's file (or name) to serve.
func (rt Runtime) file(t *testing.T, f Func) string {
	t.Helper()
	if f.Name == "" {
		t.Fatal("the runtime does not provide this function")
	}
	if f.Source == "" {
		return f.Name
	}
	fn := filepath.Join(t.TempDir(), f.Name)
	if err := os.WriteFile(fn, []byte(f.Source), 0o644); err != nil {
		t.Fatal(err)
	}
	return fn
}

func (rt Runtime) startFDK(t *testing.T, format, funcFile string, env ...string) *fdkProc {
	t.Helper()
	p := &fdkProc{exited: make(chan struct{})}
	if rt.Command != nil {
		p.cmd = rt.Command(funcFile)
	} else {
		bin, err := exec.LookPath(rt.Bin)
		if err != nil {
			t.Fatalf("%s is needed to test this FDK: %v", rt.Bin, err)
		}
		p.cmd = exec.Command(bin, rt.FDK, funcFile)
	}
	p.cmd.Env = append(append(append(p.cmd.Env, "FN_FORMAT="+format, "PATH="+os.Getenv("PATH")), rt.Env...), env...)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	// A pipe of our own rather than StdoutPipe, which Wait closes: the
	// process is waited for as soon as it exits, and what it wrote must
	// still be readable then.
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = outW
	p.stdout = bufio.NewReader(outR)
	err = p.cmd.Start()
	outW.Close()
	if err != nil {
		outR.Close()
		t.Fatal(err)
	}
	_ = outR.SetReadDeadline(time.Now().Add(readBound))
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		// SIGTERM ends an http-stream FDK; the others end with stdin.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if p.wait(10*time.Second) != nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		outR.Close()
		if t.Failed() {
			t.Logf("fdk stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

var errStillRunning = errors.New("the FDK is still running")

// readBound limits how long a test reads from one FDK process, its stdout
// or its socket: far longer than any check takes, so that it only turns an
// FDK that never answers into a failure rather than a hung test.
const readBound = 2 * time.Minute

// wait waits for the process to exit, as long as within, and returns its
// exit status (errStillRunning if it has not exited).
func (p *fdkProc) wait(within time.Duration) error {
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(within):
		return errStillRunning
	}
}

func request(body string, header http.Header) *protocol.Request {
	return &protocol.Request{
		CallID:   "call-1",
		Deadline: time.Now().Add(time.Minute).UTC(),
		Method:   "POST",
		URL:      "http://kiln.test/t/app/fn?q=1",
		Header:   header,
		Body:     []byte(body),
	}
}

type conformance struct {
	Normal  string  `json:"normal"`
	Env1    *string `json:"env1"`
	Payload any     `json:"payload"`
	Header  *string `json:"header"`
}

func (rt Runtime) conformanceHotFormats(t *testing.T) {
	for _, format := range []string{protocol.JSON, protocol.JSONHTTP, protocol.HTTP} {
		t.Run(format, func(t *testing.T) {
			codec, err := protocol.New(format, protocol.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			p := rt.startFDK(t, format, rt.Conformance, "ENV1=config-value")
			calls := []struct {
				body    string
				header  http.Header
				payload any
				hdr     *string
			}{
				{`{"name":"kiln"}`, http.Header{"X-Test": {"one"}, "Content-Type": {"application/json"}}, map[string]any{"name": "kiln"}, ptr("one")},
				{"plain text", http.Header{}, "plain text", nil},
				{"", http.Header{"X-Test": {"a", "b"}}, "", ptr("a")},
			}
			// Two frames in one write: the FDK must not lose the second
			// to a reader that buffered past the first.
			var both bytes.Buffer
			for _, c := range calls[:2] {
				if err := codec.WriteRequest(&both, request(c.body, c.header)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := p.stdin.Write(both.Bytes()); err != nil {
				t.Fatal(err)
			}
			for i, c := range calls {
				if i == 2 {
					if err := codec.WriteRequest(p.stdin, request(c.body, c.header)); err != nil {
						t.Fatal(err)
					}
				}
				resp, err := codec.ReadResponse(p.stdout)
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				if resp.Status != 200 || resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("call %d: status %d headers %v body %q", i, resp.Status, resp.Header, resp.Body)
				}
				var got conformance
				if err := json.Unmarshal(resp.Body, &got); err != nil {
					t.Fatalf("call %d: %q: %v", i, resp.Body, err)
				}
				want := conformance{Normal: "Hello World!", Env1: ptr("config-value"), Payload: c.payload, Header: c.hdr}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("call %d: got %s, want %s", i, show(got), show(want))
				}
			}
		})
	}
}

func (rt Runtime) statusHeadersAndErrors(t *testing.T) {
	fn := rt.file(t, rt.StatusFunc)
	for _, format := range []string{protocol.JSONHTTP, protocol.HTTP, protocol.JSON} {
		t.Run(format, func(t *testing.T) {
			codec, _ := protocol.New(format, protocol.Limits{})
			p := rt.startFDK(t, format, fn)
			call := func(body string) *protocol.Response {
				t.Helper()
				if err := codec.WriteRequest(p.stdin, request(body, http.Header{})); err != nil {
					t.Fatal(err)
				}
				resp, err := codec.ReadResponse(p.stdout)
				if err != nil {
					t.Fatalf("%q: %v", body, err)
				}
				return resp
			}
			r := call("hi")
			if r.Status != 202 || !reflect.DeepEqual(r.Header["X-Out"], []string{"1", "2"}) ||
				string(r.Body) != "text POST http://kiln.test/t/app/fn?q=1 call-1" {
				t.Errorf("set status and headers: %d %v %q", r.Status, r.Header, r.Body)
			}
			r = call("boom")
			if r.Status != 500 || !strings.Contains(string(r.Body), "boom") {
				t.Errorf("handler exception: %d %q", r.Status, r.Body)
			}
			r = call("resp")
			wantBody := "\x00\xffbin"
			if format == protocol.JSON {
				wantBody = "\x00\ufffdbin" // json carries text: invalid UTF-8 is replaced
			}
			if r.Status != 201 || string(r.Body) != wantBody || !reflect.DeepEqual(r.Header["X-Multi"], []string{"a", "b"}) {
				t.Errorf("Response object: %d %v %q", r.Status, r.Header, r.Body)
			}
			// The container stays usable after a failed call.
			if r := call("again"); r.Status != 202 {
				t.Errorf("after an exception: %d", r.Status)
			}
		})
	}
}

func (rt Runtime) defaultFormat(t *testing.T) {
	env := []string{"ENV1=v1", "FN_HEADER_X-Test=from env", "FN_CALL_ID=c1", "FN_METHOD=PUT"}
	p := rt.startFDK(t, protocol.Default, rt.Conformance, env...)
	if _, err := p.stdin.Write([]byte(`[1,2]`)); err != nil {
		t.Fatal(err)
	}
	p.stdin.Close()
	out, err := io.ReadAll(p.stdout)
	if err != nil {
		t.Fatal(err)
	}
	var got conformance
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	want := conformance{Normal: "Hello World!", Env1: ptr("v1"), Payload: []any{1.0, 2.0}, Header: ptr("from env")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", show(got), show(want))
	}
}

func (rt Runtime) garbageEndsTheProcess(t *testing.T) {
	p := rt.startFDK(t, protocol.JSONHTTP, rt.Conformance)
	if _, err := p.stdin.Write([]byte("not a frame\n\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(p.stdout); err != nil {
		t.Fatal(err)
	}
	err := p.wait(10 * time.Second)
	if err == nil || err == errStillRunning {
		t.Fatalf("after a bad frame: %v, want a non-zero exit", err)
	}
	if !strings.Contains(p.stderr.String(), "fdk:") {
		t.Errorf("stderr = %q", p.stderr.String())
	}
}

func ptr(s string) *string { return &s }

func show(v any) string { b, _ := json.Marshal(v); return string(b) }
