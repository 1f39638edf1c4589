package test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kiln-run/kiln/imagebuild"
)

var benchPeerFlag = flag.Bool("bench-peer", false, "run TestBenchPeer, kiln side by side with Knative's queue-proxy (make bench-peer)")

// The peer is Knative Serving's queue-proxy, the proxy Knative runs in
// front of every function container. OpenFaaS's of-watchdog, faasd,
// faas-provider, Fn and Fission are not served by the Go module proxy
// here; queue-proxy is. v0.51.0 does not build from it (its knative.dev/pkg
// and knative.dev/networking versions are refused), v0.42.2 does. It is
// built from the module proxy into a temp dir at every run; none of its
// code is kept in this repository.
const (
	queueProxyModule  = "knative.dev/serving"
	queueProxyVersion = "v0.42.2"
	queueProxyPkg     = "knative.dev/serving/cmd/queue"
)

// peerEchoSource is the peer's function: an HTTP server answering with
// the request body and the same X-Echo-Info header kiln's test function
// sends, so both sides carry the same bytes back.
const peerEchoSource = `package main

import (
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	info := os.Getenv("ECHO_INFO")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if info != "" {
			w.Header().Set("X-Echo-Info", info)
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:8080", nil))
}
`

// Ports inside each peer instance's network namespace: queue-proxy's
// defaults (Knative sets the same), the function on 8080.
const (
	peerQueuePort = 8012
	peerUserPort  = 8080
)

