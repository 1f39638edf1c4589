package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-run/kiln/internal/testservers"
)

const haproxyCfg = "deploy/haproxy.cfg"

// The node names deploy/haproxy.cfg and the cluster compose file agree on.
var clusterNodes = []string{"kilnd1", "kilnd2", "kilnd3"}

// haproxySection is one section of an HAProxy config: its header
// ("backend kiln_calls") and its directives with comments stripped.
type haproxySection struct {
	kind, name string
	lines      []string
}

func parseHAProxy(t *testing.T, src string) []haproxySection {
	t.Helper()
	var out []haproxySection
	for _, raw := range strings.Split(src, "\n") {
		line := raw
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			f := strings.Fields(line)
			s := haproxySection{kind: f[0]}
			if len(f) > 1 {
				s.name = f[1]
			}
			out = append(out, s)
			continue
		}
		if len(out) == 0 {
			t.Fatalf("%s: directive %q before any section", haproxyCfg, strings.TrimSpace(line))
		}
		out[len(out)-1].lines = append(out[len(out)-1].lines, strings.Join(strings.Fields(line), " "))
	}
	return out
}

func section(t *testing.T, secs []haproxySection, kind, name string) haproxySection {
	t.Helper()
	for _, s := range secs {
		if s.kind == kind && s.name == name {
			return s
		}
	}
	t.Fatalf("%s has no %s %s", haproxyCfg, kind, name)
	return haproxySection{}
}

// directive returns the arguments of the last line starting with key.
func (s haproxySection) directive(key string) (string, bool) {
	val, found := "", false
	for _, l := range s.lines {
		if l == key || strings.HasPrefix(l, key+" ") {
			val, found = strings.TrimSpace(strings.TrimPrefix(l, key)), true
		}
	}
	return val, found
}

// haproxyDuration reads an HAProxy time: a number with an optional unit,
// milliseconds when there is none.
func haproxyDuration(s string) (time.Duration, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i == 0 {
		return 0, fmt.Errorf("bad time %q", s)
	}
	num, unit := s, "ms"
	if i > 0 {
		num, unit = s[:i], s[i:]
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0, err
	}
	units := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}
	u, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("bad unit in %q", s)
	}
	return time.Duration(n) * u, nil
}

