package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/contrib/seccomp"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/protocol"
)

var (
	benchE2E = flag.Bool("bench-e2e", false, "run TestBench, kiln against bare containerd (make bench)")
	benchOut = flag.String("bench-out", "", "TestBench also writes its markdown tables to this file")
	// A kilnd built elsewhere (say, with a pprof listener) can be measured
	// without adding profiling code to the repository.
	benchKilnd = flag.String("bench-kilnd", "", "TestBench runs this kilnd binary instead of the one the harness built")
	// More samples for a quieter figure, or a longer window to profile in.
	benchScale = flag.Float64("bench-scale", 1, "TestBench multiplies its sample counts and durations by this")
)

const benchBodyBytes = 32

// benchPlan sets the sample sizes. One latency iteration calls every path
// once, in a random order.
type benchPlan struct {
	latencyWarmup, latencyN int
	coldWarmup, coldN       int
	tputWarmup              time.Duration
	// kiln and bare alternate in tputSlices slices of tputSlice each.
	tputSlice       time.Duration
	tputSlices      int
	tputConcurrency []int
	memoryCounts    []int
}

var fullPlan = benchPlan{
	latencyWarmup: 300, latencyN: 3000,
	coldWarmup: 2, coldN: 20,
	tputWarmup: 500 * time.Millisecond, tputSlice: 2 * time.Second, tputSlices: 2,
	tputConcurrency: []int{1, 4, 16, 64},
	memoryCounts:    []int{1, 10, 100},
}

// shortPlan (go test -short) checks that the bench works, in a minute or
// two; its figures are too noisy to record.
var shortPlan = benchPlan{
	latencyWarmup: 20, latencyN: 200,
	coldWarmup: 1, coldN: 3,
	tputWarmup: 200 * time.Millisecond, tputSlice: 500 * time.Millisecond, tputSlices: 1,
	tputConcurrency: []int{1, 4},
	memoryCounts:    []int{1, 4},
}

// scaled multiplies what decides the figures' precision, not the warm-ups
// or the container counts.
func (p benchPlan) scaled(f float64) benchPlan {
	if f <= 0 || f == 1 {
		return p
	}
	p.latencyN = int(float64(p.latencyN) * f)
	p.coldN = max(int(float64(p.coldN)*f), 1)
	p.tputSlice = time.Duration(float64(p.tputSlice) * f)
	return p
}

// TestBench measures kiln against what the same work costs without it:
// a loopback HTTP round trip and a bare containerd container driven
// directly over its stdio. It prints one markdown table; see
// docs/PERFORMANCE.md for the targets and the last recorded run.
func TestBench(t *testing.T) {
	if !*benchE2E {
		t.Skip("run with make bench")
	}
	if *benchKilnd != "" {
		saved := env.kilndBin
		env.kilndBin = *benchKilnd
		t.Cleanup(func() { env.kilndBin = saved })
	}
	plan := fullPlan
	if testing.Short() {
		plan = shortPlan
	}
	plan = plan.scaled(*benchScale)
	rep := &benchReport{}
	bare := newBareRuntime(t)
	start := time.Now()
	t.Run("latency", func(t *testing.T) { benchLatency(t, plan, bare, rep) })
	t.Run("cold", func(t *testing.T) { benchCold(t, plan, bare, rep) })
	t.Run("throughput", func(t *testing.T) { benchThroughput(t, plan, bare, rep) })
	t.Run("memory", func(t *testing.T) {
		for _, grouped := range []bool{true, false} {
			name := "grouped"
			if !grouped {
				name = "ungrouped"
			}
			t.Run(name, func(t *testing.T) { benchMemory(t, plan, bare, grouped, rep) })
		}
	})
	rep.note("total bench time %s", time.Since(start).Round(time.Second))
	out := rep.markdown()
	t.Log("\n" + out)
	fmt.Fprintln(os.Stdout, "\n=== kiln bench results (markdown)\n"+out+"=== end of kiln bench results")
	if *benchOut != "" {
		if err := os.WriteFile(*benchOut, []byte(out), 0o644); err != nil {
			t.Errorf("write %s: %v", *benchOut, err)
		}
	}
}

// ---- the report

type benchRow struct{ measure, kiln, bare, ratio, target, met string }

type benchReport struct {
	// loopbackCPU is the CPU µs one loopback HTTP round trip costs, client
	// and server together; the throughput section bounds kiln's ratio by it.
	loopbackCPU float64

	mu     sync.Mutex
	rows   []benchRow
	detail []string
	notes  []string
}

func (r *benchReport) add(row benchRow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row)
}

func (r *benchReport) addDetail(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.detail = append(r.detail, line)
}

func (r *benchReport) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// info is a row with no target: a baseline or a figure for context.
func (r *benchReport) info(measure, kiln, bare string) {
	r.add(benchRow{measure: measure, kiln: kiln, bare: bare, ratio: "", target: "", met: ""})
}

// lowerBetter adds a row whose ratio kiln/bare must stay at or under max.
func (r *benchReport) lowerBetter(measure string, kiln, bare float64, unit func(float64) string, limit float64) {
	ratio := kiln / bare
	r.add(benchRow{measure, unit(kiln), unit(bare), fmt.Sprintf("%.2f", ratio), fmt.Sprintf("<= %.2f", limit), yesNo(ratio <= limit)})
}

