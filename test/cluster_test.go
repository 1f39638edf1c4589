package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
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

	"github.com/containerd/containerd"
	"github.com/jackc/pgx/v5"

	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/internal/testservers"
)

var clusterFlag = flag.Bool("cluster", false, "run TestCluster: 3 kilnd nodes in network namespaces behind HAProxy, on Postgres and NATS JetStream (make test-cluster)")

// The cluster test's plan. The load runs clusterLoadFor; the node that
// holds the cron lease (and serves the hot fn) is SIGKILLed
// clusterKillAfter into it and started again clusterRestartAfter into it.
const (
	clusterSize         = 3
	clusterWorkers      = 8
	clusterLoadFor      = 30 * time.Second
	clusterKillAfter    = 8 * time.Second
	clusterRestartAfter = 16 * time.Second
	clusterPause        = 30 * time.Millisecond // each worker's pause between calls
	clusterSlow         = "sleep=500ms"
	clusterCronEvery    = 2 * time.Second
	clusterCronWindow   = 20 * time.Second // of cron before the load
	// clusterCronLeaseTTL is calls.cronLeaseTTL: a dead holder's lease
	// passes to another node within it.
	clusterCronLeaseTTL = 5 * time.Second
	// clusterAckWait is calls.DefaultAckWait: a dead node's detached calls
	// are redelivered at most that long after its last heartbeat.
	clusterAckWait = 30 * time.Second
	clusterAddrNet = "10.253" // first two octets of the namespaces' addresses
	clusterPort    = 8080
)

// TestCluster runs three kilnd nodes, one per network namespace, each with
// its own embedded containerd, on one Postgres store and one NATS JetStream
// queue, behind HAProxy with deploy/haproxy.cfg (addresses rewritten). It
// checks what docs/CLUSTER.md promises: a fn created on one node is served
// through HAProxy; one fn's calls land on at most two nodes; cron fires once
// per tick across the cluster; and with a node SIGKILLed under a load of
// sync and detached calls (and started again later): every accepted
// detached call ends in success, no sync call gets another's body, every
// sync call a surviving node took succeeds, cron keeps firing once per
// tick. Figures go to the test log.
func TestCluster(t *testing.T) {
	if !*clusterFlag {
		t.Skip("the cluster test runs with -cluster (make test-cluster)")
	}
	began := time.Now()
	c := newCluster(t)
	t.Logf("cluster up in %s: postgres %s, nats %s, haproxy %s, nodes %s",
		time.Since(began).Round(time.Millisecond), c.pg.Addr(), c.natsURL, c.ha.url, c.nodeSummary())

	// Everything is created through node A's own address.
	a := c.nodes[0]
	echo := a.deploy("cluster", "echo", testfnImage, "json-http", nil)
	slow := a.deploy("cluster", "slow", testfnImage, "json-http", map[string]any{"timeout": 10})
	aecho := a.deploy("cluster", "aecho", testfnImage, "json-http", nil)
	aslow := a.deploy("cluster", "aslow", testfnImage, "json-http", map[string]any{"timeout": 10})
	tick := a.deploy("cluster", "tick", testfnImage, "json-http", nil)
	a.doJSON("POST", "/v2/triggers", map[string]any{
		"name": "tick-cron", "app_id": tick.AppID, "fn_id": tick.FnID, "type": "cron", "source": "@every 2s",
	}, nil)
	cronFrom := time.Now()

	// A fn created through node A is invoked through HAProxy, and through
	// the other nodes' own addresses: the store is shared.
	res := c.call(http.MethodPost, "/invoke/"+echo.FnID, "first", []byte("hello cluster"), nil)
	if res.err != nil || res.status != 200 || string(res.body) != "hello cluster" {
		t.Fatalf("fn %s created on %s, invoked through haproxy: %d %q %v", echo.FnID, a.name, res.status, res.body, res.err)
	}
	t.Logf("fn created through %s (%s), invoked through haproxy: 200, served by %s", a.name, a.url, c.ha.log.server(t, "first"))
	for _, n := range c.nodes[1:] {
		resp, body := n.do("POST", "/invoke/"+echo.FnID, strings.NewReader("direct"), nil)
		if resp.StatusCode != 200 || string(body) != "direct" {
			t.Fatalf("fn created on %s, invoked on %s directly: %d %s", a.name, n.name, resp.StatusCode, body)
		}
	}

	// The node to kill holds the cron lease and is where the hot fn's
	// calls go, so one kill takes the cron leader, a fn's warm node and
	// detached calls in flight. Fns hash to nodes at random: create fns
	// until one's first node is the leader.
	leader := c.cronLeader(t, 15*time.Second)
	hot, hotNode := echo, ""
	for i := 0; i < 12; i++ {
		if i > 0 {
			if hot != echo {
				a.doJSON("DELETE", "/v2/fns/"+hot.FnID, nil, nil)
			}
			hot = a.deploy("cluster", fmt.Sprintf("hot%d", i), testfnImage, "json-http", nil)
		}
		rid := fmt.Sprintf("probe-%d", i)
		res := c.call(http.MethodPost, "/invoke/"+hot.FnID, rid, []byte(rid), nil)
		if res.err != nil || res.status != 200 {
			t.Fatalf("probe %s: %d %v", rid, res.status, res.err)
		}
		if hotNode = c.ha.log.server(t, rid); hotNode == leader.name {
			break
		}
	}
	if hotNode != leader.name {
		t.Logf("none of 12 fns hashed to the cron leader %s: the hot fn's node is not the one killed", leader.name)
	}
	victim := leader
	t.Logf("cron leader %s (pid %d); hot fn %s (%s) hashes to %s", leader.name, leader.cmd.Process.Pid, hot.Fn, hot.FnID, hotNode)

	// 200 calls of one fn, 8 at a time, through HAProxy: at most 2 nodes.
	before := c.callsByNode(t, hot.Fn)
	placed := c.placement(t, hot.FnID, 200, 8)
	after := c.callsByNode(t, hot.Fn)
	metric := map[string]int{}
	for name, v := range after {
		if d := v - before[name]; d > 0 {
			metric[name] = d
		}
	}
	t.Logf("placement: 200 calls of fn %s, 8 at a time, through haproxy: by haproxy's log %v, by the nodes' kiln_calls_total %v", hot.Fn, placed, metric)
	if len(placed) > 2 || len(metric) > 2 {
		t.Errorf("one fn's 200 calls landed on more than 2 nodes: haproxy %v, metrics %v", placed, metric)
	}

	// Cron before the load: once per tick, no gap.
	if d := time.Until(cronFrom.Add(clusterCronWindow + clusterCronEvery)); d > 0 {
		time.Sleep(d)
	}
	pre := c.cronTicks(t, tick.FnID)
	preCheck := checkCronTicks(pre, time.Time{})
	t.Logf("cron before the load: %d fires in %s (%s), leader %s", len(pre), cronSpan(pre), preCheck.summary, leader.name)
	for _, e := range preCheck.errs {
		t.Errorf("cron before the load: %s", e)
	}

	// The load, with the kill and the restart.
	ld := c.runLoad(t, victim, map[string]deployed{"echo": hot, "slow": slow, "aecho": aecho, "aslow": aslow})
	c.report(t, ld, victim, tick)
}