// TestBenchPeer measures kiln and the peer in one run, on the same
// containerd, with the same echo body: hot latency at c=1, throughput and
// CPU per call at c=16 and c=64, and idle memory per warm instance. It
// prints kiln/peer ratios (below 1 is kiln ahead for time, CPU and memory,
// above 1 for throughput) and the machine's load; docs/PERFORMANCE.md
// keeps a run.
func TestBenchPeer(t *testing.T) {
	if !*benchPeerFlag {
		t.Skip("run with make bench-peer")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the peer's network namespaces need ip (iproute2)")
	}
	plan := fullPlan
	if testing.Short() {
		plan = shortPlan
	}
	plan = plan.scaled(*benchScale)
	counts := []int{16, 64}
	if testing.Short() {
		counts = []int{2, 4}
	}
	top := counts[len(counts)-1]
	load0 := loadAvg()
	start := time.Now()
	rep := &peerReport{}

	// kiln first, alone on the machine for its memory figures.
	const memMB = 64
	k := startKilnd(t, withArgs("--max-memory", strconv.Itoa(2*top*memMB)))
	d := k.deploy("bench", "peer-echo", testfnImage, "json-http", map[string]any{"memory": memMB, "timeout": 120, "idle_timeout": 1800})
	client := newBenchClient()
	kilnURL := k.url + "/invoke/" + d.FnID
	kbase := sampleKilnMem(t, k)
	echoInfo := kilnResponseHeader(t, client, kilnURL).Get("X-Echo-Info")
	kmem := map[int]peerMem{}
	for _, n := range counts {
		growPool(t, k, d.FnID, n)
		time.Sleep(3 * time.Second)
		kmem[n] = sampleKilnMem(t, k)
	}

	peer := newPeerRuntime(t, echoInfo)
	pbase := peer.sampleMem(t)
	pmem := map[int]peerMem{}
	for _, n := range counts {
		peer.startInstances(t, n-len(peer.instances))
		time.Sleep(3 * time.Second)
		pmem[n] = peer.sampleMem(t)
	}
	for _, n := range counts {
		km, pm := kmem[n].minus(kbase), pmem[n].minus(pbase)
		rep.lowerBetter(fmt.Sprintf("idle memory per warm instance, N=%d (PSS: fn processes + shims + daemons' growth)", n),
			km.pss()/float64(n)/1e6, pm.pss()/float64(n)/1e6, mb)
		rep.detail(fmt.Sprintf("| kiln | %d | %d | %d | %s | %s | %s | %s | %s |", n, kmem[n].containers, kmem[n].shims,
			mb(km.fn/1e6), mb(km.shim/1e6), mb(km.kilnd/1e6), mb(km.containerd/1e6), mb(km.pss()/float64(n)/1e6)))
		rep.detail(fmt.Sprintf("| peer | %d | %d | %d | %s | %s | – | %s | %s |", n, pmem[n].containers, pmem[n].shims,
			mb(pm.fn/1e6), mb(pm.shim/1e6), mb(pm.containerd/1e6), mb(pm.pss()/float64(n)/1e6)))
	}

	// Hot latency at c=1: one warm instance each, calls interleaved in a
	// new random order every round (see bench_test.go for why).
	body := benchBody()
	peerClient := newBenchClient()
	paths := []func() error{
		func() error { return postEcho(client, kilnURL, body, nil) },
		func() error { return postEcho(peerClient, peer.instances[0].url, body, nil) },
	}
	for range plan.latencyWarmup {
		for i, p := range paths {
			if err := p(); err != nil {
				t.Fatalf("warm-up %d: %v", i, err)
			}
		}
	}
	res := make([]samples, len(paths))
	rng := rand.New(rand.NewPCG(3, 4))
	for range plan.latencyN {
		for _, n := range rng.Perm(len(paths)) {
			t0 := time.Now()
			if err := paths[n](); err != nil {
				t.Fatal(err)
			}
			res[n] = append(res[n], time.Since(t0))
		}
	}
	for _, p := range []float64{0.5, 0.99} {
		rep.lowerBetter(fmt.Sprintf("hot call p%.0f, c=1", p*100), us(res[0].pct(p)), us(res[1].pct(p)), micros)
	}

	// Throughput and CPU per call. kiln: c client goroutines on kilnd,
	// whose pool holds the containers; peer: goroutine w on instance w,
	// the way a router in front of Knative's pods would spread them.
	kilndPID := k.cmd.Process.Pid
	for _, c := range counts {
		kilnCall := func(int) error { return postEcho(client, kilnURL, body, nil) }
		peerCall := func(w int) error { return postEcho(peerClient, peer.instances[w].url, body, nil) }
		drive(t, c, plan.tputWarmup, kilnCall)
		drive(t, c, plan.tputWarmup, peerCall)
		var kn, pn int64
		var kt, pt time.Duration
		var kcpu, khost, pcpu, phost, kkd time.Duration
		for range plan.tputSlices {
			self, kd, path, host := selfCPU(), procCPU(kilndPID), pathCPU(k.ns), hostCPU()
			n, took := drive(t, c, plan.tputSlice, kilnCall)
			kn, kt = kn+n, kt+took
			dkd := procCPU(kilndPID) - kd
			kcpu += selfCPU() - self + dkd + pathCPU(k.ns) - path
			khost += hostCPU() - host
			kkd += dkd

			self, path, host = selfCPU(), pathCPU(peer.ns), hostCPU()
			n, took = drive(t, c, plan.tputSlice, peerCall)
			pn, pt = pn+n, pt+took
			pcpu += selfCPU() - self + pathCPU(peer.ns) - path
			phost += hostCPU() - host
		}
		rep.higherBetter(fmt.Sprintf("throughput c=%d (%d instances each side)", c, c), float64(kn)/kt.Seconds(), float64(pn)/pt.Seconds(), perSec)
		rep.lowerBetter(fmt.Sprintf("host CPU per call at c=%d (/proc/stat, whole machine)", c), us(khost)/float64(kn), us(phost)/float64(pn), micros)
		rep.lowerBetter(fmt.Sprintf("path CPU per call at c=%d (client + kilnd %.0f µs + shims + fn; peer: client + shims + queue-proxy + fn)", c, us(kkd)/float64(kn)),
			us(kcpu)/float64(kn), us(pcpu)/float64(pn), micros)
		if n := len(k.containers()); n < c {
			rep.note("throughput c=%d: kiln's pool held %d containers", c, n)
		}
	}

	rep.note("load average (1, 5, 15 min): %s at the start, %s at the end; %d CPUs", load0, loadAvg(), runtime.NumCPU())
	rep.note("peer: Knative Serving queue-proxy %s (%s, built from the Go module proxy at run time) in front of a Go net/http echo on 127.0.0.1:%d, the two in one network namespace the bench creates (veth, link-local addresses), as containers of one shim (as a pod's are), with kiln's sandbox but for the network; CONTAINER_CONCURRENCY=1, like one kiln container", queueProxyVersion, queueProxyPkg, peerUserPort)
	rep.note("kiln: one json-http testfn fn, memory %d MB, via POST /invoke/{fn_id}, default kilnd flags (shims grouped, 16 to a shim)", memMB)
	rep.note("latency: %d interleaved samples per side after %d warm-up rounds; body %d bytes, and both answers carry kiln's X-Echo-Info header (%d bytes)", plan.latencyN, plan.latencyWarmup, benchBodyBytes, len(echoInfo))
	rep.note("throughput: kiln and peer alternate in %d slices of %s per side after %s warm-up each; path CPU is utime+stime from /proc of every process on the path, host CPU is the whole machine's busy time from /proc/stat", plan.tputSlices, plan.tputSlice, plan.tputWarmup)
	rep.note("memory: PSS from smaps_rollup, N idle instances over none, per instance; kiln measured before the peer started, the peer with kiln's %d containers (%d shims) still up; a peer instance is two processes (queue-proxy and echo) under one shim", top, kmem[top].shims)
	rep.note("total bench time %s", time.Since(start).Round(time.Second))
	out := rep.markdown()
	t.Log("\n" + out)
	if *benchOut != "" {
		if err := os.WriteFile(*benchOut, []byte(out), 0o644); err != nil {
			t.Errorf("write %s: %v", *benchOut, err)
		}
	}
}