// higherBetter adds a row whose ratio kiln/bare must reach floor; floor <= 0
// means the row is only for context.
func (r *benchReport) higherBetter(measure string, kiln, bare float64, unit func(float64) string, floor float64) {
	ratio := kiln / bare
	row := benchRow{measure, unit(kiln), unit(bare), fmt.Sprintf("%.2f", ratio), "", ""}
	if floor > 0 {
		row.target, row.met = fmt.Sprintf(">= %.2f", floor), yesNo(ratio >= floor)
	}
	r.add(row)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (r *benchReport) markdown() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("| measure | kiln | bare | ratio | target | met? |\n|---|---|---|---|---|---|\n")
	for _, row := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", row.measure, orDash(row.kiln), orDash(row.bare), orDash(row.ratio), orDash(row.target), orDash(row.met))
	}
	if len(r.detail) > 0 {
		b.WriteString("\nMemory detail (idle hot containers of one fn; anon = anonymous memory from /proc/PID/smaps_rollup: heaps, stacks, buffers, not the binaries' shared text; host growth = anon of kilnd + shims + containerd over N=0, not the functions' own processes; bare has no kilnd):\n\n")
		b.WriteString("| run | N | containers | shim procs | kilnd RSS | kilnd anon | kilnd heap in use | kilnd goroutines | shims anon | shims PSS | containerd anon growth | fn procs anon | host growth / container |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, line := range r.detail {
			b.WriteString(line + "\n")
		}
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func micros(v float64) string { return fmt.Sprintf("%.0f µs", v) }
func millis(v float64) string { return fmt.Sprintf("%.1f ms", v) }
func perSec(v float64) string { return fmt.Sprintf("%.0f /s", v) }
func mb(v float64) string     { return fmt.Sprintf("%.1f MB", v) }

// ---- latency statistics

type samples []time.Duration

// pct is the nearest-rank percentile: an observed value, never an
// interpolation between two, so p99 of 3000 samples is the 2970th.
func (s samples) pct(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ---- HTTP client side

// newBenchClient is one keep-alive client for kilnd and the loopback
// baseline alike, with room to keep a connection per concurrent caller
// so throughput runs never pay for new connections. No compression, no
// proxy: neither side should pay for what the other does not.
func newBenchClient() *http.Client {
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 512,
			IdleConnTimeout:     10 * time.Minute,
			DisableCompression:  true,
		},
	}
}

func postEcho(c *http.Client, url string, body []byte, header http.Header) error {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		return fmt.Errorf("POST %s: %d %.200q", url, resp.StatusCode, got)
	}
	return nil
}

func benchBody() []byte { return bytes.Repeat([]byte("k"), benchBodyBytes) }

// ---- bare containerd: the same container kiln would run, driven directly

// bareRuntime runs the testfn image in a namespace of its own on the
// harness's containerd, with containerd's client only: no kiln code but
// the codecs, which both sides need to speak to the function.
type bareRuntime struct {
	ns      string
	ref     string
	fifoDir string
	seq     atomic.Int64
}

func newBareRuntime(t *testing.T) *bareRuntime {
	t.Helper()
	b := &bareRuntime{ns: "bench-bare-" + sanitize(t.Name()), fifoDir: t.TempDir()}
	ctx := b.ctx(context.Background())
	var tarPath string
	for _, p := range env.imageTars {
		if strings.Contains(filepath.Base(p), "testfn") {
			tarPath = p
		}
	}
	if tarPath == "" {
		t.Fatalf("no testfn image among %v", env.imageTars)
	}
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := env.client.Import(ctx, f, containerd.WithAllPlatforms(false))
	f.Close()
	if err != nil {
		t.Fatalf("import %s into %s: %v", tarPath, b.ns, err)
	}
	t.Cleanup(func() { b.cleanup(t, imgs) })
	for _, im := range imgs {
		if strings.Contains(im.Name, "testfn") {
			b.ref = im.Name
		}
	}
	if b.ref == "" {
		t.Fatalf("imported %v, none is testfn", imgs)
	}
	// Unpacked up front, as kiln's import does, so neither side's cold
	// start pays for it.
	img, err := env.client.GetImage(ctx, b.ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Unpack(ctx, containerd.DefaultSnapshotter); err != nil {
		t.Fatalf("unpack %s: %v", b.ref, err)
	}
	return b
}

func (b *bareRuntime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, b.ns)
}