// cluster is everything TestCluster starts.
type cluster struct {
	t       *testing.T
	net     *clusterNet
	pg      *clusterPG
	natsURL string
	nodes   []*clusterNode
	ha      *clusterHAProxy
	client  *http.Client
	// loadClient opens a connection per call. HAProxy closes a kept-alive
	// client connection whose request a node dropped without an answer,
	// and, so that the client may retry it, does not log that request
	// (abort_keep_alive in its http analyzer): the call's node would be
	// unknown. A call on a fresh connection gets a 502 and a log line
	// naming the node.
	loadClient *http.Client
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatal("nsenter (util-linux) not found: the cluster test starts each node in its network namespace with it")
	}
	c := &cluster{t: t}
	c.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 5 * time.Second}}
	t.Cleanup(c.client.CloseIdleConnections)
	c.loadClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	c.net = setupClusterNet(t, clusterSize)
	service := c.net.hostAddr(0)
	// Cleanups run last first: the nodes stop (and drain, writing to the
	// store and the queue) before Postgres and NATS do.
	c.pg = startClusterPostgres(t, service, c.net.block())
	c.natsURL = testservers.StartNATS(t, service)
	dsn := c.pg.DSN("kiln")
	for i := 0; i < clusterSize; i++ {
		k := &kilnd{
			t:        t,
			dataDir:  t.TempDir(),
			ns:       "e2e-" + sanitize(fmt.Sprintf("cluster-%d", i+1)),
			http:     &http.Client{Timeout: 2 * time.Minute},
			embedded: true,
			addr:     net.JoinHostPort(c.net.nodeAddr(i), strconv.Itoa(clusterPort)),
		}
		k.url = "http://" + k.addr
		k.logPath = filepath.Join(k.dataDir, "kilnd.log")
		k.args = []string{"--max-memory", "4096", "--store", dsn, "--queue", c.natsURL, "--calls-per-fn", "100000"}
		c.nodes = append(c.nodes, &clusterNode{kilnd: k, name: fmt.Sprintf("kilnd%d", i+1), netns: c.net.netns[i], nsenter: nsenter})
	}
	// All three at once: their schema migrations race, as in a real
	// cluster start.
	errs := make([]error, clusterSize)
	parallel(clusterSize, func(i int) { errs[i] = c.nodes[i].start() })
	for _, n := range c.nodes {
		t.Cleanup(n.shutdown)
	}
	for i, n := range c.nodes {
		if errs[i] != nil {
			n.dumpLog()
			t.Fatalf("%s: %v", n.name, errs[i])
		}
	}
	// Images are per node (each its own containerd).
	for _, n := range c.nodes {
		for _, tar := range env.imageTars {
			f, err := os.Open(tar)
			if err != nil {
				t.Fatal(err)
			}
			resp, body := n.do("POST", "/v2/images/import", f, nil)
			f.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s: import %s: %d %s", n.name, tar, resp.StatusCode, body)
			}
		}
	}
	c.ha = startClusterHAProxy(t, c.nodes)
	return c
}

func (c *cluster) nodeSummary() string {
	var parts []string
	for _, n := range c.nodes {
		parts = append(parts, fmt.Sprintf("%s=%s (netns %s, pid %d)", n.name, n.addr, n.netns, n.cmd.Process.Pid))
	}
	return strings.Join(parts, ", ")
}

func (c *cluster) node(name string) *clusterNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// clusterResult is one request's outcome.
type clusterResult struct {
	status int
	body   []byte
	header http.Header
	err    error
}

// call sends one request through HAProxy with rid in its query string
// (HAProxy hashes the path only), so its log line tells which node took
// it. Safe from any goroutine.
func (c *cluster) call(method, path, rid string, body []byte, header http.Header) clusterResult {
	return c.callWith(c.client, method, path, rid, body, header)
}