// TestHAProxyConfig has HAProxy itself check deploy/haproxy.cfg, then
// checks the choices the cluster relies on, which a valid config does not
// imply.
func TestHAProxyConfig(t *testing.T) {
	bin := testservers.HAProxyBin(t)
	file := filepath.Join(repoRoot(t), filepath.FromSlash(haproxyCfg))
	out, err := exec.Command(bin, "-c", "-f", file).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c -f %s: %v\n%s", haproxyCfg, err, out)
	}
	// Warnings are how HAProxy reports an ignored or misplaced keyword.
	if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ALERT]")) {
		t.Errorf("haproxy -c: warnings:\n%s", out)
	}
	if v, _ := exec.Command(bin, "-v").Output(); !regexp.MustCompile(`version 2\.([6-9]|\d\d)`).Match(v) {
		t.Logf("not HAProxy 2.6 or later, which the file is written for: %s", bytes.SplitN(v, []byte("\n"), 2)[0])
	}

	secs := parseHAProxy(t, readRepoFile(t, haproxyCfg))
	defaults := section(t, secs, "defaults", "")
	front := section(t, secs, "frontend", "kiln")
	calls := section(t, secs, "backend", "kiln_calls")
	api := section(t, secs, "backend", "kiln_api")

	if v, _ := defaults.directive("mode"); v != "http" {
		t.Errorf("defaults: mode %q, want http", v)
	}
	// Retries: connection failures only, wherever retry-on is set.
	for _, s := range secs {
		if v, ok := s.directive("retry-on"); ok && v != "conn-failure" && v != "none" {
			t.Errorf("%s: retry-on %q: calls are not idempotent, retry only conn-failure", strings.TrimSpace(s.kind+" "+s.name), v)
		}
	}
	if v, _ := defaults.directive("retry-on"); v != "conn-failure" {
		t.Errorf("defaults: retry-on %q, want conn-failure said explicitly", v)
	}
	// Timeouts that let a 300 s function answer.
	for _, which := range []string{"server", "client"} {
		v, ok := defaults.directive("timeout " + which)
		if !ok {
			t.Errorf("defaults: no timeout %s", which)
			continue
		}
		d, err := haproxyDuration(v)
		if err != nil || d <= 300*time.Second {
			t.Errorf("defaults: timeout %s %q (%v): must exceed the 300 s a function may run", which, v, err)
		}
	}
	for _, s := range []haproxySection{calls, api} {
		for _, which := range []string{"server", "client"} {
			if v, ok := s.directive("timeout " + which); ok {
				if d, err := haproxyDuration(v); err != nil || d <= 300*time.Second {
					t.Errorf("backend %s: timeout %s %q overrides the defaults with less than 300 s", s.name, which, v)
				}
			}
		}
	}

	// Routing: calls hashed, the rest roundrobin.
	if v, _ := front.directive("use_backend kiln_calls"); v != "if call" {
		t.Errorf("frontend: calls do not go to kiln_calls (use_backend kiln_calls %q)", v)
	}
	if v, _ := front.directive("acl call"); !strings.Contains(v, "path_beg") || !strings.Contains(v, "/invoke/") || !strings.Contains(v, "/t/") {
		t.Errorf("frontend: acl call %q does not match /invoke/ and /t/", v)
	}
	if v, _ := front.directive("default_backend"); v != "kiln_api" {
		t.Errorf("frontend: default_backend %q, want kiln_api", v)
	}
	if v, _ := calls.directive("balance"); v != "uri path-only depth 3" {
		t.Errorf("kiln_calls: balance %q, want uri path-only depth 3 (the fn's part of the path)", v)
	}
	if v, _ := calls.directive("hash-type"); !strings.HasPrefix(v, "consistent") {
		t.Errorf("kiln_calls: hash-type %q, want consistent", v)
	}
	if v, _ := calls.directive("hash-balance-factor"); v != "150" {
		t.Errorf("kiln_calls: hash-balance-factor %q, want 150", v)
	}
	if _, ok := calls.directive("option httpchk"); !ok {
		t.Error("kiln_calls: no option httpchk")
	}
	if v, _ := calls.directive("http-check send"); !strings.Contains(v, "meth GET") || !strings.Contains(v, "uri /healthz") {
		t.Errorf("kiln_calls: http-check send %q, want GET /healthz", v)
	}
	if v, _ := calls.directive("http-check expect"); v != "status 200" {
		t.Errorf("kiln_calls: http-check expect %q, want status 200 (a draining node answers 503)", v)
	}
	if v, _ := api.directive("balance"); v != "roundrobin" {
		t.Errorf("kiln_api: balance %q, want roundrobin", v)
	}
	// Both backends list the same nodes; the API one tracks the checks of
	// the calls one.
	callServers := serverAddrs(calls)
	if got := sortedKeys(callServers); strings.Join(got, ",") != strings.Join(clusterNodes, ",") {
		t.Errorf("kiln_calls: servers %v, want %v", got, clusterNodes)
	}
	for name, addr := range callServers {
		if addr != name+":8080" {
			t.Errorf("kiln_calls: server %s at %s, want %s:8080 (the compose service)", name, addr, name)
		}
	}
	apiServers := serverAddrs(api)
	for _, name := range clusterNodes {
		if apiServers[name] != callServers[name] {
			t.Errorf("kiln_api: server %s at %q, kiln_calls has it at %q", name, apiServers[name], callServers[name])
		}
		found := false
		for _, l := range api.lines {
			found = found || (strings.HasPrefix(l, "server "+name+" ") && strings.HasSuffix(l, "track kiln_calls/"+name))
		}
		if !found {
			t.Errorf("kiln_api: server %s does not track kiln_calls/%s", name, name)
		}
	}
	// A node marked down must finish its calls.
	for _, s := range []haproxySection{calls, api, defaults} {
		for _, l := range s.lines {
			if strings.Contains(l, "shutdown-sessions") {
				t.Errorf("%s %s: %q cuts the calls of a node that drains", s.kind, s.name, l)
			}
		}
	}
}