// ---- report

type peerReport struct {
	rows, details, notes []string
}

func (r *peerReport) lowerBetter(measure string, kiln, peer float64, unit func(float64) string) {
	r.rows = append(r.rows, fmt.Sprintf("| %s | %s | %s | %.2f | %s |", measure, unit(kiln), unit(peer), kiln/peer, ahead(kiln < peer)))
}

func (r *peerReport) higherBetter(measure string, kiln, peer float64, unit func(float64) string) {
	r.rows = append(r.rows, fmt.Sprintf("| %s | %s | %s | %.2f | %s |", measure, unit(kiln), unit(peer), kiln/peer, ahead(kiln > peer)))
}

func ahead(kiln bool) string {
	if kiln {
		return "kiln"
	}
	return "**peer**"
}

func (r *peerReport) detail(line string) { r.details = append(r.details, line) }
func (r *peerReport) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *peerReport) markdown() string {
	var b strings.Builder
	b.WriteString("| measure | kiln | peer | kiln/peer | ahead |\n|---|---|---|---|---|\n")
	for _, row := range r.rows {
		b.WriteString(row + "\n")
	}
	b.WriteString("\nMemory detail (PSS growth over no instance; kiln's daemon is kilnd, both sides' containerd is the same process):\n\n")
	b.WriteString("| side | N | containers | shim procs | fn procs | shims | kilnd | containerd | per instance |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, d := range r.details {
		b.WriteString(d + "\n")
	}
	b.WriteString("\n")
	for _, n := range r.notes {
		b.WriteString("- " + n + "\n")
	}
	return b.String()
}

// ---- machine figures

// hostCPU is the machine's busy time so far: every CPU's user, nice,
// system, irq, softirq and steal ticks from /proc/stat (10 ms each).
func hostCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i > 7 { // guest time is counted in user already
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], ", ")
}

// ---- memory

// peerMem is the PSS of what N warm instances cost, by part.
type peerMem struct {
	containers, shims int
	fn, shim          float64
	kilnd, containerd float64
}

func (m peerMem) minus(base peerMem) peerMem {
	return peerMem{containers: m.containers, shims: m.shims, fn: m.fn - base.fn, shim: m.shim - base.shim,
		kilnd: m.kilnd - base.kilnd, containerd: m.containerd - base.containerd}
}

func (m peerMem) pss() float64 { return m.fn + m.shim + m.kilnd + m.containerd }

func sampleNSMem(t *testing.T, ns string) peerMem {
	var m peerMem
	shims := shimPIDs(ns, env.containerd.Address())
	m.shims = len(shims)
	for _, pid := range shims {
		m.shim += float64(procMem(t, pid).pss)
	}
	for _, pid := range childPIDs(shims) {
		m.fn += float64(procMem(t, pid).pss)
	}
	m.containerd = float64(procMem(t, env.containerd.PID()).pss)
	return m
}

func sampleKilnMem(t *testing.T, k *kilnd) peerMem {
	t.Helper()
	m := sampleNSMem(t, k.ns)
	m.containers = len(k.containers())
	m.kilnd = float64(procMem(t, k.cmd.Process.Pid).pss)
	return m
}

// ---- the peer: queue-proxy + echo per instance, on the harness's containerd

type peerRuntime struct {
	ns       string
	img      containerd.Image
	echoInfo string
	// tag keeps this run's network names apart from another run's.
	tag       string
	mu        sync.Mutex
	instances []*peerInstance
}