func (c *cluster) callWith(client *http.Client, method, path, rid string, body []byte, header http.Header) clusterResult {
	u := c.ha.url + path
	if rid != "" {
		u += "?r=" + url.QueryEscape(rid)
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return clusterResult{err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return clusterResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return clusterResult{status: resp.StatusCode, body: b, header: resp.Header, err: err}
}

// placement sends n calls of fn, workers at a time, and counts them by
// the node HAProxy's log says took each.
func (c *cluster) placement(t *testing.T, fnID string, n, workers int) map[string]int {
	t.Helper()
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	parallel(workers, func(int) {
		for {
			i := int(next.Add(1)) - 1
			if i >= n {
				return
			}
			rid := fmt.Sprintf("place-%d", i)
			res := c.call(http.MethodPost, "/invoke/"+fnID, rid, []byte(rid), nil)
			if res.err != nil || res.status != 200 || string(res.body) != rid {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %d %q %v", rid, res.status, res.body, res.err))
			}
		}
	})
	if f := failed.Load(); f > 0 {
		t.Errorf("placement: %d of %d calls failed, e.g. %v", f, n, firstErr.Load())
	}
	byNode := map[string]int{}
	for i := 0; i < n; i++ {
		byNode[c.ha.log.server(t, fmt.Sprintf("place-%d", i))]++
	}
	return byNode
}

// callsByNode reads kiln_calls_total of fn from every live node.
func (c *cluster) callsByNode(t *testing.T, fn string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range c.nodes {
		resp, body := n.do("GET", "/metrics", nil, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s /metrics: %d", n.name, resp.StatusCode)
		}
		out[n.name] = int(metricSum(string(body), "kiln_calls_total", `fn="`+fn+`"`))
	}
	return out
}

// metricSum adds the values of a Prometheus text family's samples whose
// labels contain every one of match.
func metricSum(text, name string, match ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			if !strings.Contains(line, m) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// cronLeader is the node holding the cron lease, as Postgres has it.
func (c *cluster) cronLeader(t *testing.T, wait time.Duration) *clusterNode {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if n := c.leaseHolder(t); n != nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no node holds the cron lease after %s", wait)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leaseHolder is the node whose process holds the unexpired cron lease
// (its holder id is host/pid/random), or nil.
func (c *cluster) leaseHolder(t *testing.T) *clusterNode {
	t.Helper()
	var holder string
	err := c.pg.query(func(conn *pgx.Conn) error {
		return conn.QueryRow(context.Background(), `SELECT holder FROM leases WHERE name = 'cron' AND expires_at > now()`).Scan(&holder)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		t.Fatalf("read the cron lease: %v", err)
	}
	parts := strings.Split(holder, "/")
	if len(parts) < 2 {
		t.Fatalf("cron lease holder %q: not host/pid/id", holder)
	}
	pid, _ := strconv.Atoi(parts[1])
	for _, n := range c.nodes {
		if n.cmd != nil && n.cmd.Process.Pid == pid {
			return n
		}
	}
	return nil
}

// cronTick is one cron fire: its record and the tick its id encodes.
type cronTick struct {
	at   time.Time
	call callView
}

// cronTicks lists the cron fn's calls, oldest tick first.
func (c *cluster) cronTicks(t *testing.T, fnID string) []cronTick {
	t.Helper()
	var out []cronTick
	for _, v := range c.listCalls(t, fnID) {
		at, err := idTime(v.ID)
		if err != nil {
			t.Fatalf("cron call id %q: %v", v.ID, err)
		}
		out = append(out, cronTick{at: at, call: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// idTime decodes the Unix milliseconds in the first 10 characters of a
// kiln id (Crockford base32; a cron fire's id carries its tick).
func idTime(id string) (time.Time, error) {
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	if len(id) != 26 {
		return time.Time{}, fmt.Errorf("length %d, want 26", len(id))
	}
	var v uint64
	for _, ch := range id[:10] {
		d := strings.IndexRune(crockford, ch)
		if d < 0 {
			return time.Time{}, fmt.Errorf("bad digit %q", ch)
		}
		v = v<<5 | uint64(d)
	}
	return time.UnixMilli(int64(v)), nil
}

// listCalls pages through a fn's call records through HAProxy (any node
// answers /v2).
func (c *cluster) listCalls(t *testing.T, fnID string) []callView {
	t.Helper()
	var out []callView
	cursor := ""
	for {
		u := c.ha.url + "/v2/fns/" + fnID + "/calls?per_page=100"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		var page struct {
			Items      []callView `json:"items"`
			NextCursor string     `json:"next_cursor"`
		}
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			var resp *http.Response
			resp, err = c.client.Get(u)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("%d %s", resp.StatusCode, b)
				} else {
					err = json.Unmarshal(b, &page)
				}
			}
			if err == nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("list calls of fn %s: %v", fnID, err)
		}
		out = append(out, page.Items...)
		if page.NextCursor == "" || len(page.Items) == 0 {
			return out
		}
		cursor = page.NextCursor
	}
}

// cronCheck is what checkCronTicks found.
type cronCheck struct {
	errs      []string
	summary   string
	failover  time.Duration // the one gap allowed, around the kill
	gapAt     time.Time
	nextAfter time.Time // the first fire after the kill
}

// checkCronTicks checks consecutive fires are one tick apart: none closer
// (a tick fired twice, by two nodes' schedules) and no gap, except one gap
// around killAt (when not zero) of at most the lease TTL plus two ticks.
func checkCronTicks(ticks []cronTick, killAt time.Time) cronCheck {
	var cc cronCheck
	if len(ticks) < 2 {
		cc.errs = append(cc.errs, fmt.Sprintf("%d fires, want a tick every %s", len(ticks), clusterCronEvery))
		return cc
	}
	dups, gaps := 0, 0
	for i := 1; i < len(ticks); i++ {
		prev, cur := ticks[i-1].at, ticks[i].at
		if !killAt.IsZero() && cc.nextAfter.IsZero() && cur.After(killAt) {
			cc.nextAfter = cur
		}
		d := cur.Sub(prev)
		switch {
		case d == clusterCronEvery:
		case d < clusterCronEvery:
			dups++
			cc.errs = append(cc.errs, fmt.Sprintf("fires %s apart at %s and %s: a tick fired twice", d, prev.Format("15:04:05.000"), cur.Format("15:04:05.000")))
		case !killAt.IsZero() && cc.failover == 0 && !prev.After(killAt) && cur.After(killAt) &&
			d <= clusterCronLeaseTTL+2*clusterCronEvery+time.Second:
			cc.failover, cc.gapAt = d, prev
		default:
			gaps++
			cc.errs = append(cc.errs, fmt.Sprintf("a gap of %s between fires at %s and %s (tick %s)", d, prev.Format("15:04:05.000"), cur.Format("15:04:05.000"), clusterCronEvery))
		}
	}
	retried := 0
	for _, tk := range ticks {
		if tk.call.Attempts > 1 {
			retried++
		}
	}
	cc.summary = fmt.Sprintf("%d ticks, %d twice, %d gaps, %d run more than once", len(ticks), dups, gaps, retried)
	if cc.failover > 0 {
		cc.summary += fmt.Sprintf(", one failover gap of %s", cc.failover)
	}
	return cc
}

func cronSpan(ticks []cronTick) string {
	if len(ticks) == 0 {
		return "0s"
	}
	return ticks[len(ticks)-1].at.Sub(ticks[0].at).String()
}

// clusterOp is one call of the load.
type clusterOp struct {
	kind     string // echo, slow (sync); aecho, aslow (detached)
	rid      string
	start    time.Time
	end      time.Time
	status   int
	err      error
	wrong    string // a 200 whose body was not this call's
	callID   string // a detached call's id from its 202
	detached bool
}

// clusterLoad is what runLoad did and saw.
type clusterLoad struct {
	ops                []clusterOp
	start, end         time.Time
	killAt             time.Time
	restartAt          time.Time // the new process started
	restartedAt        time.Time // it answered /healthz
	fns                map[string]deployed
	leaderAtKill       string
	leaderAfterRestart string
}

// runLoad sends sync and detached calls through HAProxy from
// clusterWorkers workers for clusterLoadFor, kills victim with SIGKILL
// (by its PID) and starts it again on the same data dir, address and
// namespace.
func (c *cluster) runLoad(t *testing.T, victim *clusterNode, fns map[string]deployed) *clusterLoad {
	t.Helper()
	ld := &clusterLoad{fns: fns}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	perWorker := make([][]clusterOp, clusterWorkers)
	var seq atomic.Int64
	ld.start = time.Now()
	for w := 0; w < clusterWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(ld.start.UnixNano()), uint64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				op := clusterOp{rid: fmt.Sprintf("load-%d", seq.Add(1))}
				var header http.Header
				switch p := rng.IntN(100); {
				case p < 60:
					op.kind = "echo"
				case p < 75:
					op.kind, header = "slow", http.Header{"X-Test-Action": {clusterSlow}}
				case p < 90:
					op.kind, header = "aslow", http.Header{"X-Test-Action": {clusterSlow}}
				default:
					op.kind = "aecho"
				}
				op.detached = op.kind[0] == 'a'
				if op.detached {
					header = header.Clone()
					if header == nil {
						header = http.Header{}
					}
					header.Set("Fn-Invoke-Type", "detached")
				}
				body := []byte(op.rid + "-" + strconv.FormatUint(rng.Uint64(), 36))
				op.start = time.Now()
				res := c.callWith(c.loadClient, http.MethodPost, "/invoke/"+fns[op.kind].FnID, op.rid, body, header)
				op.end = time.Now()
				op.status, op.err = res.status, res.err
				switch {
				case res.err != nil:
				case op.detached && res.status == http.StatusAccepted:
					var v struct {
						CallID string `json:"call_id"`
					}
					if err := json.Unmarshal(res.body, &v); err != nil || v.CallID == "" {
						op.wrong = fmt.Sprintf("202 without a call id: %q", res.body)
					}
					op.callID = v.CallID
				case !op.detached && res.status == http.StatusOK:
					if !bytes.Equal(res.body, body) {
						op.wrong = fmt.Sprintf("sent %q, got %q", body, res.body)
					}
					op.callID = res.header.Get("Fn-Call-Id")
				}
				perWorker[w] = append(perWorker[w], op)
				time.Sleep(clusterPause)
			}
		}(w)
	}
	var once sync.Once
	stopLoad := func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			ld.end = time.Now()
			for _, ops := range perWorker {
				ld.ops = append(ld.ops, ops...)
			}
		})
	}
	defer stopLoad()

	time.Sleep(time.Until(ld.start.Add(clusterKillAfter)))
	if n := c.leaseHolder(t); n != nil {
		ld.leaderAtKill = n.name
	}
	ld.killAt = time.Now()
	// Only the process this test started, by its PID.
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", victim.name, err)
	}
	<-victim.exited
	t.Logf("SIGKILLed %s (pid %d) %s into the load; cron leader then: %s", victim.name, victim.cmd.Process.Pid, ld.killAt.Sub(ld.start).Round(time.Millisecond), ld.leaderAtKill)

	time.Sleep(time.Until(ld.start.Add(clusterRestartAfter)))
	ld.restartAt = time.Now()
	if err := victim.start(); err != nil {
		victim.dumpLog()
		t.Fatalf("restart %s: %v", victim.name, err)
	}
	ld.restartedAt = time.Now()
	t.Logf("restarted %s (pid %d, same data dir, address and namespace): healthy in %s", victim.name, victim.cmd.Process.Pid, ld.restartedAt.Sub(ld.restartAt).Round(time.Millisecond))

	time.Sleep(time.Until(ld.start.Add(clusterLoadFor)))
	stopLoad()
	if n := c.leaseHolder(t); n != nil {
		ld.leaderAfterRestart = n.name
	}
	return ld
}

