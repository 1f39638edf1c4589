package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// exposition is one scrape of kilnd's /metrics.
type exposition struct {
	text string
	fams map[string]*dto.MetricFamily
}

func (k *kilnd) scrape() exposition {
	k.t.Helper()
	resp, body := k.do("GET", "/metrics", nil, nil)
	if resp.StatusCode != 200 {
		k.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		k.t.Fatalf("/metrics does not parse as the text exposition format: %v", err)
	}
	return exposition{text: string(body), fams: fams}
}

// value sums the samples of name whose labels include want; a
// histogram's sample is its observation count. A series that is not
// there counts 0, as it would in PromQL's increase().
func (e exposition) value(name string, want map[string]string) float64 {
	f := e.fams[name]
	if f == nil {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// labelValues maps metric{label} to the values it has, for every series.
func (e exposition) labelValues() map[string][]string {
	out := map[string][]string{}
	for name, f := range e.fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				out[name+"{"+l.GetName()+"}"] = append(out[name+"{"+l.GetName()+"}"], l.GetValue())
			}
		}
	}
	return out
}

// TestMetrics checks /metrics as Prometheus sees it: the exposition
// passes promtool's lint, the kiln_ series count what the test did with
// bounded labels, and a real Prometheus scraping kilnd sees the calls.
func TestMetrics(t *testing.T) {
	k := startKilnd(t)

	resp, body := k.do("GET", "/healthz", nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %d %s", resp.StatusCode, body)
	}
	resp, body = k.do("GET", "/version", nil, nil)
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(body, &v); resp.StatusCode != 200 || err != nil || v.Version == "" {
		t.Fatalf("GET /version: %d %q (%v), want JSON with a version", resp.StatusCode, body, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET /version: Content-Type %q", ct)
	}

	const app, fn, crashFn = "metrics", "metrics-echo", "metrics-crash"
	d := k.deploy(app, fn, testfnImage, "json-http", nil)
	dc := k.deploy(app, crashFn, testfnImage, "json-http", nil)
	series := map[string]string{"app": app, "fn": fn}
	with := func(extra ...string) map[string]string {
		m := map[string]string{"app": app, "fn": fn}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	before := k.scrape()

	// Calls by id and through the trigger, so both route templates show.
	const byID, byTrigger = 4, 2
	var callIDs []string
	call := func(path string, i int) {
		want := fmt.Sprintf("metrics-%d", i)
		resp, body := k.do("POST", path, strings.NewReader(want), nil)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("POST %s: %d %q", path, resp.StatusCode, body)
		}
		id := resp.Header.Get("Fn-Call-Id")
		if id == "" {
			t.Fatalf("POST %s: no Fn-Call-Id", path)
		}
		callIDs = append(callIDs, id)
	}
	for i := 0; i < byID; i++ {
		call("/invoke/"+d.FnID, i)
	}
	for i := 0; i < byTrigger; i++ {
		call("/t/"+app+"/"+fn, byID+i)
	}
	const unknownFn = "no-such-fn-for-metrics"
	if resp, _ := k.do("POST", "/invoke/"+unknownFn, strings.NewReader("x"), nil); resp.StatusCode != 404 {
		t.Fatalf("invoke of an unknown fn: %d, want 404", resp.StatusCode)
	}
	resp, body = k.do("POST", "/invoke/"+dc.FnID, strings.NewReader("x"), http.Header{"X-Test-Action": {"crash=3"}})
	if resp.StatusCode != 502 {
		t.Fatalf("crashing call: %d %s, want 502", resp.StatusCode, body)
	}
	if id := resp.Header.Get("Fn-Call-Id"); id != "" {
		callIDs = append(callIDs, id)
	}

	// The pool publishes the idle state on release, which may land just
	// after the answer.
	var after exposition
	waitFor(t, 5*time.Second, "kiln_containers idle 1", func() bool {
		after = k.scrape()
		return after.value("kiln_containers", with("state", "idle")) == 1
	})

	promtoolCheckMetrics(t, after.text)

	const calls = byID + byTrigger
	if got := after.value("kiln_calls_total", with("status", "success")) - before.value("kiln_calls_total", with("status", "success")); got != calls {
		t.Errorf("kiln_calls_total{status=success} rose by %v, want %d", got, calls)
	}
	if got := after.value("kiln_calls_total", map[string]string{"app": app, "fn": crashFn, "status": "error"}); got != 1 {
		t.Errorf("kiln_calls_total{fn=%s,status=error} = %v, want 1", crashFn, got)
	}
	if got := after.value("kiln_call_duration_seconds", series); got != calls {
		t.Errorf("kiln_call_duration_seconds observed %v calls, want %d", got, calls)
	}
	if got := after.value("kiln_container_starts_total", with("kind", "hot")); got != 1 {
		t.Errorf("kiln_container_starts_total{kind=hot} = %v, want 1 (one hot container served every call)", got)
	}
	if got := after.value("kiln_container_starts_total", with("kind", "cold")); got != 0 {
		t.Errorf("kiln_container_starts_total{kind=cold} = %v, want 0 for a json-http fn", got)
	}
	if got := after.value("kiln_containers", with("state", "busy")); got != 0 {
		t.Errorf("kiln_containers{state=busy} = %v after every call returned", got)
	}
	if got := after.value("kiln_memory_bytes", map[string]string{"kind": "capacity"}); got != 4096<<20 {
		t.Errorf("kiln_memory_bytes{kind=capacity} = %v, want 4096 MB (the harness's --max-memory)", got)
	}
	if got := after.value("kiln_memory_bytes", map[string]string{"kind": "used"}); got < 128<<20 {
		t.Errorf("kiln_memory_bytes{kind=used} = %v with a 128 MB container alive", got)
	}
	for _, c := range []struct {
		route, code string
		min         float64
	}{
		{"POST /invoke/{fn_id}", "200", byID},
		{"POST /invoke/{fn_id}", "404", 1},
		{"/t/{app}/{source...}", "200", byTrigger},
		{"GET /healthz", "200", 1},
	} {
		if got := after.value("kiln_http_requests_total", map[string]string{"route": c.route, "code": c.code}); got < c.min {
			t.Errorf("kiln_http_requests_total{route=%q,code=%s} = %v, want >= %v", c.route, c.code, got, c.min)
		}
	}
	// Label values must stay bounded: no call ids, no fn ids, no raw paths.
	forbidden := append([]string{d.FnID, dc.FnID, unknownFn, "/t/" + app + "/"}, callIDs...)
	for label, values := range after.labelValues() {
		for _, v := range values {
			for _, f := range forbidden {
				if strings.Contains(v, f) {
					t.Errorf("%s has the value %q, which holds %q: label values must be bounded", label, v, f)
				}
			}
		}
	}

	// Not a subtest: the harness fails through the parent's t, which must
	// not be done from a subtest's goroutine.
	p := startPrometheus(t, k.addr)
	first := p.waitForSum(t, "sum(kiln_calls_total)", calls+1)
	for i := 0; i < 3; i++ {
		call("/invoke/"+d.FnID, 100+i)
	}
	p.waitForSum(t, "sum(kiln_calls_total)", first+3)
	p.checkTarget(t)
}

// promtoolCheckMetrics runs promtool's linter on an exposition and
// fails on any problem it reports, lint included.
func promtoolCheckMetrics(t *testing.T, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH: run scripts/install-deps.sh (it installs Debian's prometheus package)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// promServer is a Prometheus server the test started.
type promServer struct {
	url string
	cmd *exec.Cmd
	log string
}

// startPrometheus runs Debian's Prometheus on a free loopback port,
// scraping kilnd at addr every second, with its data in a temp dir. It is
// stopped by its PID when the test ends.
func startPrometheus(t *testing.T, kilndAddr string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not on PATH: run scripts/install-deps.sh (it installs Debian's prometheus package)")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kilnd
    metrics_path: /metrics
    static_configs:
      - targets: [%q]
`, kilndAddr)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &promServer{url: "http://" + addr, log: filepath.Join(dir, "prometheus.log")}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-exited
			t.Errorf("prometheus (pid %d) ignored SIGTERM for 15s", p.cmd.Process.Pid)
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	waitFor(t, 30*time.Second, "prometheus ready", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(p.log)
			t.Fatalf("prometheus exited: %v\n%s", p.cmd.ProcessState, b)
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// query runs an instant query and returns its single value; ok is false
// while there is no sample yet.
func (p *promServer) query(t *testing.T, q string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	if r.Status != "success" {
		t.Fatalf("query %s: %s %s", q, r.Status, r.Error)
	}
	if len(r.Data.Result) != 1 {
		return 0, false
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil
}

// waitForSum polls q until it reaches at least want and returns it.
func (p *promServer) waitForSum(t *testing.T, q string, want float64) float64 {
	t.Helper()
	var got float64
	waitFor(t, 30*time.Second, fmt.Sprintf("Prometheus: %s >= %v", q, want), func() bool {
		v, ok := p.query(t, q)
		got = v
		if !ok {
			return false
		}
		return v >= want
	})
	t.Logf("Prometheus: %s = %v", q, got)
	return got
}

// checkTarget: Prometheus itself finds nothing wrong with the scrapes.
func (p *promServer) checkTarget(t *testing.T) {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/targets")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			ActiveTargets []struct {
				Health    string `json:"health"`
				LastError string `json:"lastError"`
				ScrapeURL string `json:"scrapeUrl"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if len(r.Data.ActiveTargets) != 1 {
		t.Fatalf("%d active targets, want 1", len(r.Data.ActiveTargets))
	}
	if tg := r.Data.ActiveTargets[0]; tg.Health != "up" || tg.LastError != "" {
		t.Errorf("target %s: health %s, last error %q", tg.ScrapeURL, tg.Health, tg.LastError)
	}
}