type peerInstance struct {
	n             int
	netns, hostIf string
	url           string
	boxes         []*bareBox
}

func newPeerRuntime(t *testing.T, echoInfo string) *peerRuntime {
	t.Helper()
	p := &peerRuntime{ns: "bench-peer-" + sanitize(t.Name()), echoInfo: echoInfo, tag: strconv.Itoa(os.Getpid() % 100000)}
	ctx := p.ctx()
	qp := buildQueueProxy(t)
	echo := buildPeerEcho(t)
	tarPath := filepath.Join(t.TempDir(), "peer.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = imagebuild.WriteArchive(f, "kiln/bench-peer:latest", imagebuild.Config{Entrypoint: []string{"/echo"}, Env: []string{imagebuild.DefaultPath}},
		[]imagebuild.File{
			{Path: "etc", Dir: true, Mode: 0o755},
			{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
			{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\n")},
			{Path: "tmp", Dir: true, Mode: fs.ModeSticky | 0o777},
		},
		[]imagebuild.File{{Path: "queue", Mode: 0o755, Data: qp}, {Path: "echo", Mode: 0o755, Data: echo}},
	)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, err = os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := env.client.Import(ctx, f, containerd.WithAllPlatforms(false))
	f.Close()
	if err != nil || len(imgs) == 0 {
		t.Fatalf("import the peer's image: %v", err)
	}
	if p.img, err = env.client.GetImage(ctx, imgs[0].Name); err != nil {
		t.Fatal(err)
	}
	if err := p.img.Unpack(ctx, containerd.DefaultSnapshotter); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.close(t) })
	return p
}

func (p *peerRuntime) ctx() context.Context {
	return (&bareRuntime{ns: p.ns}).ctx(context.Background())
}

func (p *peerRuntime) sampleMem(t *testing.T) peerMem {
	t.Helper()
	m := sampleNSMem(t, p.ns)
	list, err := env.client.Containers(p.ctx())
	if err != nil {
		t.Fatal(err)
	}
	m.containers = len(list)
	return m
}