// cleanup removes whatever a failed benchmark left, fails the test if
// anything was left, then removes the image and the namespace.
func (b *bareRuntime) cleanup(t *testing.T, imgs []images.Image) {
	ctx, cancel := context.WithTimeout(b.ctx(context.Background()), 2*time.Minute)
	defer cancel()
	list, err := env.client.Containers(ctx)
	if err != nil {
		t.Errorf("list bare containers: %v", err)
	}
	for _, c := range list {
		t.Errorf("bare container %s left behind", c.ID())
		bb := &bareBox{container: c}
		if task, err := c.Task(ctx, nil); err == nil {
			bb.task, bb.started = task, true
		}
		if err := bb.destroy(ctx); err != nil {
			t.Errorf("remove bare container %s: %v", c.ID(), err)
		}
	}
	if tasks, err := env.client.TaskService().List(ctx, nil); err == nil && len(tasks.Tasks) > 0 {
		t.Errorf("%d tasks left in namespace %s", len(tasks.Tasks), b.ns)
	}
	var snaps []string
	_ = env.client.SnapshotService(containerd.DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "bare-") || strings.HasPrefix(info.Name, "kiln-") {
			snaps = append(snaps, info.Name)
		}
		return nil
	})
	if len(snaps) > 0 {
		t.Errorf("bare snapshots left in namespace %s: %v", b.ns, snaps)
	}
	if entries, _ := os.ReadDir(b.fifoDir); len(entries) > 0 {
		t.Errorf("%d bare FIFO dirs left", len(entries))
	}
	for _, im := range imgs {
		if err := env.client.ImageService().Delete(ctx, im.Name, images.SynchronousDelete()); err != nil && !cerrdefs.IsNotFound(err) {
			t.Logf("delete bare image %s: %v", im.Name, err)
		}
	}
	// The unpacked layers are snapshots too; a namespace holding any
	// cannot be deleted, and the harness's containerd goes away anyway.
	if err := env.client.NamespaceService().Delete(ctx, b.ns); err != nil {
		t.Logf("delete namespace %s (the harness's containerd root is removed at exit anyway): %v", b.ns, err)
	}
}

// bareSpec asks for the sandbox kiln's executor builds, so the baseline
// pays for the same seccomp profile, mounts and cgroup limits.
func bareSpec(img containerd.Image, format, group string) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithEnv([]string{"FN_FORMAT=" + format, "FN_APP_NAME=bench", "FN_FN_NAME=bare", "FN_FN_ID=bare",
			"FN_PATH=/bare", "FN_MEMORY=128", "FN_TYPE=sync"}),
		oci.WithHostname("bare"),
		oci.WithRootFSReadonly(),
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(nil),
		oci.WithAmbientCapabilities(nil),
		seccomp.WithDefaultProfile(),
		oci.WithPidsLimit(128),
		oci.WithMemoryLimit(128 << 20),
		oci.WithMounts([]specs.Mount{{
			Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=64m"},
		}}),
		oci.WithUIDGID(65534, 65534),
	}
	if group != "" {
		// runc's shim reads its grouping from the spec's annotations, not
		// from container labels.
		opts = append(opts, oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": group}))
	}
	return opts
}

// bareBox is one running testfn container and our ends of its stdio.
type bareBox struct {
	container containerd.Container
	task      containerd.Task
	started   bool
	dio       *cio.DirectIO
	exited    <-chan containerd.ExitStatus
	codec     protocol.Codec
	stdout    *bufio.Reader
}

// start creates and starts a container the way a careful client would:
// look the image up, create container and task on FIFOs, register Wait
// before Start so a fast exit is not missed, and drain stderr.
func (b *bareRuntime) start(ctx context.Context, format, group string) (_ *bareBox, retErr error) {
	ctx = b.ctx(ctx)
	codec, err := protocol.New(format, protocol.Limits{})
	if err != nil {
		return nil, err
	}
	img, err := env.client.GetImage(ctx, b.ref)
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("bare-%s-%d", format, b.seq.Add(1))
	container, err := env.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(containerd.DefaultSnapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(bareSpec(img, format, group)...),
	)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", id, err)
	}
	bb := &bareBox{container: container, codec: codec}
	defer func() {
		if retErr != nil {
			_ = bb.destroy(context.Background())
		}
	}()
	fifos, err := cio.NewFIFOSetInDir(b.fifoDir, id, false)
	if err != nil {
		return nil, err
	}
	if bb.dio, err = cio.NewDirectIO(context.Background(), fifos); err != nil {
		_ = fifos.Close()
		return nil, err
	}
	if bb.task, err = container.NewTask(ctx, func(string) (cio.IO, error) { return bb.dio, nil }); err != nil {
		return nil, fmt.Errorf("task %s: %w", id, err)
	}
	// Wait outlives this call, so not on ctx.
	if bb.exited, err = bb.task.Wait(b.ctx(context.Background())); err != nil {
		return nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, bb.dio.Stderr) }()
	if err := bb.task.Start(ctx); err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	bb.started = true
	bb.stdout = bufio.NewReaderSize(bb.dio.Stdout, 64<<10)
	return bb, nil
}

// benchRequest is the request kilnd would send for one of the bench
// client's calls, with the headers kilnd forwards from it.
func benchRequest(fn string, body []byte) *protocol.Request {
	return &protocol.Request{
		CallID:   "01BENCH00000000000000000000",
		Deadline: time.Now().Add(30 * time.Second),
		Method:   "POST",
		URL:      "http://127.0.0.1:8080/invoke/" + fn,
		Header: http.Header{
			"Content-Type":   {"text/plain"},
			"Content-Length": {strconv.Itoa(len(body))},
			"User-Agent":     {"Go-http-client/1.1"},
		},
		Body: body,
	}
}

// call sends one request frame and reads one response frame.
func (bb *bareBox) call(body []byte) error {
	if err := bb.codec.WriteRequest(bb.dio.Stdin, benchRequest("bare", body)); err != nil {
		return err
	}
	resp, err := bb.codec.ReadResponse(bb.stdout)
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK || !bytes.Equal(resp.Body, body) {
		return fmt.Errorf("bare %s: %d %.200q", bb.container.ID(), resp.Status, resp.Body)
	}
	return nil
}