var serverLine = regexp.MustCompile(`^server (\S+) (\S+)`)

func serverAddrs(s haproxySection) map[string]string {
	out := map[string]string{}
	for _, l := range s.lines {
		if m := serverLine.FindStringSubmatch(l); m != nil {
			out[m[1]] = m[2]
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// standIn plays a kilnd node: /healthz answers 200 or 503 as the test
// sets it, every other request is answered with the node's name, after a
// short pause so that calls overlap, except paths under /invoke/crash,
// where the "node" reads the request and closes the connection without
// an answer, as a node that dies mid-call does.
type standIn struct {
	name    string
	ln      net.Listener
	srv     *http.Server
	healthy atomic.Bool
	checks  atomic.Int64 // health checks answered 200
	failed  atomic.Int64 // health checks answered 503
	calls   atomic.Int64 // everything else
	mu      sync.Mutex
	paths   map[string]int
}

func startStandIn(t *testing.T, name string) *standIn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &standIn{name: name, ln: ln, paths: map[string]int{}}
	s.healthy.Store(true)
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *standIn) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		if s.healthy.Load() {
			s.checks.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"ok"}`)
			return
		}
		s.failed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"status":"draining"}`)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	s.calls.Add(1)
	s.mu.Lock()
	s.paths[r.URL.Path]++
	s.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/invoke/crash") {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	time.Sleep(2 * time.Millisecond)
	w.Header().Set("X-Kiln-Node", s.name)
	_, _ = io.WriteString(w, s.name)
}

func (s *standIn) pathCount(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[p]
}

// lockedBuffer collects HAProxy's log while it runs.
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

// result of one request through HAProxy.
type result struct {
	status int
	node   string
	err    error
}

func get(client *http.Client, url string) result {
	resp, err := client.Post(url, "text/plain", strings.NewReader("x"))
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return result{status: resp.StatusCode, node: resp.Header.Get("X-Kiln-Node")}
}

