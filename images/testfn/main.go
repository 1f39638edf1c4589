// Command testfn is the function kiln's end-to-end tests deploy. It is
// well behaved by default (it echoes) and misbehaves on request, in every
// format, so the tests can check how kiln copes with crashes, hangs, bad
// frames, log floods, memory hogs and sandbox escapes.
//
// The request header X-Test-Action picks the behaviour (in the default
// format it arrives as FN_HEADER_X-Test-Action):
//
//	echo (or absent)  200 with the request body; X-Echo-Info describes the call
//	sleep=<duration>  sleep, then echo
//	crash=<code>      log a line, exit with code, no answer
//	hang              never answer
//	garbage           a valid frame followed by "GARBAGE\n"
//	garbage-only      "this is not a frame\n"
//	partial           the first half of a valid frame, then exit 0
//	flood=<MB>        that many MB of ~100-byte stderr lines, then echo
//	alloc=<MB>        allocate and touch that many MB, keep them, then echo
//	stderr=<text>     log text, then echo
//	fork=<n>          start n child processes that sleep 30 s; report how many started
//	write-root        try to create /kiln-probe; "ok" or the error
//	connect=<addr>    TCP dial with a 1 s timeout; "connected" or the error
//	id                uid, gid and the CapEff line of /proc/self/status
//	info              the X-Echo-Info JSON as the body (the default format
//	                  has no response headers to carry it)
//
//	partial-hang      the first half of a valid frame, then never finish it
//	stream=<n>:<gap>  (http format) n server-sent events, gap apart, each its
//	                  own chunk, written raw to stdout as they happen
//	stream-then=<x>   (http format) one event, then x: hang, crash or badchunk
//	stream-mb=<n>     (http format) n MB of body in 64 KB chunks
//	cat=<path>        the file's mode, owner and contents, or the error
//	digest            the body's length and sha256, read as it arrives and
//	                  never held whole
//
// Echo also honours X-Want-Status: <code> (that status, plus X-Test-Status
// with the same value) and X-Want-Header-<Name>: v (response header Name: v).
//
// The env var TESTFN_ON_START (set as fn config) makes the process
// misbehave before it serves anything, below the FDK:
//
//	exit=<code>       exit at once, reading nothing
//	never-read        stay alive and never read stdin
//	read=<bytes>      read that many bytes of stdin, then stop reading
//
// It is a static binary that needs nothing from its filesystem, so it runs
// in an empty image, read-only, as any uid.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-run/kiln/images/go/fdk"
	"github.com/kiln-run/kiln/protocol"
)

// instanceID tells one container from another: every container has pid 1
// and the same hostname, and tests need to know which one answered.
var instanceID = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// childEnv marks a process started by the fork action.
const childEnv = "TESTFN_CHILD"

func main() {
	if os.Getenv(childEnv) == "1" {
		d := 30 * time.Second
		// Only testfn's own tests shorten it, to leave no processes behind.
		if v, err := time.ParseDuration(os.Getenv("TESTFN_CHILD_SLEEP")); err == nil {
			d = v
		}
		time.Sleep(d)
		return
	}
	onStart(os.Getenv("TESTFN_ON_START"))
	fdk.Handle(fdk.HandlerFunc(new(testfn).serve))
}

// onStart acts on TESTFN_ON_START; it returns only when there is nothing
// to do, so the function serves normally.
func onStart(mode string) {
	action, arg, _ := strings.Cut(mode, "=")
	switch action {
	case "":
		return
	case "exit":
		code, _ := strconv.Atoi(arg)
		fmt.Fprintf(os.Stderr, "testfn: exiting at start with code %d\n", code)
		os.Exit(code)
	case "never-read":
	case "read":
		n, _ := strconv.ParseInt(arg, 10, 64)
		got, _ := io.CopyN(io.Discard, os.Stdin, n)
		fmt.Fprintf(os.Stderr, "testfn: read %d bytes of stdin, reading no more\n", got)
	default:
		fmt.Fprintf(os.Stderr, "testfn: unknown TESTFN_ON_START %q\n", mode)
		os.Exit(2)
	}
	for {
		time.Sleep(time.Hour)
	}
}

type testfn struct {
	mu sync.Mutex
	// hoard keeps alloc's memory reachable across calls, so the container's
	// usage grows the way a leaking function's would.
	hoard [][]byte
}