// destroy kills the task and removes task, FIFOs, container and snapshot.
func (bb *bareBox) destroy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	if bb.task != nil {
		if bb.started {
			if err := bb.task.Kill(ctx, syscall.SIGKILL); err != nil && !cerrdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			if bb.exited != nil {
				select {
				case <-bb.exited:
				case <-ctx.Done():
				}
			}
		}
		if _, err := bb.task.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if bb.dio != nil {
		bb.dio.Cancel()
		_ = bb.dio.Close()
	}
	if err := bb.container.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (b *bareRuntime) mustStart(t *testing.T, format string) *bareBox {
	t.Helper()
	bb, err := b.start(context.Background(), format, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bb.destroy(b.ctx(context.Background())); err != nil {
			t.Errorf("remove %s: %v", bb.container.ID(), err)
		}
	})
	return bb
}

// ---- 1-3: hot latency at concurrency 1

func benchLatency(t *testing.T, plan benchPlan, bare *bareRuntime, rep *benchReport) {
	k := startKilnd(t)
	jh := k.deploy("bench", "hot-jsonhttp", testfnImage, "json-http", nil)
	ht := k.deploy("bench", "hot-http", testfnImage, "http", nil)
	hs := k.deploy("bench", "hot-httpstream", testfnImage, "http-stream", nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	client := newBenchClient()
	// The echo's answer carries an X-Echo-Info header of a kilobyte or
	// more, which kilnd passes on and its client must parse; a loopback
	// server answering with the same headers says how much of kiln's gap
	// is that header rather than kiln.
	echoHeader := kilnResponseHeader(t, client, k.url+"/invoke/"+jh.FnID)
	fat := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		for k, v := range echoHeader {
			w.Header()[k] = v
		}
		_, _ = w.Write(b)
	}))
	defer fat.Close()
	bj := bare.mustStart(t, "json-http")
	bh := bare.mustStart(t, "http")
	hot, err := startExecutorHot(newBenchExecutor(t, bare), bare, "executor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeExecutorHot(hot) })
	body := benchBody()

	paths := []struct {
		name string
		call func() error
	}{
		{"loopback", func() error { return postEcho(client, srv.URL+"/echo", body, nil) }},
		{"bare json-http", func() error { return bj.call(body) }},
		{"bare http", func() error { return bh.call(body) }},
		{"kiln json-http", func() error { return postEcho(client, k.url+"/invoke/"+jh.FnID, body, nil) }},
		{"kiln http", func() error { return postEcho(client, k.url+"/invoke/"+ht.FnID, body, nil) }},
		{"kiln json-http trigger", func() error { return postEcho(client, k.url+"/t/bench/hot-jsonhttp", body, nil) }},
		{"kiln executor", func() error { return callExecutorHot(hot, body) }},
		{"loopback, echo's headers", func() error { return postEcho(client, fat.URL+"/echo", body, nil) }},
		{"kiln http-stream", func() error { return postEcho(client, k.url+"/invoke/"+hs.FnID, body, nil) }},
	}
	for range plan.latencyWarmup {
		for _, p := range paths {
			if err := p.call(); err != nil {
				t.Fatalf("warm-up %s: %v", p.name, err)
			}
		}
	}
	res := make([]samples, len(paths))
	// A fresh random order each round: a fixed cycle would always put the
	// same path after the same other one, and a path that follows a call
	// to the same process finds it still awake (threads spinning, caches
	// warm) where one that follows another process's call does not.
	rng := rand.New(rand.NewPCG(1, 2))
	for range plan.latencyN {
		for _, n := range rng.Perm(len(paths)) {
			start := time.Now()
			if err := paths[n].call(); err != nil {
				t.Fatalf("%s: %v", paths[n].name, err)
			}
			res[n] = append(res[n], time.Since(start))
		}
	}
	lo, bjs, bhs, kj, kh, kt, ke, lf, ks := res[0], res[1], res[2], res[3], res[4], res[5], res[6], res[7], res[8]
	for _, p := range []float64{0.5, 0.99} {
		name := fmt.Sprintf("p%.0f", p*100)
		rep.info("loopback HTTP round trip (Go, keep-alive) "+name, "", micros(us(lo.pct(p))))
		rep.info("bare containerd stdio round trip, json-http "+name, "", micros(us(bjs.pct(p))))
		rep.info("bare containerd stdio round trip, http "+name, "", micros(us(bhs.pct(p))))
	}
	for _, c := range []struct {
		name       string
		kiln, bare samples
	}{
		{"json-http", kj, bjs},
		{"http", kh, bhs},
	} {
		for _, p := range []float64{0.5, 0.99} {
			k, b := us(c.kiln.pct(p)), us(lo.pct(p))+us(c.bare.pct(p))
			m := fmt.Sprintf("hot call %s p%.0f, c=1 (bare = loopback + containerd)", c.name, p*100)
			if p == 0.5 {
				rep.lowerBetter(m, k, b, micros, 1.3)
			} else {
				rep.add(benchRow{m, micros(k), micros(b), fmt.Sprintf("%.2f", k/b), "", ""})
			}
		}
	}
	for _, p := range []float64{0.5, 0.99} {
		// Fn's contract has no bare baseline here: it is measured next to
		// kiln's own json-http, the same function in the other format.
		s, j := us(ks.pct(p)), us(kj.pct(p))
		rep.add(benchRow{fmt.Sprintf("hot call http-stream p%.0f, c=1 (vs kiln json-http)", p*100),
			micros(s), micros(j), fmt.Sprintf("%.2f", s/j), "", ""})
	}
	k50, b50 := us(kt.pct(0.5)), us(lo.pct(0.5))+us(bjs.pct(0.5))
	rep.add(benchRow{"hot call json-http p50 via HTTP trigger /t/app/fn", micros(k50), micros(b50), fmt.Sprintf("%.2f", k50/b50), "", ""})
	// Sequential again, not interleaved, so the bench process's CPU time
	// over the loop is the loopback round trips' alone.
	cpu0, n := selfCPU(), max(plan.latencyN, 1000)
	for range n {
		if err := paths[0].call(); err != nil {
			t.Fatal(err)
		}
	}
	rep.loopbackCPU = us(selfCPU()-cpu0) / float64(n)
	rep.info("loopback HTTP round trip CPU (client + server, one process)", "", micros(rep.loopbackCPU))
	for _, p := range []float64{0.5, 0.99} {
		k, b := us(ke.pct(p)), us(bjs.pct(p))
		rep.add(benchRow{fmt.Sprintf("diagnostic: kiln's executor alone (Hot.Call in-process, no HTTP, api or pool), json-http p%.0f", p*100),
			micros(k), micros(b), fmt.Sprintf("%.2f", k/b), "", ""})
	}
	size := 0
	for k, v := range echoHeader {
		size += len(k) + len(strings.Join(v, ", ")) + 4
	}
	k50 = us(kj.pct(0.5))
	b50 = us(lf.pct(0.5)) + us(bjs.pct(0.5))
	rep.add(benchRow{fmt.Sprintf("diagnostic: hot call json-http p50 against loopback answering with the echo's %d bytes of headers + containerd", size),
		micros(k50), micros(b50), fmt.Sprintf("%.2f", k50/b50), "", ""})
	rep.note("latency: %d interleaved samples per path after %d warm-up rounds; body %d bytes; kiln via POST /invoke/{fn_id} unless noted", plan.latencyN, plan.latencyWarmup, benchBodyBytes)
}

