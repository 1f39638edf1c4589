package test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/executor"
)

var (
	soakFor = flag.Duration("soak", 0, "run the soak test for this long (make soak)")
	// The crash-heavy variant: a quarter of all calls break a container,
	// with shims grouped whatever kilnd's default. It is the load under
	// which grouped shims once outlived their containers.
	soakGroup = flag.Bool("soak-group", os.Getenv("SOAK_GROUP") != "", "crash-heavy soak with --group-shims=true (or SOAK_GROUP=1 make soak)")
)

// TestSoak runs mixed sync and detached load at concurrency 32, with a
// share of misbehaving calls, and checks that no call is lost or answered
// with another call's bytes, and that kilnd's memory and goroutines end
// where they started. It prints the figures docs/SOAK.md records.
func TestSoak(t *testing.T) {
	if *soakFor == 0 {
		t.Skip("run with make soak")
	}
	args := []string{"--max-memory", "4096", "--log-level", "warn", "--calls-per-fn", "1000000"}
	if *soakGroup {
		args = append(args, "--group-shims=true")
	}
	k := startKilnd(t, withArgs(args...))
	good := k.deploy("soak", "good", testfnImage, "json-http", map[string]any{"memory": 64, "timeout": 5, "idle_timeout": 5})
	bad := k.deploy("soak", "bad", testfnImage, "http", map[string]any{"memory": 64, "timeout": 2, "idle_timeout": 5})
	// Warm up, then take the baseline.
	for i := 0; i < 20; i++ {
		k.do("POST", "/invoke/"+good.FnID, strings.NewReader("warm"), nil)
	}
	time.Sleep(time.Second)
	rss0, gor0, heap0 := kilndRSS(t, k), kilndGoroutines(t, k), metricValue(t, k, "go_memstats_heap_inuse_bytes")

	var (
		mu       sync.Mutex
		outcomes = map[string]int{}
		mixups   atomic.Int64
		detached = map[string]string{} // call id -> fn id
		sent     atomic.Int64
	)
	count := func(kind string) {
		mu.Lock()
		outcomes[kind]++
		mu.Unlock()
	}
	actions := []struct {
		weight int
		header string
		want   int
	}{
		{70, "", 200},
		{5, "crash=3", 502},
		{5, "garbage", 502},
		{3, "partial", 502},
		{2, "hang", 504},
		{5, "stderr=soak-line", 200},
	}
	if *soakGroup {
		// 45 of every 90 sync calls break a container of the bad fn.
		actions[0].weight, actions[1].weight, actions[2].weight, actions[3].weight = 40, 25, 10, 8
	}
	total := 0
	for _, a := range actions {
		total += a.weight
	}
	shims := watchShims(t, k)
	deadline := time.Now().Add(*soakFor)
	start := time.Now()
	parallel(32, func(worker int) {
		rng := rand.New(rand.NewSource(int64(worker)))
		for n := 0; time.Now().Before(deadline); n++ {
			body := fmt.Sprintf("w%d-n%d-%d", worker, n, rng.Int63())
			sent.Add(1)
			if rng.Intn(10) == 0 {
				resp, b := k.do("POST", "/invoke/"+good.FnID, strings.NewReader(body), http.Header{"Fn-Invoke-Type": {"detached"}})
				var r struct {
					CallID string `json:"call_id"`
				}
				if resp.StatusCode != 202 || json.Unmarshal(b, &r) != nil {
					count(fmt.Sprintf("detached %d", resp.StatusCode))
					continue
				}
				mu.Lock()
				detached[r.CallID] = good.FnID
				mu.Unlock()
				count("detached 202")
				continue
			}
			pick := rng.Intn(total)
			var a = actions[0]
			for _, c := range actions {
				if pick < c.weight {
					a = c
					break
				}
				pick -= c.weight
			}
			fn := good
			h := http.Header{}
			if a.header != "" {
				fn = bad
				h.Set("X-Test-Action", a.header)
			}
			resp, b := k.do("POST", "/invoke/"+fn.FnID, strings.NewReader(body), h)
			count(fmt.Sprintf("%s %d", orDefault(a.header, "echo"), resp.StatusCode))
			if resp.StatusCode == 200 && string(b) != body {
				mixups.Add(1)
				t.Errorf("call got %q, sent %q", b, body)
			}
			// The healthy fn answers 200, every time: the bad fn's crashes
			// and hangs may not take its launches, queue or memory. Under
			// this load a broken container's replacement can take longer
			// than the bad fn's 2 s timeout, so the bad fn may also answer
			// 504, or 503 (no capacity for it before its deadline).
			if resp.StatusCode != a.want && !(fn == bad && (resp.StatusCode == 504 || resp.StatusCode == 503)) {
				t.Errorf("%s: %d %s", orDefault(a.header, "echo"), resp.StatusCode, b)
			}
		}
	})
	took := time.Since(start)

	// Every detached call reaches a final state.
	final := map[string]int{}
	waitFor(t, 2*time.Minute, "detached calls final", func() bool {
		clear(final)
		for id, fnID := range detached {
			c := getCallView(t, k, fnID, id)
			final[c.Status]++
		}
		return final["queued"] == 0 && final["running"] == 0
	})
	// Let idle containers go, then compare with the baseline.
	waitFor(t, 30*time.Second, "containers reaped", func() bool { return len(k.containers()) == 0 })
	time.Sleep(2 * time.Second)
	shims.Close()
	// No container is left, so no shim may be either: one still running
	// now outlived its containers while kilnd is up (the harness checks
	// again once kilnd has stopped).
	var idle []int
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if idle = shimDaemons(k); len(idle) == 0 || time.Now().After(end) {
			break
		}
	}
	for _, pid := range idle {
		t.Errorf("shim %d (%s) still runs with no container left in the namespace", pid, procCmdline(pid))
	}
	rss1, gor1, heap1 := kilndRSS(t, k), kilndGoroutines(t, k), metricValue(t, k, "go_memstats_heap_inuse_bytes")

	kinds := make([]string, 0, len(outcomes))
	for kind := range outcomes {
		kinds = append(kinds, kind)
	}
	sort.Strings(kinds)
	var report strings.Builder
	fmt.Fprintf(&report, "soak: %s at concurrency 32, %d calls (%.0f/s)\n", took.Round(time.Second), sent.Load(), float64(sent.Load())/took.Seconds())
	for _, kind := range kinds {
		fmt.Fprintf(&report, "  %-28s %d\n", kind, outcomes[kind])
	}
	fmt.Fprintf(&report, "  detached final states: %v\n", final)
	fmt.Fprintf(&report, "  answers with another call's bytes: %d\n", mixups.Load())
	fmt.Fprintf(&report, "  kilnd RSS: %d MB at start, %d MB at end\n", rss0>>20, rss1>>20)
	fmt.Fprintf(&report, "  kilnd Go heap in use: %.1f MB at start, %.1f MB at end\n", heap0/(1<<20), heap1/(1<<20))
	fmt.Fprintf(&report, "  kilnd goroutines: %d at start, %d at end\n", gor0, gor1)
	grouping := "kilnd's default"
	if *soakGroup {
		grouping = "--group-shims=true"
	}
	fmt.Fprintf(&report, "  shims (%s): at most %d at once, %d in all; without a container for %s: %d; left once every container was gone: %d\n",
		grouping, shims.max, len(shims.seen), shimOrphanAfter, len(shims.orphans), len(idle))
	t.Log("\n" + report.String())
	if final["success"] != len(detached) {
		t.Errorf("detached calls: %v, want all %d success", final, len(detached))
	}
	if gor1 > gor0+10 {
		t.Errorf("goroutines grew from %d to %d", gor0, gor1)
	}
	// RSS keeps pages the Go runtime has not yet returned to the kernel;
	// the live heap is what must come back down.
	if heap1 > heap0+8<<20 {
		t.Errorf("Go heap in use grew from %.1f MB to %.1f MB", heap0/(1<<20), heap1/(1<<20))
	}
	if rss1 > rss0+48<<20 {
		t.Errorf("RSS grew from %d MB to %d MB", rss0>>20, rss1>>20)
	}
}