func (f *testfn) serve(ctx context.Context, in io.Reader, out io.Writer) {
	fc := fdk.GetContext(ctx)
	if fc.Header().Get("X-Test-Action") == "digest" {
		sum := sha256.New()
		n, err := io.Copy(sum, in)
		if err != nil {
			fail(out, http.StatusBadRequest, "reading body: %v", err)
			return
		}
		answer(out, fmt.Sprintf("%d %x", n, sum.Sum(nil)))
		return
	}
	body, err := io.ReadAll(in)
	if err != nil {
		fail(out, http.StatusBadRequest, "reading body: %v", err)
		return
	}
	action, arg, _ := strings.Cut(fc.Header().Get("X-Test-Action"), "=")
	switch action {
	case "", "echo":
	case "sleep":
		d, err := time.ParseDuration(arg)
		if err != nil {
			fail(out, http.StatusBadRequest, "sleep: %v", err)
			return
		}
		time.Sleep(d)
	case "crash":
		code, err := strconv.Atoi(arg)
		if err != nil {
			fail(out, http.StatusBadRequest, "crash: %v", err)
			return
		}
		fmt.Fprintf(os.Stderr, "testfn: crashing with exit code %d\n", code)
		os.Exit(code)
	case "hang":
		fmt.Fprintln(os.Stderr, "testfn: hanging")
		// Sleeping rather than select{}: with nothing else running the
		// runtime would call a bare select a deadlock and crash.
		for {
			time.Sleep(time.Hour)
		}
	case "garbage", "garbage-only", "partial", "partial-hang":
		misbehave(out, fc.Format(), action)
		return
	case "stream", "stream-then", "stream-mb":
		stream(out, action, arg)
		return
	case "flood":
		mb, err := strconv.ParseFloat(arg, 64)
		if err != nil || mb < 0 {
			fail(out, http.StatusBadRequest, "flood: bad size %q", arg)
			return
		}
		flood(int64(mb * (1 << 20)))
	case "alloc":
		mb, err := strconv.ParseFloat(arg, 64)
		if err != nil || mb < 0 {
			fail(out, http.StatusBadRequest, "alloc: bad size %q", arg)
			return
		}
		f.alloc(int64(mb * (1 << 20)))
	case "stderr":
		fmt.Fprintln(os.Stderr, arg)
	case "fork":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 {
			fail(out, http.StatusBadRequest, "fork: bad count %q", arg)
			return
		}
		fork(out, n)
		return
	case "write-root":
		answer(out, writeRoot())
		return
	case "connect":
		answer(out, connect(arg))
		return
	case "id":
		answer(out, identity())
		return
	case "cat":
		answer(out, catFile(arg))
		return
	case "info":
		echo(ctx, nil, out, true)
		return
	default:
		fail(out, http.StatusBadRequest, "unknown X-Test-Action %q", action)
		return
	}
	echo(ctx, body, out, false)
}

func echo(ctx context.Context, body []byte, out io.Writer, infoAsBody bool) {
	fc := fdk.GetContext(ctx)
	h := fc.Header()
	var deadline string
	if d := fc.Deadline(); !d.IsZero() {
		deadline = d.UTC().Format(time.RFC3339Nano)
	}
	host, _ := os.Hostname()
	info, err := json.Marshal(map[string]any{
		"call_id":     fc.CallID(),
		"deadline":    deadline,
		"method":      fc.Method(),
		"request_url": fc.RequestURL(),
		"format":      fc.Format(),
		"headers":     h,
		"env":         environment(),
		"pid":         os.Getpid(),
		"instance":    instanceID,
		"container":   host,
	})
	if err != nil {
		fail(out, http.StatusInternalServerError, "echo info: %v", err)
		return
	}
	if infoAsBody {
		out.Write(info)
		return
	}
	fdk.SetHeader(out, "X-Echo-Info", string(info))
	if ct := h.Get("Content-Type"); ct != "" {
		fdk.SetHeader(out, "Content-Type", ct)
	}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, "X-Want-Header-"); ok && name != "" {
			for _, v := range vs {
				fdk.AddHeader(out, name, v)
			}
		}
	}
	if s := h.Get("X-Want-Status"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil {
			fail(out, http.StatusBadRequest, "X-Want-Status: %v", err)
			return
		}
		fdk.SetHeader(out, "X-Test-Status", s)
		fdk.WriteStatus(out, code)
	}
	out.Write(body)
}

// environment is the process environment the tests may check, without
// the variables every container has for reasons unrelated to kiln.
func environment() map[string]string {
	env := make(map[string]string)
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH", "HOME", "HOSTNAME", "TERM":
			continue
		}
		env[k] = v
	}
	return env
}

// misbehave writes to the raw stdout what no well-behaved function would.
func misbehave(out io.Writer, format, action string) {
	stdout, ok := fdk.Hijack(out)
	if !ok {
		fail(out, http.StatusInternalServerError, "cannot hijack stdout")
		return
	}
	if action == "garbage-only" {
		// Not a status line, not JSON: no format can parse it.
		stdout.Write([]byte("this is not a frame\n"))
		return
	}
	frame := validFrame(format)
	switch action {
	case "garbage":
		// One write, so the excess reaches kiln together with the frame.
		stdout.Write(append(frame, "GARBAGE\n"...))
	case "partial":
		// os.Stdout is unbuffered: the half frame is out before the exit.
		stdout.Write(frame[:len(frame)/2])
		fmt.Fprintln(os.Stderr, "testfn: exiting after half a frame")
		os.Exit(0)
	case "partial-hang":
		stdout.Write(frame[:len(frame)/2])
		fmt.Fprintln(os.Stderr, "testfn: hanging after half a frame")
		for {
			time.Sleep(time.Hour)
		}
	}
}