// kilnResponseHeader is the header of one call's answer, less what the
// HTTP server sets for every response anyway.
func kilnResponseHeader(t *testing.T, c *http.Client, url string) http.Header {
	t.Helper()
	resp, err := c.Post(url, "text/plain", bytes.NewReader(benchBody()))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h := resp.Header.Clone()
	h.Del("Date")
	h.Del("Content-Length")
	return h
}

// newBenchExecutor is kiln's executor on the bare namespace, so the
// tables can split kiln's overhead between the executor and what sits in
// front of it (HTTP, api, store, pool).
func newBenchExecutor(t *testing.T, bare *bareRuntime) *executor.Runtime {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	rt, err := executor.New(executor.Config{Client: env.client, Namespace: bare.ns, FIFODir: t.TempDir(), Logger: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func startExecutorHot(rt *executor.Runtime, bare *bareRuntime, name string) (executor.Instance, error) {
	return rt.StartHot(context.Background(), &executor.Function{
		AppName: "bench", FnName: name, FnID: name, Image: bare.ref, Format: "json-http", MemoryMB: 128,
	})
}

func closeExecutorHot(h executor.Instance) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = h.Close(ctx)
}

func callExecutorHot(h executor.Instance, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := h.Call(ctx, benchRequest("executor", body), io.Discard)
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK || !bytes.Equal(resp.Body, body) {
		return fmt.Errorf("executor: %d %.200q", resp.Status, resp.Body)
	}
	return nil
}

// ---- 4: cold start

func benchCold(t *testing.T, plan benchPlan, bare *bareRuntime, rep *benchReport) {
	k := startKilnd(t)
	client := newBenchClient()
	body := benchBody()
	var kiln, bareS samples
	kilnCold := func(i int) time.Duration {
		d := k.deploy("bench-cold", fmt.Sprintf("cold-%d", i), testfnImage, "json-http", nil)
		start := time.Now()
		if err := postEcho(client, k.url+"/invoke/"+d.FnID, body, nil); err != nil {
			t.Fatalf("cold call %d: %v", i, err)
		}
		took := time.Since(start)
		// Removed before the next sample so no teardown overlaps a start.
		if resp, b := k.do("DELETE", "/v2/fns/"+d.FnID, nil, nil); resp.StatusCode/100 != 2 {
			t.Fatalf("delete fn: %d %s", resp.StatusCode, b)
		}
		waitFor(t, time.Minute, "cold fn's container removed", func() bool { return len(k.containers()) == 0 })
		return took
	}
	bareCold := func() time.Duration {
		start := time.Now()
		bb, err := bare.start(context.Background(), "json-http", "")
		if err != nil {
			t.Fatal(err)
		}
		err = bb.call(body)
		took := time.Since(start)
		if derr := bb.destroy(bare.ctx(context.Background())); derr != nil {
			t.Errorf("remove %s: %v", bb.container.ID(), derr)
		}
		if err != nil {
			t.Fatal(err)
		}
		return took
	}
	rt := newBenchExecutor(t, bare)
	execCold := func(i int) time.Duration {
		start := time.Now()
		h, err := startExecutorHot(rt, bare, fmt.Sprintf("cold-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		err = callExecutorHot(h, body)
		took := time.Since(start)
		closeExecutorHot(h)
		if err != nil {
			t.Fatal(err)
		}
		return took
	}
	var execS samples
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range plan.coldWarmup + plan.coldN {
		var took [3]time.Duration
		// A random order each round keeps page cache and shim start-up
		// effects from always favouring one side.
		for _, n := range rng.Perm(3) {
			switch n {
			case 0:
				took[n] = kilnCold(i)
			case 1:
				took[n] = bareCold()
			case 2:
				took[n] = execCold(i)
			}
		}
		if i >= plan.coldWarmup {
			kiln, bareS, execS = append(kiln, took[0]), append(bareS, took[1]), append(execS, took[2])
		}
	}
	rep.lowerBetter("cold start p50, json-http (new fn, first call / create+start+first reply)", ms(kiln.pct(0.5)), ms(bareS.pct(0.5)), millis, 1.15)
	rep.lowerBetter("cold start p95, json-http", ms(kiln.pct(0.95)), ms(bareS.pct(0.95)), millis, 1.15)
	for _, p := range []float64{0.5, 0.95} {
		k, b := ms(execS.pct(p)), ms(bareS.pct(p))
		rep.add(benchRow{fmt.Sprintf("diagnostic: kiln's executor alone (StartHot + first Hot.Call, in-process), cold p%.0f", p*100),
			millis(k), millis(b), fmt.Sprintf("%.2f", k/b), "", ""})
	}
	rep.note("cold: %d interleaved samples after %d warm-up; kiln's figure is the first POST /invoke of a fn deployed just before (untimed)", plan.coldN, plan.coldWarmup)
}

// ---- 5: throughput

// growPool makes n concurrent slow calls until kilnd's namespace holds at
// least want containers: calls that overlap make the pool launch one
// container each, as long as memory admits.
func growPool(t *testing.T, k *kilnd, fnID string, want int) {
	t.Helper()
	client := newBenchClient()
	// Otherwise kilnd keeps a goroutine and buffers for each of these
	// connections until its idle timeout, and the memory figures with it.
	defer client.CloseIdleConnections()
	for _, sleep := range []string{"300ms", "1s", "3s", "10s"} {
		if len(k.containers()) >= want {
			return
		}
		var failed atomic.Int32
		parallel(want, func(int) {
			if err := postEcho(client, k.url+"/invoke/"+fnID, benchBody(), http.Header{"X-Test-Action": {"sleep=" + sleep}}); err != nil {
				failed.Add(1)
				t.Errorf("grow pool: %v", err)
			}
		})
		if failed.Load() > 0 {
			t.FailNow()
		}
	}
	if n := len(k.containers()); n < want {
		t.Fatalf("pool grew to %d containers, want %d", n, want)
	}
}

// drive runs c workers calling call back to back for d and returns how
// many calls completed and how long that took.
func drive(t *testing.T, c int, d time.Duration, call func(worker int) error) (calls int64, took time.Duration) {
	t.Helper()
	var n atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	parallel(c, func(w int) {
		for time.Now().Before(deadline) {
			if err := call(w); err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			n.Add(1)
		}
	})
	took = time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatalf("throughput at c=%d: %v", c, err)
	}
	return n.Load(), took
}

func benchThroughput(t *testing.T, plan benchPlan, bare *bareRuntime, rep *benchReport) {
	top := slices.Max(plan.tputConcurrency)
	const memMB = 64
	k := startKilnd(t, withArgs("--max-memory", strconv.Itoa(4*top*memMB)))
	d := k.deploy("bench", "tput", testfnImage, "json-http", map[string]any{"memory": memMB, "timeout": 120, "idle_timeout": 600})
	client := newBenchClient()
	body := benchBody()
	url := k.url + "/invoke/" + d.FnID
	var boxes []*bareBox
	t.Cleanup(func() {
		for _, bb := range boxes {
			if err := bb.destroy(bare.ctx(context.Background())); err != nil {
				t.Errorf("remove %s: %v", bb.container.ID(), err)
			}
		}
	})
	for _, c := range plan.tputConcurrency {
		growPool(t, k, d.FnID, c)
		if need := c - len(boxes); need > 0 {
			boxes = append(boxes, startBare(t, bare, need, "")...)
		}
		kilnCall := func(int) error { return postEcho(client, url, body, nil) }
		bareCall := func(w int) error { return boxes[w].call(body) }
		drive(t, c, plan.tputWarmup, kilnCall)
		drive(t, c, plan.tputWarmup, bareCall)
		var kn, bn int64
		var kt, bt time.Duration
		// CPU time per call, summed over every process a call passes
		// through, does not depend on what else the machine is running
		// the way calls per second do.
		var kcpu, kdcpu, kccpu, bcpu, bdcpu time.Duration
		kilndPID := k.cmd.Process.Pid
		for range plan.tputSlices {
			self, kd, path := selfCPU(), procCPU(kilndPID), pathCPU(k.ns)
			n, took := drive(t, c, plan.tputSlice, kilnCall)
			kn, kt = kn+n, kt+took
			dkd, dself := procCPU(kilndPID)-kd, selfCPU()-self
			kcpu += dself + dkd + pathCPU(k.ns) - path
			kdcpu, kccpu = kdcpu+dkd, kccpu+dself

			self, path = selfCPU(), pathCPU(bare.ns)
			n, took = drive(t, c, plan.tputSlice, bareCall)
			bn, bt = bn+n, bt+took
			dself = selfCPU() - self
			bcpu += dself + pathCPU(bare.ns) - path
			bdcpu += dself
		}
		kr, br := float64(kn)/kt.Seconds(), float64(bn)/bt.Seconds()
		floor := 0.0
		if c == 16 {
			floor = 0.7
		}
		rep.higherBetter(fmt.Sprintf("throughput c=%d, json-http (%d containers each side)", c, c), kr, br, perSec, floor)
		kper, bper := us(kcpu)/float64(kn), us(bcpu)/float64(bn)
		rep.add(benchRow{fmt.Sprintf("CPU per call at c=%d: client + kilnd + shims + fn (bare: driver + shims + fn)", c),
			fmt.Sprintf("%.0f µs (client %.0f, kilnd %.0f)", kper, us(kccpu)/float64(kn), us(kdcpu)/float64(kn)),
			fmt.Sprintf("%.0f µs (driver %.0f)", bper, us(bdcpu)/float64(bn)), fmt.Sprintf("%.2f", kper/bper), "", ""})
		if n := len(k.containers()); n != c {
			rep.note("throughput c=%d: kiln's pool held %d containers", c, n)
		}
		if c == 16 && rep.loopbackCPU > 0 {
			// With the client on the same CPUs, kiln's path costs at least
			// the bare path plus one HTTP round trip; when CPU is what
			// limits, that caps the ratio whatever kilnd does.
			rep.note("throughput c=16: a kilnd costing nothing beyond its HTTP round trip (%.0f µs CPU) would reach at most %.2f of bare here (bare path %.0f µs CPU per call)",
				rep.loopbackCPU, bper/(bper+rep.loopbackCPU), bper)
		}
	}
	rep.note("throughput: kiln and bare alternate in %d slices of %s per side after %s warm-up each; bare is one goroutine per container on its stdio, kiln one keep-alive HTTP client per worker", plan.tputSlices, plan.tputSlice, plan.tputWarmup)
}

// selfCPU is the bench process's CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pathCPU is the CPU time used so far by the shims of namespace ns and
// their children, the functions.
func pathCPU(ns string) time.Duration {
	shims := shimPIDs(ns, env.containerd.Address())
	var total time.Duration
	for _, pid := range append(shims, childPIDs(shims)...) {
		total += procCPU(pid)
	}
	return total
}

// procCPU reads a process's user and system time from /proc/PID/stat, in
// clock ticks of 10 ms (USER_HZ is 100 on every Linux kiln runs on).
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	// Fields after the command name's ')': state is field 3, utime 14, stime 15.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// ---- 6: memory of idle hot containers

// hostMem is the memory that running containers costs the host outside
// the functions themselves.
type hostMem struct {
	containers, shims int
	kilndRSS          int64
	kilnd, shimsMem   memUse
	containerd, fn    memUse
	kilndHeap         float64
	kilndRoutines     float64
}

// host sums anonymous memory (heaps, stacks, buffers): what one more
// container adds. The shim binary's text is mapped by every shim and paid
// once per host; PSS would charge each shim a share of it, and USS the
// whole of it to a lone shim, so both move with whatever else on the
// machine (another test run's shims, say) maps the same binary.
func (m hostMem) host() int64 { return m.kilnd.anon + m.shimsMem.anon + m.containerd.anon }

type memUse struct{ pss, anon int64 }

func (m *memUse) add(o memUse) { m.pss, m.anon = m.pss+o.pss, m.anon+o.anon }

func sampleHostMem(t *testing.T, k *kilnd) hostMem {
	t.Helper()
	var m hostMem
	m.containers = len(k.containers())
	m.kilndRSS = kilndRSS(t, k)
	m.kilnd = procMem(t, k.cmd.Process.Pid)
	m.sampleContainerd(t, k.ns)
	m.kilndHeap = metricValue(t, k, "go_memstats_heap_inuse_bytes")
	m.kilndRoutines = metricValue(t, k, "go_goroutines")
	return m
}

func (m *hostMem) sampleContainerd(t *testing.T, ns string) {
	m.containerd = procMem(t, env.containerd.PID())
	shims := shimPIDs(ns, env.containerd.Address())
	m.shims = len(shims)
	for _, pid := range shims {
		m.shimsMem.add(procMem(t, pid))
	}
	for _, pid := range childPIDs(shims) {
		m.fn.add(procMem(t, pid))
	}
}

// procMem reads a process's proportional set size and its anonymous
// memory from smaps_rollup.
func procMem(t *testing.T, pid int) memUse {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		// A process that exited between listing and reading costs nothing.
		return memUse{}
	}
	var m memUse
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Pss:":
			m.pss = kb << 10
		case "Anonymous:":
			m.anon = kb << 10
		}
	}
	return m
}

