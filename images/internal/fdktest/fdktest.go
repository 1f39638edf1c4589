// Package fdktest checks an FDK that runs under an interpreter (Python's,
// Node's) the same way for every language: it starts the FDK with a
// function over pipes and talks to it with kiln's own codecs, so each FDK
// is held to the framing kilnd really writes and reads.
package fdktest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// Runtime describes one FDK under test.
type Runtime struct {
	// Bin is the interpreter, looked up in PATH.
	Bin string
	// FDK is the FDK's file, run as: Bin FDK FUNCTION_FILE.
	FDK string
	// Env is added to the FDK's environment (module paths and the like).
	Env []string
	// Conformance is the conformance function's file.
	Conformance string
	// StatusFunc is a function that sets a status and headers, raises
	// "boom" and returns a Response object for "resp" (see the Python
	// and Node tests for what each must do).
	StatusFunc struct{ Name, Source string }
	// Embedded is what the package embeds; it must equal the FDK file.
	Embedded []byte
}

// Run runs every check against rt.
func Run(t *testing.T, rt Runtime) {
	t.Run("conformance in hot formats", rt.conformanceHotFormats)
	t.Run("status, headers and errors", rt.statusHeadersAndErrors)
	t.Run("default format", rt.defaultFormat)
	t.Run("garbage ends the process", rt.garbageEndsTheProcess)
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

// fdkProc is the FDK serving one function over pipes.
type fdkProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr bytes.Buffer
}

func (rt Runtime) startFDK(t *testing.T, format, funcFile string, env ...string) *fdkProc {
	t.Helper()
	p := &fdkProc{}
	bin, err := exec.LookPath(rt.Bin)
	if err != nil {
		t.Fatalf("%s is needed to test this FDK: %v", rt.Bin, err)
	}
	p.cmd = exec.Command(bin, rt.FDK, funcFile)
	p.cmd.Env = append(append([]string{"FN_FORMAT=" + format, "PATH=" + os.Getenv("PATH")}, rt.Env...), env...)
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReader(out)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.stdin.Close()
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("fdk stderr:\n%s", p.stderr.String())
		}
	})
	return p
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
	dir := t.TempDir()
	fn := filepath.Join(dir, rt.StatusFunc.Name)
	if err := os.WriteFile(fn, []byte(rt.StatusFunc.Source), 0o644); err != nil {
		t.Fatal(err)
	}
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
	err := p.cmd.Wait()
	if err == nil {
		t.Fatal("the FDK exited 0 after a bad frame")
	}
	if !strings.Contains(p.stderr.String(), "fdk:") {
		t.Errorf("stderr = %q", p.stderr.String())
	}
}

func ptr(s string) *string { return &s }

func show(v any) string { b, _ := json.Marshal(v); return string(b) }
