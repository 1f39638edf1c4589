package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-run/kiln/protocol"
)

// The tests run testfn for real, as a child process speaking over pipes:
// the test binary re-executes itself as the function, which also gives the
// fork action something to start.
func TestMain(m *testing.M) {
	if os.Getenv("TESTFN_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var hotFormats = []string{protocol.HTTP, protocol.JSON, protocol.JSONHTTP, protocol.CloudEvent}

type fn struct {
	t      *testing.T
	cmd    *exec.Cmd
	codec  protocol.Codec
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startFn(t *testing.T, format string, env ...string) *fn {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append([]string{
		"TESTFN_AS_MAIN=1", "TESTFN_CHILD_SLEEP=100ms", "FN_FORMAT=" + format,
		"FN_APP_NAME=testapp", "MY_CONFIG=42",
	}, env...)
	f := &fn{t: t, cmd: cmd, stderr: &lockedBuffer{}}
	cmd.Stderr = f.stderr
	if f.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f.stdout = bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if protocol.Hot(format) {
		if f.codec, err = protocol.New(format, protocol.Limits{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		f.stdin.Close()
		if f.cmd.ProcessState == nil {
			f.cmd.Process.Kill()
			f.cmd.Wait()
		}
	})
	return f
}

func request(action string, body string) *protocol.Request {
	h := http.Header{"Content-Type": {"text/plain"}}
	if action != "" {
		h.Set("X-Test-Action", action)
	}
	return &protocol.Request{
		CallID:   "call-" + strings.ReplaceAll(action, "=", "-"),
		Deadline: time.Now().Add(time.Minute),
		Method:   "POST",
		URL:      "http://kiln/t/testapp/testfn",
		Header:   h,
		Body:     []byte(body),
	}
}

// call sends one request and reads one response, failing on timeout.
func (f *fn) call(req *protocol.Request) (*protocol.Response, error) {
	f.t.Helper()
	if err := f.codec.WriteRequest(f.stdin, req); err != nil {
		f.t.Fatalf("writing request: %v", err)
	}
	type result struct {
		resp *protocol.Response
		err  error
	}
	c := make(chan result, 1)
	go func() {
		resp, err := f.codec.ReadResponse(f.stdout)
		c <- result{resp, err}
	}()
	select {
	case r := <-c:
		return r.resp, r.err
	case <-time.After(20 * time.Second):
		f.t.Fatal("no response in 20s")
		return nil, nil
	}
}

func (f *fn) mustCall(req *protocol.Request) *protocol.Response {
	f.t.Helper()
	resp, err := f.call(req)
	if err != nil {
		f.t.Fatalf("call %q: %v (stderr: %s)", req.Header.Get("X-Test-Action"), err, f.stderr.String())
	}
	return resp
}

// waitStderr polls the captured stderr, which os/exec copies from the
// pipe in its own goroutine and so may lag behind the response.
func (f *fn) waitStderr(ok func(string) bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok(f.stderr.String()) {
			return true
		}
	}
	return false
}

// exitCode waits for the process and returns its exit code.
func (f *fn) exitCode() int {
	f.t.Helper()
	f.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- f.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			f.t.Fatal(err)
		}
		return 0
	case <-time.After(10 * time.Second):
		f.t.Fatal("function did not exit")
		return -1
	}
}

func TestEcho(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			f := startFn(t, format)
			req := request("", "hello body")
			req.Header.Set("X-Want-Status", "201")
			req.Header.Set("X-Want-Header-Foo", "bar")
			resp := f.mustCall(req)
			if resp.Status != 201 || resp.Header.Get("X-Test-Status") != "201" || resp.Header.Get("Foo") != "bar" {
				t.Errorf("status %d, headers %v", resp.Status, resp.Header)
			}
			if string(resp.Body) != "hello body" || resp.Header.Get("Content-Type") != "text/plain" {
				t.Errorf("body %q, type %q", resp.Body, resp.Header.Get("Content-Type"))
			}
			var info struct {
				CallID     string              `json:"call_id"`
				Deadline   string              `json:"deadline"`
				Method     string              `json:"method"`
				RequestURL string              `json:"request_url"`
				Format     string              `json:"format"`
				Headers    map[string][]string `json:"headers"`
				Env        map[string]string   `json:"env"`
				PID        int                 `json:"pid"`
				Container  string              `json:"container"`
			}
			if err := json.Unmarshal([]byte(resp.Header.Get("X-Echo-Info")), &info); err != nil {
				t.Fatalf("X-Echo-Info: %v", err)
			}
			if info.CallID != req.CallID || info.Method != "POST" || info.RequestURL != req.URL || info.Format != format ||
				info.Headers["X-Want-Status"][0] != "201" || info.Env["FN_APP_NAME"] != "testapp" ||
				info.Env["MY_CONFIG"] != "42" || info.PID != f.cmd.Process.Pid || info.Deadline == "" {
				t.Errorf("echo info %+v", info)
			}
			// Same process for the next call: the container is hot.
			resp = f.mustCall(request("echo", "second"))
			if string(resp.Body) != "second" || resp.Status != 200 {
				t.Errorf("second call: %d %q", resp.Status, resp.Body)
			}
			if code := f.exitCode(); code != 0 {
				t.Errorf("exit code %d after stdin closed", code)
			}
		})
	}
}