// report checks the load's outcome and logs its figures.
func (c *cluster) report(t *testing.T, ld *clusterLoad, victim *clusterNode, tick deployed) {
	t.Helper()
	// HAProxy logs a request as it ends; give the last lines a moment.
	time.Sleep(time.Second)
	log := c.ha.log

	// Sync calls.
	counts := map[string]int{}
	var syncOK, syncOnKilled, detachedAccepted, detachedLost int
	var problems []string
	lostStatus := map[string]int{}
	served := map[string]map[string]int{} // kind -> node -> calls
	accepted := map[string][]string{}     // detached kind -> call ids
	for _, op := range ld.ops {
		counts[op.kind]++
		r, logged := log.get(op.rid)
		if logged {
			if served[op.kind] == nil {
				served[op.kind] = map[string]int{}
			}
			served[op.kind][r.server]++
		}
		if op.wrong != "" {
			problems = append(problems, fmt.Sprintf("%s %s: %s", op.kind, op.rid, op.wrong))
			continue
		}
		ok := (!op.detached && op.err == nil && op.status == 200) || (op.detached && op.err == nil && op.status == 202)
		if ok {
			if op.detached {
				detachedAccepted++
				accepted[op.kind] = append(accepted[op.kind], op.callID)
			} else {
				syncOK++
			}
			continue
		}
		what := fmt.Sprintf("%d", op.status)
		if op.err != nil {
			what = "error: " + op.err.Error()
		}
		// A failed call is the killed node's when HAProxy gave it to that
		// node before the new process started; anything else is a call a
		// live node took and lost.
		if logged && r.server == victim.name && op.start.Before(ld.restartAt) {
			if op.detached {
				detachedLost++
			} else {
				syncOnKilled++
			}
			key := fmt.Sprintf("%s %d %s", op.kind, r.status, r.term)
			lostStatus[key]++
			continue
		}
		where := "not in haproxy's log"
		if raw := log.raw("r=" + op.rid + " "); raw != "" {
			where += "; raw: " + raw
		}
		if logged {
			where = fmt.Sprintf("haproxy: %s %d %s", r.server, r.status, r.term)
		}
		problems = append(problems, fmt.Sprintf("%s %s at +%s: %s (%s)", op.kind, op.rid, op.start.Sub(ld.start).Round(time.Millisecond), what, where))
	}
	t.Logf("load: %d calls in %s from %d workers: %v; sync answered 200: %d; sync calls lost on the killed node: %d; detached accepted (202): %d, refused on the killed node: %d; failures on the killed node by kind/status/termination: %v",
		len(ld.ops), ld.end.Sub(ld.start).Round(time.Millisecond), clusterWorkers, counts, syncOK, syncOnKilled, detachedAccepted, detachedLost, lostStatus)
	t.Logf("load: calls by node (haproxy's log): %v", served)
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-20)
			break
		}
		t.Errorf("load: %s", p)
	}

	// HAProxy's view of the kill.
	down, up := log.event(victim.name, "DOWN", ld.killAt), log.event(victim.name, "UP", ld.restartAt)
	lastSent := log.lastSent(victim.name, ld.killAt, ld.restartAt)
	redispatched, lastTried := log.redispatched(ld.killAt, ld.restartAt)
	fig := func(at time.Time, from time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return at.Sub(from).Round(time.Millisecond).String()
	}
	t.Logf("failover: kill -> haproxy marks %s DOWN: %s; after the kill haproxy gave it %s (last at %s) and tried it first for %d calls it then redispatched on the refused connection (last at %s); restart -> haproxy marks it UP: %s",
		victim.name, fig(down, ld.killAt), plural(log.sentBetween(victim.name, ld.killAt, ld.restartAt), "call"), fig(lastSent, ld.killAt), redispatched, fig(lastTried, ld.killAt), fig(up, ld.restartAt))
	if down.IsZero() {
		t.Errorf("haproxy never marked the killed node %s down", victim.name)
	}
	if up.IsZero() {
		t.Errorf("haproxy never marked the restarted node %s up again", victim.name)
	}

	// Detached calls: every accepted one ends in success.
	ids := map[string]string{} // call id -> fn kind
	for kind, list := range accepted {
		for _, id := range list {
			ids[id] = kind
		}
	}
	views := map[string]callView{}
	deadline := time.Now().Add(clusterAckWait + 60*time.Second)
	for {
		pending := 0
		for _, kind := range []string{"aecho", "aslow"} {
			for _, v := range c.listCalls(t, ld.fns[kind].FnID) {
				views[v.ID] = v
			}
		}
		for id := range ids {
			if v, ok := views[id]; !ok || !finalStatus(v.Status) {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d accepted detached calls not finished %s after the load", pending, len(ids), time.Since(ld.end).Round(time.Second))
			break
		}
		time.Sleep(time.Second)
	}
	settled := time.Now()
	var retried, notSuccess int
	var firstRedelivered, lastRedelivered time.Time
	attempts := map[int]int{}
	for id, kind := range ids {
		v, ok := views[id]
		if !ok {
			notSuccess++
			t.Errorf("detached %s call %s: accepted, no record", kind, id)
			continue
		}
		attempts[v.Attempts]++
		if v.Status != "success" {
			notSuccess++
			t.Errorf("detached %s call %s: accepted, ended %s (%s) after %d attempts", kind, id, v.Status, v.Error, v.Attempts)
		}
		if v.Attempts > 1 {
			retried++
			if v.CompletedAt != nil {
				if firstRedelivered.IsZero() || v.CompletedAt.Before(firstRedelivered) {
					firstRedelivered = *v.CompletedAt
				}
				if v.CompletedAt.After(lastRedelivered) {
					lastRedelivered = *v.CompletedAt
				}
			}
		}
	}
	// Records of detached calls whose 202 never reached the client.
	orphans := map[string]int{}
	for id, v := range views {
		if _, ok := ids[id]; !ok {
			orphans[v.Status]++
		}
	}
	t.Logf("detached: %d accepted, %d success, %d not; attempts per call %v: %d needed a retry (attempts > 1); kill -> first redelivered call finished: %s, last: %s; all settled %s after the load; records of calls whose 202 was lost: %v",
		len(ids), len(ids)-notSuccess, notSuccess, attempts, retried, fig(firstRedelivered, ld.killAt), fig(lastRedelivered, ld.killAt), settled.Sub(ld.end).Round(time.Millisecond), orphans)

	// Cron over the whole test: once per tick, one gap around the kill
	// when the killed node was the leader.
	ticks := c.cronTicks(t, tick.FnID)
	var failoverAt time.Time
	if ld.leaderAtKill == victim.name {
		failoverAt = ld.killAt
	}
	cc := checkCronTicks(ticks, failoverAt)
	cronNotOK := 0
	for _, tk := range ticks {
		if tk.call.Status != "success" && tk.at.Before(settled.Add(-5*time.Second)) {
			cronNotOK++
		}
	}
	resumed := "-"
	if !cc.nextAfter.IsZero() {
		resumed = cc.nextAfter.Sub(ld.killAt).Round(time.Millisecond).String()
	}
	t.Logf("cron: %d fires over %s (%s); kill -> the next fire: %s; leader at the kill %s, after the restart %s; fires not (yet) success: %d",
		len(ticks), cronSpan(ticks), cc.summary, resumed, ld.leaderAtKill, ld.leaderAfterRestart, cronNotOK)
	for _, e := range cc.errs {
		t.Errorf("cron: %s", e)
	}
	if cronNotOK > 0 {
		t.Errorf("cron: %d fires did not end in success", cronNotOK)
	}

	// Records a node left running or queued in the shared store.
	left := map[string]int{}
	err := c.pg.query(func(conn *pgx.Conn) error {
		rows, err := conn.Query(context.Background(), `SELECT f.name, c.status, count(*) FROM calls c JOIN fns f ON f.id = c.fn_id
			WHERE c.status IN ('queued', 'running') AND c.created_at < now() - interval '10 seconds'
			GROUP BY f.name, c.status`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name, status string
			var n int
			if err := rows.Scan(&name, &status, &n); err != nil {
				return err
			}
			left[name+" "+status] = n
		}
		return rows.Err()
	})
	if err != nil {
		t.Errorf("read unfinished call records: %v", err)
	}
	t.Logf("records still queued or running in the store 10 s after they were made: %v", left)
}