func validFrame(format string) []byte {
	resp := &protocol.Response{
		Status: http.StatusOK,
		Header: http.Header{"Content-Type": {"text/plain"}},
		Body:   []byte("a valid response frame from testfn\n"),
	}
	codec, err := protocol.New(format, protocol.Limits{})
	if err != nil {
		// The default format's "frame" is the body itself.
		return resp.Body
	}
	var buf bytes.Buffer
	if err := codec.WriteResponse(&buf, resp); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func flood(n int64) {
	w := bufio.NewWriterSize(os.Stderr, 64<<10)
	pad := strings.Repeat("x", 100-len("testfn flood 00000000 \n"))
	for i := int64(0); i*100 < n; i++ {
		fmt.Fprintf(w, "testfn flood %08d %s\n", i, pad)
	}
	w.Flush()
}

func (f *testfn) alloc(n int64) {
	b := make([]byte, n)
	// Touch every page so the memory is resident, not just reserved.
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	f.mu.Lock()
	f.hoard = append(f.hoard, b)
	f.mu.Unlock()
}

func fork(out io.Writer, n int) {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	attr := &os.ProcAttr{
		// GOMAXPROCS=1 keeps each child to few threads: the pids limit
		// counts threads, and the probe is about processes.
		Env: append(os.Environ(), childEnv+"=1", "GOMAXPROCS=1"),
		// No stdin or stdout at all (an empty image may lack /dev/null,
		// and stdout is kiln's channel); stderr is shared for diagnostics.
		Files: []*os.File{nil, nil, os.Stderr},
	}
	started := 0
	var first error
	for range n {
		if _, err := os.StartProcess(exe, []string{exe}, attr); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		started++
	}
	reapChildren.Do(func() { go reap() })
	fdk.SetHeader(out, "X-Fork-Started", strconv.Itoa(started))
	msg := fmt.Sprintf("started %d of %d", started, n)
	if first != nil {
		msg += fmt.Sprintf("; first error: %v", first)
	}
	answer(out, msg)
}

// reapChildren starts one reaper for all forked children: a goroutine per
// child blocked in wait would hold a thread each, and threads count
// against the same pids limit the probe measures.
var reapChildren sync.Once

func reap() {
	for {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(-1, &ws, 0, nil); err != nil {
			if err == syscall.ECHILD {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func writeRoot() string {
	const path = "/kiln-probe"
	if err := os.WriteFile(path, []byte("kiln probe\n"), 0o644); err != nil {
		return err.Error()
	}
	os.Remove(path)
	return "ok"
}

func connect(addr string) string {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err.Error()
	}
	conn.Close()
	return "connected"
}

func identity() string {
	s := fmt.Sprintf("uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return s + fmt.Sprintf("CapEff:\tunknown (%v)", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if strings.HasPrefix(line, "CapEff:") {
			return s + line
		}
	}
	return s + "CapEff:\tunknown (no such line)"
}

func answer(out io.Writer, text string) {
	fdk.SetHeader(out, "Content-Type", "text/plain; charset=utf-8")
	io.WriteString(out, text+"\n")
}

func fail(out io.Writer, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "testfn:", msg)
	fdk.WriteStatus(out, code)
	answer(out, msg)
}

// stream writes a chunked http-format response straight to stdout, one
// chunk per event, so the tests see kiln pass each on as it comes.
func stream(out io.Writer, action, arg string) {
	stdout, ok := fdk.Hijack(out)
	if !ok {
		fail(out, http.StatusInternalServerError, "cannot hijack stdout")
		return
	}
	chunk := func(b []byte) {
		fmt.Fprintf(stdout, "%x\r\n", len(b))
		stdout.Write(b)
		io.WriteString(stdout, "\r\n")
	}
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	switch action {
	case "stream":
		n, gap := 5, 200*time.Millisecond
		if a, b, ok := strings.Cut(arg, ":"); ok {
			n, _ = strconv.Atoi(a)
			gap, _ = time.ParseDuration(b)
		}
		io.WriteString(stdout, head)
		for i := 0; i < n; i++ {
			if i > 0 {
				time.Sleep(gap)
			}
			chunk([]byte(fmt.Sprintf("data: event %d at %d\n\n", i, time.Now().UnixNano())))
		}
	case "stream-then":
		io.WriteString(stdout, head)
		chunk([]byte("data: first\n\n"))
		switch arg {
		case "hang":
			for {
				time.Sleep(time.Hour)
			}
		case "crash":
			fmt.Fprintln(os.Stderr, "testfn: crashing mid-stream")
			os.Exit(3)
		case "badchunk":
			io.WriteString(stdout, "zz\r\nnot a chunk\r\n")
			for {
				time.Sleep(time.Hour)
			}
		}
	case "stream-mb":
		mb, _ := strconv.Atoi(arg)
		io.WriteString(stdout, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		block := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KB
		for i := 0; i < mb*16; i++ {
			chunk(block)
		}
	}
	io.WriteString(stdout, "0\r\n\r\n")
}

func catFile(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	owner := ""
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		owner = fmt.Sprintf("%d:%d", sys.Uid, sys.Gid)
	}
	return fmt.Sprintf("%v %s %s", st.Mode().Perm(), owner, b)
}