// shimPIDs finds the runc shims serving namespace ns of the containerd at
// address, by reading /proc/*/cmdline; it only looks.
func shimPIDs(ns, address string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		if argValue(args, "-namespace") == ns && (address == "" || argValue(args, "-address") == address) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func argValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// childPIDs lists the direct children of parents: under a shim, those are
// the containers' init processes.
func childPIDs(parents []int) []int {
	want := make(map[int]bool, len(parents))
	for _, p := range parents {
		want[p] = true
	}
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces; fields after its ')' are fixed.
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); want[ppid] {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func benchMemory(t *testing.T, plan benchPlan, bare *bareRuntime, grouped bool, rep *benchReport) {
	mode := "grouped"
	if !grouped {
		mode = "ungrouped"
	}
	row := func(who string, n int, m hostMem, base hostMem, per float64) string {
		kilnd := []string{"–", "–", "–", "–"}
		if who == "kiln" {
			kilnd = []string{mb(float64(m.kilndRSS) / 1e6), mb(float64(m.kilnd.anon) / 1e6), mb(m.kilndHeap / 1e6), fmt.Sprintf("%.0f", m.kilndRoutines)}
		}
		return fmt.Sprintf("| %s %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |", who, mode, n, m.containers, m.shims,
			kilnd[0], kilnd[1], kilnd[2], kilnd[3],
			mb(float64(m.shimsMem.anon)/1e6), mb(float64(m.shimsMem.pss)/1e6), mb(float64(m.containerd.anon-base.containerd.anon)/1e6),
			mb(float64(m.fn.anon)/1e6), mb(per/1e6))
	}
	top := slices.Max(plan.memoryCounts)
	k := startKilnd(t, withArgs("--group-shims="+strconv.FormatBool(grouped), "--max-memory", strconv.Itoa(4*16*top)))
	d := k.deploy("bench-mem", "idle", testfnImage, "json-http", map[string]any{"memory": 16, "idle_timeout": 600, "timeout": 120})
	time.Sleep(2 * time.Second)
	base := sampleHostMem(t, k)
	rep.addDetail(row("kiln", 0, base, base, 0))
	kiln := make([]hostMem, len(plan.memoryCounts))
	for i, n := range plan.memoryCounts {
		growPool(t, k, d.FnID, n)
		// Let the launches' garbage and the shims' start-up settle: the
		// figure wanted is what an idle container keeps costing.
		time.Sleep(3 * time.Second)
		kiln[i] = sampleHostMem(t, k)
		rep.addDetail(row("kiln", n, kiln[i], base, perContainer(kiln[i], base)))
	}
	// Removed here rather than by kilnd's shutdown, which the harness
	// bounds more tightly than removing a hundred containers may take.
	if resp, b := k.do("DELETE", "/v2/fns/"+d.FnID, nil, nil); resp.StatusCode/100 != 2 {
		t.Fatalf("delete fn: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 5*time.Minute, "idle containers removed", func() bool { return len(k.containers()) == 0 })

	// The same containers without kiln; grouped, they carry the
	// annotation runc's shim groups by.
	group := ""
	if grouped {
		group = "bench-mem"
	}
	var boxes []*bareBox
	t.Cleanup(func() {
		for _, bb := range boxes {
			if err := bb.destroy(bare.ctx(context.Background())); err != nil {
				t.Errorf("remove %s: %v", bb.container.ID(), err)
			}
		}
	})
	time.Sleep(2 * time.Second)
	bbase := sampleBareMem(t, bare)
	rep.addDetail(row("bare", 0, bbase, bbase, 0))
	for i, n := range plan.memoryCounts {
		boxes = append(boxes, startBare(t, bare, n-len(boxes), group)...)
		time.Sleep(3 * time.Second)
		m := sampleBareMem(t, bare)
		bper := perContainer(m, bbase)
		rep.addDetail(row("bare", n, m, bbase, bper))

		km := kiln[i]
		limit := 40e6 + 100e3*float64(km.containers)
		rss := float64(km.kilndRSS)
		rep.add(benchRow{fmt.Sprintf("kilnd RSS, %d idle hot containers, shims %s", km.containers, mode), mb(rss / 1e6), "", "",
			"<= " + mb(limit/1e6), yesNo(rss <= limit)})
		kper := perContainer(km, base)
		hostRow := benchRow{fmt.Sprintf("host memory per idle hot container, N=%d, shims %s", km.containers, mode),
			mb(kper / 1e6), mb(bper / 1e6), fmt.Sprintf("%.2f", kper/bper), "", ""}
		if grouped {
			hostRow.target, hostRow.met = "<= 3.0 MB", yesNo(kper <= 3e6)
		}
		rep.add(hostRow)
	}
}

// perContainer is the host memory each container added over base.
func perContainer(m, base hostMem) float64 {
	if m.containers == 0 {
		return 0
	}
	return float64(m.host()-base.host()) / float64(m.containers)
}

func sampleBareMem(t *testing.T, bare *bareRuntime) hostMem {
	t.Helper()
	var m hostMem
	list, err := env.client.Containers(bare.ctx(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	m.containers = len(list)
	m.sampleContainerd(t, bare.ns)
	return m
}

// startBare starts n json-http containers, a few at a time since
// containerd serialises much of a start and more at once only makes each
// slower, and has each answer one call, as a kiln container has.
func startBare(t *testing.T, bare *bareRuntime, n int, group string) []*bareBox {
	t.Helper()
	var mu sync.Mutex
	var boxes []*bareBox
	sem := make(chan struct{}, 4)
	var failed atomic.Int32
	parallel(n, func(int) {
		sem <- struct{}{}
		defer func() { <-sem }()
		bb, err := bare.start(context.Background(), "json-http", group)
		if err == nil {
			mu.Lock()
			boxes = append(boxes, bb)
			mu.Unlock()
			err = bb.call(benchBody())
		}
		if err != nil {
			failed.Add(1)
			t.Errorf("bare start: %v", err)
		}
	})
	if failed.Load() > 0 {
		for _, bb := range boxes {
			_ = bb.destroy(bare.ctx(context.Background()))
		}
		t.FailNow()
	}
	return boxes
}