func TestMisbehaviour(t *testing.T) {
	for _, format := range hotFormats {
		t.Run(format+"/garbage", func(t *testing.T) {
			f := startFn(t, format)
			if _, err := f.call(request("garbage", "")); err != nil {
				t.Fatalf("the frame before the garbage: %v", err)
			}
			line, err := f.stdout.ReadString('\n')
			if line != "GARBAGE\n" {
				t.Errorf("after the frame: %q, %v", line, err)
			}
		})
		t.Run(format+"/garbage-only", func(t *testing.T) {
			f := startFn(t, format)
			_, err := f.call(request("garbage-only", ""))
			if !errors.Is(err, protocol.ErrProtocol) {
				t.Errorf("%v, want ErrProtocol", err)
			}
		})
		t.Run(format+"/partial", func(t *testing.T) {
			f := startFn(t, format)
			_, err := f.call(request("partial", ""))
			if !errors.Is(err, protocol.ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%v, want a truncated frame", err)
			}
			if code := f.exitCode(); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
		})
		t.Run(format+"/crash", func(t *testing.T) {
			f := startFn(t, format)
			_, err := f.call(request("crash=3", ""))
			if err != io.EOF {
				t.Errorf("%v, want io.EOF", err)
			}
			if code := f.exitCode(); code != 3 {
				t.Errorf("exit code %d, want 3", code)
			}
			if !f.waitStderr(func(s string) bool { return strings.Contains(s, "crashing with exit code 3") }) {
				t.Errorf("stderr %q", f.stderr.String())
			}
		})
		t.Run(format+"/hang", func(t *testing.T) {
			f := startFn(t, format)
			if err := f.codec.WriteRequest(f.stdin, request("hang", "")); err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			go func() { _, err := f.codec.ReadResponse(f.stdout); got <- err }()
			select {
			case err := <-got:
				t.Fatalf("hang answered: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			f.cmd.Process.Kill()
			f.cmd.Wait()
		})
	}
}

func TestWellBehavedActions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, format := range hotFormats {
		t.Run(format, func(t *testing.T) {
			f := startFn(t, format)
			// First, so that the children (sleeping 100ms) exit during the
			// sleep call below and testfn reaps them.
			if resp := f.mustCall(request("fork=2", "")); !strings.HasPrefix(string(resp.Body), "started 2 of 2") ||
				resp.Header.Get("X-Fork-Started") != "2" {
				t.Errorf("fork: %q", resp.Body)
			}
			start := time.Now()
			if resp := f.mustCall(request("sleep=200ms", "zz")); string(resp.Body) != "zz" || time.Since(start) < 200*time.Millisecond {
				t.Errorf("sleep: %q after %v", resp.Body, time.Since(start))
			}
			if resp := f.mustCall(request("stderr=a log line", "s")); string(resp.Body) != "s" ||
				!f.waitStderr(func(s string) bool { return strings.Contains(s, "a log line\n") }) {
				t.Errorf("stderr: %q, log %q", resp.Body, f.stderr.String())
			}
			before := len(f.stderr.String())
			if resp := f.mustCall(request("flood=1", "f")); string(resp.Body) != "f" {
				t.Errorf("flood: %q", resp.Body)
			}
			if !f.waitStderr(func(s string) bool { return len(s)-before >= 1<<20 }) {
				t.Errorf("flood=1 wrote %d bytes of stderr", len(f.stderr.String())-before)
			}
			if n := len(f.stderr.String()) - before; n > 1<<20+200 {
				t.Errorf("flood=1 wrote %d bytes of stderr", n)
			}
			if resp := f.mustCall(request("alloc=16", "a")); string(resp.Body) != "a" {
				t.Errorf("alloc: %q", resp.Body)
			}
			if resp := f.mustCall(request("connect="+ln.Addr().String(), "")); string(resp.Body) != "connected\n" {
				t.Errorf("connect: %q", resp.Body)
			}
			if resp := f.mustCall(request("connect="+closedAddr, "")); !strings.Contains(string(resp.Body), "refused") {
				t.Errorf("connect to a closed port: %q", resp.Body)
			}
			if resp := f.mustCall(request("id", "")); !strings.HasPrefix(string(resp.Body), "uid=") ||
				!strings.Contains(string(resp.Body), "CapEff:") {
				t.Errorf("id: %q", resp.Body)
			}
			if resp := f.mustCall(request("bogus", "")); resp.Status != 400 {
				t.Errorf("unknown action: %d %q", resp.Status, resp.Body)
			}
			if resp := f.mustCall(request("", "still alive")); string(resp.Body) != "still alive" {
				t.Errorf("after all actions: %q", resp.Body)
			}
		})
	}
}

// TestDefaultFormat: one process per call, the request in the environment.
func TestDefaultFormat(t *testing.T) {
	run := func(action, body string) (*fn, string) {
		f := startFn(t, protocol.Default, "FN_CALL_ID=c1", "FN_METHOD=GET", "FN_REQUEST_URL=http://kiln/x",
			"FN_DEADLINE="+time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "FN_HEADER_X-Test-Action="+action)
		io.WriteString(f.stdin, body)
		f.stdin.Close()
		out, _ := io.ReadAll(f.stdout)
		return f, string(out)
	}
	f, out := run("echo", "default body")
	if out != "default body" || f.exitCode() != 0 {
		t.Errorf("echo: %q", out)
	}
	f, out = run("crash=7", "")
	if code := f.exitCode(); code != 7 || out != "" {
		t.Errorf("crash: exit %d, stdout %q", code, out)
	}
	f, out = run("garbage", "")
	if !strings.HasSuffix(out, "GARBAGE\n") || f.exitCode() != 0 {
		t.Errorf("garbage: %q", out)
	}
}