// clusterNode is one kilnd of the cluster, run in its network namespace.
type clusterNode struct {
	*kilnd
	name    string // its server name in deploy/haproxy.cfg
	netns   string
	nsenter string
}

// start runs kilnd in the node's network namespace and waits for
// /healthz. nsenter --net joins the namespace and execs kilnd in place, so
// the PID is kilnd's. (Not `ip netns exec`: it remounts /sys for the
// namespace, which hides /sys/fs/cgroup from kilnd's containerd and runc.)
// It returns errors rather than failing the test: nodes start in parallel.
func (n *clusterNode) start() error {
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"--net=/run/netns/" + n.netns, env.kilndBin,
		"--listen", n.addr, "--data-dir", n.dataDir, "--namespace", n.ns}
	args = append(args, n.args...)
	cmd := exec.Command(n.nsenter, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Dies with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	exited := make(chan struct{})
	n.cmd, n.exited = cmd, exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := client.Get(n.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("kilnd exited during start-up: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("kilnd did not become healthy within 90s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); err != nil || filepath.Base(exe) != "kilnd" {
		return fmt.Errorf("pid %d is %q (%v), not kilnd", cmd.Process.Pid, exe, err)
	}
	if n.ctr == nil {
		c, err := containerd.New(executor.SocketPath(filepath.Join(n.dataDir, "containerd")))
		if err != nil {
			return err
		}
		n.ctr = c
	}
	return nil
}

// shutdown stops the node with SIGTERM (by its PID) and checks its
// containerd namespace is empty, as the harness does for every kilnd.
func (n *clusterNode) shutdown() {
	if n.cmd == nil {
		return
	}
	n.stop(syscall.SIGTERM, 60*time.Second)
	n.reopenEmbedded()
	n.assertNothingLeft()
	n.ctr.Close()
	n.embeddedDaemon.Stop()
	if n.t.Failed() {
		n.t.Logf("%s:", n.name)
		n.dumpLog()
	}
}

// clusterNet is the test's network namespaces, one per node, each with a
// veth pair to the host: node i is 10.253.(b+i).2/30, its host side
// 10.253.(b+i).1/30, for a block b the host does not use. Postgres and
// NATS listen on node 0's host side; the other namespaces route to it.
type clusterNet struct {
	base  int
	netns []string
	veths []string // host sides
}

func (cn *clusterNet) hostAddr(i int) string {
	return fmt.Sprintf("%s.%d.1", clusterAddrNet, cn.base+i)
}

func (cn *clusterNet) nodeAddr(i int) string {
	return fmt.Sprintf("%s.%d.2", clusterAddrNet, cn.base+i)
}

func (cn *clusterNet) block() string { return fmt.Sprintf("%s.%d.0/22", clusterAddrNet, cn.base) }

func clusterIP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func setupClusterNet(t *testing.T, n int) *clusterNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) not found: the cluster test makes network namespaces with it")
	}
	cn := &clusterNet{base: clusterFreeBlock(t)}
	// Removed by the names made here, and only those.
	t.Cleanup(func() {
		for _, v := range cn.veths {
			if _, err := net.InterfaceByName(v); err == nil {
				if err := clusterIP("link", "del", v); err != nil {
					t.Errorf("remove veth %s: %v", v, err)
				}
			}
		}
		for _, ns := range cn.netns {
			if err := clusterIP("netns", "del", ns); err != nil {
				t.Errorf("remove netns %s: %v", ns, err)
			}
		}
	})
	tag := os.Getpid() % 100000
	service := cn.hostAddr(0)
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("kiln-cluster-%d-%d", tag, i+1)
		host := fmt.Sprintf("kc%dh%d", tag, i+1)
		peer := fmt.Sprintf("kc%dn%d", tag, i+1)
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Fatalf("network namespace %s exists already", ns)
		}
		if _, err := net.InterfaceByName(host); err == nil {
			t.Fatalf("interface %s exists already", host)
		}
		if err := clusterIP("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		cn.netns = append(cn.netns, ns)
		if err := clusterIP("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns); err != nil {
			t.Fatal(err)
		}
		cn.veths = append(cn.veths, host)
		steps := [][]string{
			{"addr", "add", cn.hostAddr(i) + "/30", "dev", host},
			{"link", "set", host, "up"},
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", ns, "addr", "add", cn.nodeAddr(i) + "/30", "dev", peer},
			{"-n", ns, "link", "set", peer, "up"},
		}
		if i > 0 {
			// Only the services' address: the namespace reaches nothing else.
			steps = append(steps, []string{"-n", ns, "route", "add", service + "/32", "via", cn.hostAddr(i)})
		}
		for _, s := range steps {
			if err := clusterIP(s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The host side must be able to talk before anything binds to it
	// (IPv4 has no DAD; this is a quick check the links are up).
	for i := 0; i < n; i++ {
		if err := clusterIP("-n", cn.netns[i], "route", "get", service); err != nil {
			t.Fatal(err)
		}
	}
	return cn
}

// clusterFreeBlock picks b (a multiple of 4) such that 10.253.b.0/22
// overlaps no address or route of the host.
func clusterFreeBlock(t *testing.T) int {
	t.Helper()
	var used []*net.IPNet
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				used = append(used, ipn)
			}
		}
	}
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		switch dst {
		case "local", "broadcast", "unicast", "multicast", "anycast", "unreachable", "blackhole", "prohibit", "throw", "nat":
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, ipn, err := net.ParseCIDR(dst); err == nil {
			used = append(used, ipn)
		}
	}
	for b := 0; b < 256; b += 4 {
		_, blk, _ := net.ParseCIDR(fmt.Sprintf("%s.%d.0/22", clusterAddrNet, b))
		free := true
		for _, u := range used {
			if u.Contains(blk.IP) || blk.Contains(u.IP) {
				free = false
				break
			}
		}
		if free {
			return b
		}
	}
	t.Fatalf("no free /22 in %s.0.0/16 for the cluster's namespaces", clusterAddrNet)
	return 0
}