// load sends n requests, workers at a time, and counts them by node.
func load(t *testing.T, client *http.Client, urls func(i int) string, n, workers int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	byNode := map[string]int{}
	var failures []string
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				r := get(client, urls(i))
				mu.Lock()
				if r.err != nil || r.status != http.StatusOK {
					failures = append(failures, fmt.Sprintf("%s: %d %v", urls(i), r.status, r.err))
				} else {
					byNode[r.node]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed, e.g. %s", len(failures), n, failures[0])
	}
	return byNode
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestHAProxyPlacement runs deploy/haproxy.cfg (addresses aside) in front
// of three stand-in nodes and checks what the cluster relies on: one fn's
// calls land on at most two nodes, different fns spread, /v2 goes round
// the nodes, a node whose /healthz turns 503 gets no new calls (and only
// its fns move), a request a node has received is not retried elsewhere,
// and a connection a node refuses is.
func TestHAProxyPlacement(t *testing.T) {
	bin := testservers.HAProxyBin(t)
	nodes := map[string]*standIn{}
	addrs := map[string]string{}
	for _, name := range clusterNodes {
		nodes[name] = startStandIn(t, name)
		addrs[name] = fmt.Sprintf("127.0.0.1:%d", nodes[name].port())
	}
	listen := testservers.FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(testservers.HAProxyConfig(t, readRepoFile(t, haproxyCfg), fmt.Sprintf("127.0.0.1:%d", listen), addrs)), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logs, logs
	// Wait returns even if something haproxy started held its output.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// Only the process this test started, by its PID.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy log:\n%s", logs.String())
		}
	})

	base := fmt.Sprintf("http://127.0.0.1:%d", listen)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	waitFor(t, "haproxy answering /haproxy-health", 10*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("haproxy exited: %v\n%s", err, logs.String())
		default:
		}
		resp, err := client.Get(base + "/haproxy-health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	waitFor(t, "a health check on every node", 10*time.Second, func() bool {
		for _, n := range nodes {
			if n.checks.Load() == 0 {
				return false
			}
		}
		return true
	})

	// One fn, one call at a time: its node only.
	seq := load(t, client, func(int) string { return base + "/invoke/01HOTFN" }, 200, 1)
	t.Logf("200 calls of /invoke/01HOTFN, one at a time: %v", seq)
	if len(seq) != 1 {
		t.Errorf("one fn's calls, one at a time, landed on %d nodes %v, want 1", len(seq), seq)
	}
	// One fn, 200 calls, 8 at a time: its node, and at most one more when
	// the bounded load spills.
	hot := load(t, client, func(int) string { return base + "/invoke/01HOTFN" }, 200, 8)
	t.Logf("200 calls of /invoke/01HOTFN, 8 at a time: %v", hot)
	if len(hot) > 2 {
		t.Errorf("one fn's calls landed on %d nodes %v, want at most 2", len(hot), hot)
	}
	trig := load(t, client, func(i int) string { return fmt.Sprintf("%s/t/shop/echo/%d?n=%d", base, i, i) }, 200, 8)
	t.Logf("200 calls of /t/shop/echo/<i>?n=<i>, 8 at a time: %v", trig)
	if len(trig) > 2 {
		t.Errorf("one trigger's calls landed on %d nodes %v, want at most 2", len(trig), trig)
	}

	// The key is the fn's part of the path only: one at a time (no spill),
	// the rest of the path and the query do not move a call.
	for _, group := range [][]string{
		{"/t/shop/cart", "/t/shop/cart/", "/t/shop/cart/items/7", "/t/shop/cart?x=1"},
		{"/invoke/01KEYFN", "/invoke/01KEYFN?a=b", "/invoke/01KEYFN/"},
	} {
		seen := map[string]bool{}
		for _, p := range group {
			r := get(client, base+p)
			if r.err != nil || r.status != http.StatusOK {
				t.Fatalf("%s: %d %v", p, r.status, r.err)
			}
			seen[r.node] = true
		}
		if len(seen) != 1 {
			t.Errorf("%v landed on %v, want one node", group, sortedKeys(seen))
		}
	}

	// Different fns spread over the nodes, and stay where they are.
	placed := map[string]string{}
	perNode := map[string]int{}
	fnPath := func(i int) string { return fmt.Sprintf("/invoke/01FN%02d", i) }
	for i := 0; i < 60; i++ {
		r := get(client, base+fnPath(i))
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("%s: %d %v", fnPath(i), r.status, r.err)
		}
		placed[fnPath(i)] = r.node
		perNode[r.node]++
	}
	t.Logf("60 fns, one call each: fns per node %v", perNode)
	if len(perNode) != len(nodes) {
		t.Errorf("60 fns landed on %d nodes %v, want all %d", len(perNode), perNode, len(nodes))
	}
	for p, want := range placed {
		if r := get(client, base+p); r.node != want {
			t.Errorf("%s moved from %s to %s with every node up", p, want, r.node)
		}
	}

	// /v2 goes round the nodes.
	api := map[string]int{}
	for i := 0; i < 30; i++ {
		resp, err := client.Get(base + "/v2/apps")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		api[resp.Header.Get("X-Kiln-Node")]++
	}
	t.Logf("30 GET /v2/apps: %v", api)
	for _, name := range clusterNodes {
		if api[name] < 5 {
			t.Errorf("/v2 is not balanced round the nodes: %v", api)
			break
		}
	}

	// A node that received a call and died before answering: the client
	// gets 502, and no other node runs the call a second time.
	if r := get(client, base+"/invoke/crash-01FN"); r.err != nil || r.status != http.StatusBadGateway {
		t.Errorf("call on a node that closed without answering: %d %v, want 502", r.status, r.err)
	}
	total := 0
	for _, n := range nodes {
		total += n.pathCount("/invoke/crash-01FN")
	}
	if total != 1 {
		t.Errorf("a call a node had received reached nodes %d times, want once (no retry)", total)
	}

	// A node whose /healthz turns 503 (draining) leaves the rotation: no
	// new calls, its fns go elsewhere, the others' fns stay.
	drain := nodes[placed[fnPath(0)]]
	drain.healthy.Store(false)
	flipped := time.Now()
	waitFor(t, drain.name+" answering two failed checks (fall 2)", 15*time.Second, func() bool { return drain.failed.Load() >= 2 })
	down := time.Since(flipped)
	time.Sleep(100 * time.Millisecond) // the check's answer to HAProxy's state change
	before := drain.calls.Load()
	spread := load(t, client, func(i int) string { return base + fnPath(i%60) }, 240, 8)
	again := load(t, client, func(int) string { return base + "/invoke/01HOTFN" }, 200, 8)
	t.Logf("%s out of rotation %v after its /healthz turned 503; then 240 calls of 60 fns: %v; 200 of the hot fn: %v", drain.name, down.Round(time.Millisecond), spread, again)
	if got := drain.calls.Load() - before; got != 0 {
		t.Errorf("%s got %d calls after HAProxy saw its /healthz 503", drain.name, got)
	}
	moved := 0
	for p, was := range placed {
		r := get(client, base+p)
		switch {
		case was == drain.name:
			moved++
		case r.node != was:
			t.Errorf("%s moved from %s to %s when %s left: only the leaving node's fns may move", p, was, r.node, drain.name)
		}
	}
	drain.healthy.Store(true)
	checksAt := drain.checks.Load()
	back := waitFor(t, drain.name+" answering two good checks (rise 2)", 15*time.Second, func() bool { return drain.checks.Load() >= checksAt+2 })
	time.Sleep(100 * time.Millisecond)
	for p, was := range placed {
		if r := get(client, base+p); r.node != was {
			t.Errorf("%s on %s after %s came back, was on %s", p, r.node, drain.name, was)
		}
	}
	t.Logf("%d fns moved while %s was out; back in rotation %v after /healthz 200 again, with its fns", moved, drain.name, back.Round(time.Millisecond))

	// A node that refuses connections (its process is gone) before its
	// checks notice: conn-failure retries the call on another node. Each
	// call on a new client connection: HAProxy (http-reuse safe) sends the
	// first request of a client connection on a new server connection, so
	// the refusal is all these calls can meet. A later request of a
	// kept-alive client may go out on an idle connection to the node that
	// has just closed; that one is not retried, as it must not be (the
	// client sees its connection closed: EOF).
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var gone *standIn
	for _, name := range clusterNodes {
		if nodes[name] != drain {
			gone = nodes[name]
			break
		}
	}
	_ = gone.srv.Close()
	closedAt := time.Now()
	var goneFns []string
	for p, was := range placed {
		if was == gone.name {
			goneFns = append(goneFns, p)
		}
	}
	sort.Strings(goneFns)
	for _, p := range goneFns {
		r := get(fresh, base+p)
		if r.err != nil || r.status != http.StatusOK || r.node == gone.name {
			t.Errorf("%s, whose node %s refuses connections: %d from %q %v, want 200 from another node", p, gone.name, r.status, r.node, r.err)
		}
	}
	sent := time.Since(closedAt)
	// The log's retries field (%rc) is "+N" when the retry was
	// redispatched to another server.
	redispatched := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "kiln_calls/") && regexp.MustCompile(`/\+[1-9]\d* \d+/\d+ `).MatchString(sc.Text()) {
			redispatched++
		}
	}
	t.Logf("%d calls of %s's fns sent within %v of it refusing connections: all answered by other nodes; %d logged so far as redispatched after a refused connection", len(goneFns), gone.name, sent.Round(time.Millisecond), redispatched)
	if redispatched == 0 && sent < time.Second {
		t.Errorf("no call was retried on another node after %s refused the connection, though its checks could not yet have taken it out", gone.name)
	}

	select {
	case err := <-exited:
		t.Fatalf("haproxy exited during the test: %v", err)
	default:
	}
}