// buildQueueProxy builds the pinned queue-proxy in a module of its own
// under a temp dir (v0.42.2's go.mod has a replace, so `go install
// pkg@version` refuses it; the replace is carried over as it is).
func buildQueueProxy(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":   "module kilnbenchpeer\n\ngo 1.22\n\nrequire " + queueProxyModule + " " + queueProxyVersion + "\n\nreplace github.com/gorilla/websocket => github.com/gorilla/websocket v1.5.0\n",
		"tools.go": "//go:build tools\n\npackage kilnbenchpeer\n\nimport _ \"" + queueProxyPkg + "\"\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "queue")
	for _, args := range [][]string{{"mod", "tidy"}, {"build", "-trimpath", "-ldflags", "-s -w", "-o", bin, queueProxyPkg}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s for %s@%s: %v\n%s", strings.Join(args, " "), queueProxyModule, queueProxyVersion, err, out)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func buildPeerEcho(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{"go.mod": "module peerecho\n\ngo 1.22\n", "main.go": peerEchoSource} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := imagebuild.BuildGo(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ip runs iproute2; the bench only touches names it made.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// startInstances adds n instances, a few at a time, each answering one
// call before it counts as warm.
func (p *peerRuntime) startInstances(t *testing.T, n int) {
	t.Helper()
	p.mu.Lock()
	first := len(p.instances)
	p.mu.Unlock()
	sem := make(chan struct{}, 4)
	var failed atomic.Int32
	parallel(n, func(i int) {
		sem <- struct{}{}
		defer func() { <-sem }()
		if err := p.startInstance(first + i); err != nil {
			failed.Add(1)
			t.Errorf("peer instance %d: %v", first+i, err)
		}
	})
	if failed.Load() > 0 {
		t.FailNow()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	slices.SortFunc(p.instances, func(a, b *peerInstance) int { return a.n - b.n })
}

// startInstance makes instance n: a network namespace with a veth to the
// host on a link-local /30, then queue-proxy and the echo in it, the two
// in one shim group, as a pod's containers share one shim under CRI.
func (p *peerRuntime) startInstance(n int) error {
	in := &peerInstance{n: n, netns: fmt.Sprintf("kiln-peer-%s-%d", p.tag, n), hostIf: fmt.Sprintf("kp%sh%d", p.tag, n)}
	nsIf := fmt.Sprintf("kp%sn%d", p.tag, n)
	hostIP := fmt.Sprintf("169.254.%d.%d", 200+n/64, 4*(n%64)+1)
	peerIP := fmt.Sprintf("169.254.%d.%d", 200+n/64, 4*(n%64)+2)
	p.mu.Lock()
	p.instances = append(p.instances, in)
	p.mu.Unlock()
	for _, args := range [][]string{
		{"netns", "add", in.netns},
		{"link", "add", in.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", in.netns},
		{"addr", "add", hostIP + "/30", "dev", in.hostIf},
		{"link", "set", in.hostIf, "up"},
		{"-n", in.netns, "addr", "add", peerIP + "/30", "dev", nsIf},
		{"-n", in.netns, "link", "set", nsIf, "up"},
		{"-n", in.netns, "link", "set", "lo", "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	in.url = fmt.Sprintf("http://%s:%d/", peerIP, peerQueuePort)
	group := fmt.Sprintf("peer-%d", n)
	qpEnv := []string{
		"CONTAINER_CONCURRENCY=1",
		"QUEUE_SERVING_PORT=" + strconv.Itoa(peerQueuePort),
		"QUEUE_SERVING_TLS_PORT=8112",
		"USER_PORT=" + strconv.Itoa(peerUserPort),
		"REVISION_TIMEOUT_SECONDS=120",
		"SERVING_LOGGING_CONFIG=",
		"SERVING_LOGGING_LEVEL=error",
		"SERVING_NAMESPACE=bench",
		"SERVING_CONFIGURATION=peer-echo",
		"SERVING_REVISION=peer-echo-00001",
		"SERVING_POD=" + in.netns,
		"SERVING_POD_IP=" + peerIP,
	}
	for _, c := range []struct {
		name string
		args []string
		env  []string
	}{
		{"echo", []string{"/echo"}, []string{"ECHO_INFO=" + p.echoInfo}},
		{"queue", []string{"/queue"}, qpEnv},
	} {
		bb, err := p.startContainer(fmt.Sprintf("peer-%d-%s", n, c.name), group, in.netns, c.args, c.env)
		if bb != nil {
			in.boxes = append(in.boxes, bb)
		}
		if err != nil {
			return err
		}
	}
	// Warm: queue-proxy up and the echo answering behind it.
	c := newBenchClient()
	defer c.CloseIdleConnections()
	var err error
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err = postEcho(c, in.url, benchBody(), nil); err == nil {
			return nil
		}
	}
	return fmt.Errorf("not answering at %s: %w", in.url, err)
}

// startContainer runs one of an instance's processes with kiln's sandbox
// (bareSpec mirrors the executor's), in the instance's network namespace.
func (p *peerRuntime) startContainer(id, group, netns string, args, vars []string) (*bareBox, error) {
	ctx := p.ctx()
	opts := append(bareSpec(p.img, "json-http", group),
		oci.WithProcessArgs(args...),
		oci.WithEnv(vars),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/" + netns}),
	)
	container, err := env.client.NewContainer(ctx, id,
		containerd.WithImage(p.img),
		containerd.WithSnapshotter(containerd.DefaultSnapshotter),
		containerd.WithNewSnapshot(id, p.img),
		containerd.WithNewSpec(opts...),
	)
	if err != nil {
		return nil, err
	}
	bb := &bareBox{container: container}
	if bb.task, err = container.NewTask(ctx, cio.NullIO); err != nil {
		return bb, err
	}
	if bb.exited, err = bb.task.Wait(ctx); err != nil {
		return bb, err
	}
	if err := bb.task.Start(ctx); err != nil {
		return bb, err
	}
	bb.started = true
	return bb, nil
}

// close removes the instances' containers, then the veths and network
// namespaces the bench made, by name, then the image.
func (p *peerRuntime) close(t *testing.T) {
	ctx := p.ctx()
	for _, in := range p.instances {
		for _, bb := range in.boxes {
			if err := bb.destroy(ctx); err != nil {
				t.Errorf("remove %s: %v", bb.container.ID(), err)
			}
		}
		_ = ip("link", "del", in.hostIf)
		if err := ip("netns", "del", in.netns); err != nil {
			t.Errorf("%v", err)
		}
	}
	if list, _ := env.client.Containers(ctx); len(list) > 0 {
		t.Errorf("%d peer containers left", len(list))
	}
	if p.img != nil {
		_ = env.client.ImageService().Delete(ctx, p.img.Name())
	}
}