// clusterPG is a PostgreSQL server of the test's own
// (internal/testservers), listening on the host side of a namespace's
// veth, with the kiln database the nodes share.
type clusterPG struct {
	*testservers.Postgres

	mu   sync.Mutex
	conn *pgx.Conn // on the kiln database, for the test's own queries
}

func startClusterPostgres(t *testing.T, host, allow string) *clusterPG {
	t.Helper()
	s := &clusterPG{Postgres: testservers.StartPostgres(t, host, allow)}
	s.CreateDatabase(t, "kiln")
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.conn != nil {
			s.conn.Close(context.Background())
		}
	})
	return s
}

// query runs f on the test's connection to the kiln database.
func (s *clusterPG) query(f func(*pgx.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.conn.IsClosed() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.DSN("kiln"))
		if err != nil {
			return err
		}
		s.conn = conn
	}
	return f(s.conn)
}

// clusterHAProxy is HAProxy with deploy/haproxy.cfg on host loopback.
type clusterHAProxy struct {
	url string
	log *haLog
}

func startClusterHAProxy(t *testing.T, nodes []*clusterNode) *clusterHAProxy {
	t.Helper()
	bin := testservers.HAProxyBin(t)
	addrs := map[string]string{}
	checks := map[string]float64{}
	for _, n := range nodes {
		addrs[n.name] = n.addr
		checks[n.name] = n.healthChecks()
	}
	listen := testservers.FreePort(t, "127.0.0.1")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	src, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(testservers.HAProxyConfig(t, string(src), fmt.Sprintf("127.0.0.1:%d", listen), addrs)), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &clusterHAProxy{url: fmt.Sprintf("http://127.0.0.1:%d", listen), log: newHALog()}
	// HAProxy writes its log to a non-blocking stdout and drops lines the
	// pipe has no room for; a pipe of the largest size the kernel allows,
	// read by a goroutine of its own, keeps every line.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	const fSetPipeSz = 1031 // F_SETPIPE_SZ, which package syscall does not name
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, pw.Fd(), fSetPipeSz, 1<<20); errno != 0 {
		t.Logf("haproxy's log pipe keeps its default size: %v", errno)
	}
	cmd := exec.Command(bin, "-db", "-f", cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		_, _ = io.Copy(h.log, pr)
		pr.Close()
	}()
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		select {
		case <-readDone:
		case <-time.After(2 * time.Second): // something haproxy started holds the pipe
			pr.Close()
		}
		exited <- err
	}()
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
			t.Logf("haproxy log (tail):\n%s", h.log.tail(150))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("haproxy exited: %v\n%s", err, h.log.tail(50))
		default:
		}
		ok := false
		if resp, err := http.Get(h.url + "/haproxy-health"); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode == 200
		}
		// Two health checks on every node (rise 2).
		for _, n := range nodes {
			if n.healthChecks() < checks[n.name]+2 {
				ok = false
			}
		}
		if ok {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy not up with every node checked within 20s\n%s", h.log.tail(50))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// healthChecks is how many /healthz requests the node answered 200.
func (n *clusterNode) healthChecks() float64 {
	resp, err := http.Get(n.url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return metricSum(string(b), "kiln_http_requests_total", `route="GET /healthz"`, `code="200"`)
}

// haLog reads HAProxy's log as it runs: request lines (option httplog)
// by the rid in their query string, and server state changes, each
// stamped with when it arrived.
type haLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	reqs    map[string]haRequest
	events  []haEvent
}

type haRequest struct {
	accepted time.Time // haproxy's accept date
	logged   time.Time
	server   string
	status   int
	term     string // termination state
	retries  string // "+N" when redispatched
	path     string
}

type haEvent struct {
	at     time.Time
	server string
	state  string
}

var (
	haRequestLine = regexp.MustCompile(`^\S+ \[([^\]]+)\] \S+ (\S+)/(\S+) \S+ (-?\d+) \S+ \S+ \S+ (\S+) \d+/\d+/\d+/\d+/(\+?\d+) \S+ "(\S+) (\S+)`)
	haServerLine  = regexp.MustCompile(`^Server kiln_calls/(\S+) is (UP|DOWN)`)
)

func newHALog() *haLog { return &haLog{reqs: map[string]haRequest{}} }

func (l *haLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.lines = append(l.lines, now.Format("15:04:05.000")+" "+line)
		if m := haServerLine.FindStringSubmatch(line); m != nil {
			l.events = append(l.events, haEvent{at: now, server: m[1], state: m[2]})
			continue
		}
		m := haRequestLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		u, err := url.Parse(m[8])
		if err != nil {
			continue
		}
		rid := u.Query().Get("r")
		if rid == "" {
			continue
		}
		status, _ := strconv.Atoi(m[4])
		accepted, _ := time.ParseInLocation("02/Jan/2006:15:04:05.000", m[1], time.Local)
		l.reqs[rid] = haRequest{accepted: accepted, logged: now, server: m[3], status: status, term: m[5], retries: m[6], path: u.Path}
	}
	return len(p), nil
}