// shimOrphanAfter is how long a shim may have no container before it
// counts as having outlived them: a crashed container is removed within
// kiln's cleanup timeout (15 s), a live one always has its init process
// under the shim.
const shimOrphanAfter = 30 * time.Second

// shimWatch samples the shims of a kilnd's namespace once a second, in a
// goroutine Close stops and waits for, and fails the test for each shim
// that ran without a single child process (a container's init) for
// shimOrphanAfter.
type shimWatch struct {
	t       *testing.T
	k       *kilnd
	stop    chan struct{}
	done    chan struct{}
	max     int
	seen    map[int]bool
	orphans map[int]bool
}

func watchShims(t *testing.T, k *kilnd) *shimWatch {
	w := &shimWatch{t: t, k: k, stop: make(chan struct{}), done: make(chan struct{}), seen: map[int]bool{}, orphans: map[int]bool{}}
	go w.run()
	t.Cleanup(w.Close)
	return w
}

func (w *shimWatch) run() {
	defer close(w.done)
	childless := map[int]time.Time{} // shim pid -> first seen without a child
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		pids := shimDaemons(w.k)
		w.max = max(w.max, len(pids))
		parents := map[int]bool{}
		for _, pid := range childPIDs(pids) {
			parents[ppidOf(pid)] = true
		}
		now := time.Now()
		live := map[int]bool{}
		for _, pid := range pids {
			live[pid] = true
			w.seen[pid] = true
			if parents[pid] {
				delete(childless, pid)
				continue
			}
			since, ok := childless[pid]
			if !ok {
				childless[pid] = now
			} else if now.Sub(since) >= shimOrphanAfter && !w.orphans[pid] {
				w.orphans[pid] = true
				w.t.Errorf("shim %d (%s) has had no container for %s", pid, procCmdline(pid), now.Sub(since).Round(time.Second))
			}
		}
		for pid := range childless {
			if !live[pid] {
				delete(childless, pid)
			}
		}
	}
}