// get is the request logged with rid.
func (l *haLog) get(rid string) (haRequest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.reqs[rid]
	return r, ok
}

// server waits (briefly) for rid's log line and returns its server.
func (l *haLog) server(t *testing.T, rid string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if r, ok := l.get(rid); ok {
			return r.server
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s is not in haproxy's log", rid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// event is when server first went to state after from (zero if never).
func (l *haLog) event(server, state string, from time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.server == server && e.state == state && e.at.After(from) {
			return e.at
		}
	}
	return time.Time{}
}

// lastSent is the accept time of the last request haproxy gave server
// between from and until.
func (l *haLog) lastSent(server string, from, until time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last time.Time
	for _, r := range l.reqs {
		if r.server == server && r.accepted.After(from) && r.accepted.Before(until) && r.accepted.After(last) {
			last = r.accepted
		}
	}
	return last
}

// redispatched counts requests accepted between from and until that went
// to another node after a refused connection, and the last one's accept
// time.
func (l *haLog) redispatched(from, until time.Time) (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	var last time.Time
	for _, r := range l.reqs {
		if strings.HasPrefix(r.retries, "+") && r.accepted.After(from) && r.accepted.Before(until) {
			n++
			if r.accepted.After(last) {
				last = r.accepted
			}
		}
	}
	return n, last
}

// sentBetween counts requests haproxy gave server, accepted between from
// and until.
func (l *haLog) sentBetween(server string, from, until time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.reqs {
		if r.server == server && r.accepted.After(from) && r.accepted.Before(until) {
			n++
		}
	}
	return n
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// raw is the log lines containing s.
func (l *haLog) raw(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, " | ")
}

func (l *haLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