// Close stops sampling; safe to call more than once.
func (w *shimWatch) Close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// shimDaemons lists the long-lived shims of k's namespace: the processes
// containerd runs as "shim start" and "shim delete" come and go, the
// daemon a start leaves behind is the one that holds containers.
func shimDaemons(k *kilnd) []int { return shimDaemonsIn(k.ns) }

func shimDaemonsIn(ns string) []int {
	var out []int
	for _, pid := range shimPIDs(ns, env.containerd.Address()) {
		args := strings.Fields(procCmdline(pid))
		if n := len(args); n > 0 && args[n-1] != "start" && args[n-1] != "delete" {
			out = append(out, pid)
		}
	}
	return out
}

func procCmdline(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(raw), "\x00", " "))
}

func ppidOf(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	var ppid int
	fmt.Sscan(f[1], &ppid)
	return ppid
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ---- shim lifetime: the two ways a shim once outlived its containers

// newShimExecutor is kiln's executor, shims grouped, on bare's namespace.
func newShimExecutor(t *testing.T, bare *bareRuntime) *executor.Runtime {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	rt, err := executor.New(executor.Config{Client: env.client, Namespace: bare.ns, FIFODir: t.TempDir(), GroupShims: true, Logger: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// shimSocketOf reads the socket of container id's shim from the bundle
// containerd keeps for its task.
func shimSocketOf(t *testing.T, ns, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.root, "containerd", "state", "io.containerd.runtime.v2.task", ns, id, "address"))
	if err != nil {
		t.Fatalf("shim address of %s: %v", id, err)
	}
	return strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
}

// shimForget has a shim delete a container of its own and nothing else:
// what containerd's task Delete does first, and all that happens when its
// call to the shim is cut by a deadline after the shim did its part.
func shimForget(t *testing.T, sock, id string) {
	t.Helper()
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := taskapi.NewTaskClient(c).Delete(ctx, &taskapi.DeleteRequest{ID: id}); err != nil {
		t.Fatalf("shim delete %s: %v", id, err)
	}
}

// shimShutdown asks the shim on sock, if one still listens, to exit, so a
// failed test leaves no shim of its namespace behind; it refuses while it
// serves a container.
func shimShutdown(sock string) {
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = taskapi.NewTaskClient(c).Shutdown(ctx, &taskapi.ShutdownRequest{})
}

func killAndWait(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	c, err := env.client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit", id)
	}
}

// A Delete that containerd could not finish (its call to the shim cut by
// a deadline after the shim had deleted the container) skips the Shutdown
// that makes a shim exit. Removing the container again must still get the
// shim to exit, through containerd, well before kiln's own check would
// step in (3 s).
func TestShimExitsAfterALostDelete(t *testing.T) {
	bare := newBareRuntime(t)
	rt := newShimExecutor(t, bare)
	ctx := bare.ctx(context.Background())
	fn := &executor.Function{AppName: "shim", FnName: "lost", FnID: "lost", Image: bare.ref, Format: "json-http", MemoryMB: 64}
	var hs []executor.Instance
	for range 2 {
		h, err := rt.StartHot(context.Background(), fn)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	list, err := env.client.Containers(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("containers: %d, %v", len(list), err)
	}
	if n := len(shimDaemonsIn(bare.ns)); n != 1 {
		t.Fatalf("%d shims for one group of 2", n)
	}
	sock := shimSocketOf(t, bare.ns, list[0].ID())
	t.Cleanup(func() { shimShutdown(sock) })
	for _, c := range list {
		killAndWait(t, ctx, c.ID())
		shimForget(t, sock, c.ID())
	}
	for _, h := range hs {
		closeExecutorHot(h)
	}
	start := time.Now()
	for len(shimDaemonsIn(bare.ns)) > 0 {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("the shim still runs %s after its last container was removed: containerd never sent it Shutdown", time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("shim gone %s after the removal", time.Since(start).Round(time.Millisecond))
	if n := rt.ShimsReaped(); n != 0 {
		t.Errorf("kiln had to shut down %d shims itself", n)
	}
}

// A shim that is still running once kiln's last container in it is gone
// is asked to shut down, unless it serves a container kiln does not know
// of, which it must go on serving.
func TestShimOutlivingItsContainersIsShutDown(t *testing.T) {
	bare := newBareRuntime(t)
	rt := newShimExecutor(t, bare)
	ctx := bare.ctx(context.Background())
	fn := &executor.Function{AppName: "shim", FnName: "stays", FnID: "stays", Image: bare.ref, Format: "json-http", MemoryMB: 64}
	body := benchBody()
	var boxes []*bareBox
	t.Cleanup(func() {
		for _, bb := range boxes {
			if err := bb.destroy(ctx); err != nil {
				t.Errorf("remove %s: %v", bb.container.ID(), err)
			}
		}
	})
	// Starts one of kiln's containers and a bare one in its shim group.
	startPair := func() (executor.Instance, *bareBox, string) {
		h, err := rt.StartHot(context.Background(), fn)
		if err != nil {
			t.Fatal(err)
		}
		list, err := env.client.Containers(ctx, "labels.\"kiln.io/fn\"==stays")
		if err != nil {
			t.Fatal(err)
		}
		var group string
		for _, c := range list {
			labels, _ := c.Labels(ctx)
			group = labels["io.containerd.runc.v2.group"]
		}
		if group == "" || len(list) != 1 {
			t.Fatalf("kiln's container: %d, group %q", len(list), group)
		}
		bb, err := bare.start(ctx, "json-http", group)
		if err != nil {
			t.Fatal(err)
		}
		boxes = append(boxes, bb)
		if s1, s2 := shimSocketOf(t, bare.ns, list[0].ID()), shimSocketOf(t, bare.ns, bb.container.ID()); s1 != s2 {
			t.Fatalf("the bare container did not join kiln's shim: %s, %s", s1, s2)
		}
		return h, bb, shimSocketOf(t, bare.ns, bb.container.ID())
	}

	h, served, _ := startPair()
	closeExecutorHot(h)
	time.Sleep(6 * time.Second) // kiln's check comes 3 s after, and waits 2 s more for the socket
	if err := served.call(body); err != nil {
		t.Fatalf("the container kiln does not know of, in the shim kiln left: %v", err)
	}
	if n := rt.ShimsReaped(); n != 0 {
		t.Fatalf("kiln shut down %d shims, one of them serving a container", n)
	}

	h, bb, sock := startPair()
	t.Cleanup(func() { shimShutdown(sock) })
	closeExecutorHot(h)
	// Within kiln's 3 s: the shim's last container goes in a way that
	// sends it no Shutdown.
	killAndWait(t, ctx, bb.container.ID())
	shimForget(t, sock, bb.container.ID())
	waitFor(t, 10*time.Second, "kiln shuts the shim down", func() bool {
		_, err := os.Stat(sock)
		return os.IsNotExist(err) && len(shimDaemonsIn(bare.ns)) == 1
	})
	if n := rt.ShimsReaped(); n != 1 {
		t.Errorf("kiln shut down %d shims, want 1", n)
	}
	if err := served.call(body); err != nil {
		t.Fatalf("the first shim's container: %v", err)
	}
}
