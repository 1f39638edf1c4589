package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// The uid and variable the dashboard and the provisioning agree on.
const dsVariable = "DS_PROMETHEUS"

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Dir(filepath.Dir(file))
}

func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func loadYAML(t *testing.T, rel string) any {
	t.Helper()
	v, err := parseYAML(readRepoFile(t, rel))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return v
}

// lookup walks mappings by key.
func lookup(v any, keys ...string) (any, bool) {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func str(v any, keys ...string) string {
	v, _ = lookup(v, keys...)
	s, _ := v.(string)
	return s
}

func strList(v any, keys ...string) []string {
	v, _ = lookup(v, keys...)
	list, _ := v.([]any)
	var out []string
	for _, item := range list {
		if s, ok := item.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// requirePromtool fails, not skips: a check that quietly does not run
// looks the same as one that passed.
func requirePromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH: run scripts/install-deps.sh (it installs Debian's prometheus package, which has promtool)")
	}
	return p
}

// hasRegistryHost tells whether an image reference names a registry: the
// deployment files use Docker Hub's short names only.
func hasRegistryHost(ref string) bool {
	first, _, found := strings.Cut(ref, "/")
	return found && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// mount is one short-syntax compose volume, "source:target[:mode]".
type mount struct{ source, target string }

func mounts(t *testing.T, svc any) []mount {
	t.Helper()
	var out []mount
	for _, v := range strList(svc, "volumes") {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			t.Fatalf("volume %q: want source:target[:mode]", v)
		}
		out = append(out, mount{parts[0], parts[1]})
	}
	return out
}

func isBind(source string) bool {
	return strings.HasPrefix(source, ".") || strings.HasPrefix(source, "/")
}

// kilndEnvVars are the KILN_* variables kilnd reads.
func kilndEnvVars(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(KILN_[A-Z_]+)"`).FindAllStringSubmatch(readRepoFile(t, "cmd/kilnd/config.go"), -1) {
		out[m[1]] = true
	}
	if len(out) == 0 {
		t.Fatal("found no KILN_ variables in cmd/kilnd/config.go")
	}
	return out
}

func TestComposeFile(t *testing.T) {
	root := repoRoot(t)
	compose := loadYAML(t, "docker-compose.yml")
	for _, name := range []string{"kilnd", "prometheus", "grafana"} {
		if _, ok := lookup(compose, "services", name); !ok {
			t.Fatalf("docker-compose.yml has no service %q", name)
		}
	}
	services, _ := lookup(compose, "services")
	declared, _ := lookup(compose, "volumes")
	declaredVolumes, _ := declared.(map[string]any)
	for name, svc := range services.(map[string]any) {
		if img := str(svc, "image"); img != "" && hasRegistryHost(img) {
			t.Errorf("service %s: image %q names a registry host; use the Docker Hub short name", name, img)
		}
		for _, m := range mounts(t, svc) {
			if isBind(m.source) {
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(m.source))); err != nil {
					t.Errorf("service %s mounts %s, which is not in the repository: %v", name, m.source, err)
				}
			} else if _, ok := declaredVolumes[m.source]; !ok {
				t.Errorf("service %s uses volume %q, not declared under volumes:", name, m.source)
			}
		}
	}

	kilnd, _ := lookup(compose, "services", "kilnd")
	if b := str(kilnd, "build"); b != "." && str(kilnd, "build", "context") != "." {
		t.Errorf("kilnd: build is %q, want . (the Dockerfile at the repository root)", b)
	}
	if str(kilnd, "privileged") != "true" {
		t.Error("kilnd: privileged must be true: containerd and runc run inside")
	}
	if str(kilnd, "cgroup") != "host" {
		t.Error("kilnd: cgroup must be host, so runc can enable controllers for function cgroups")
	}
	if !slices.Contains(strList(kilnd, "volumes"), "kiln-data:/var/lib/kiln") {
		t.Errorf("kilnd: volumes %v lack kiln-data:/var/lib/kiln", strList(kilnd, "volumes"))
	}
	if !slices.Contains(strList(kilnd, "tmpfs"), "/run/containerd") {
		t.Error("kilnd: no tmpfs on /run/containerd (shim sockets and runc state)")
	}
	published := false
	for _, p := range strList(kilnd, "ports") {
		published = published || strings.HasSuffix(p, ":8080")
	}
	if !published {
		t.Errorf("kilnd: ports %v do not publish 8080", strList(kilnd, "ports"))
	}
	if v := str(kilnd, "environment", "KILN_ADMIN_TOKEN"); !strings.HasPrefix(v, "${KILN_ADMIN_TOKEN") {
		t.Errorf("kilnd: KILN_ADMIN_TOKEN is %q, want it taken from the environment", v)
	}
	if v := str(kilnd, "environment", "KILN_LOG_FORMAT"); v != "json" {
		t.Errorf("kilnd: KILN_LOG_FORMAT is %q, want json", v)
	}
	env, _ := lookup(kilnd, "environment")
	known := kilndEnvVars(t)
	for name := range env.(map[string]any) {
		if strings.HasPrefix(name, "KILN_") && !known[name] {
			t.Errorf("kilnd: environment %s is not read by kilnd (cmd/kilnd/config.go)", name)
		}
	}

	prom, _ := lookup(compose, "services", "prometheus")
	configFile := ""
	for _, arg := range strList(prom, "command") {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			configFile = v
		}
	}
	if configFile == "" {
		t.Error("prometheus: command has no --config.file=")
	}
	if !slices.Contains(mounts(t, prom), mount{"./deploy/prometheus/prometheus.yml", configFile}) {
		t.Errorf("prometheus: deploy/prometheus/prometheus.yml is not mounted at --config.file %q", configFile)
	}

	graf, _ := lookup(compose, "services", "grafana")
	gm := mounts(t, graf)
	if !slices.Contains(gm, mount{"./deploy/grafana/provisioning", "/etc/grafana/provisioning"}) {
		t.Errorf("grafana: deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning: %v", gm)
	}
	providerPath := ""
	if list := providers(t); len(list) == 1 {
		providerPath = str(list[0], "options", "path")
	}
	dashboardMounted := false
	for _, m := range gm {
		if m.source == "./deploy/grafana/kiln.json" && path.Dir(m.target) == providerPath {
			dashboardMounted = true
		}
	}
	if !dashboardMounted {
		t.Errorf("grafana: deploy/grafana/kiln.json is not mounted into the provider's path %q", providerPath)
	}

	composeConfig(t, root)
}

// composeConfig runs compose's own validation where the compose plugin
// is installed; it needs no engine. Without it the checks above are all
// there is, and the log says so.
func composeConfig(t *testing.T, root string) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Log("no docker CLI: `docker compose config` not run")
		return
	}
	if err := exec.Command(docker, "compose", "version").Run(); err != nil {
		t.Log("docker CLI without the compose plugin: `docker compose config` not run")
		return
	}
	cmd := exec.Command(docker, "compose", "-f", "docker-compose.yml", "config", "--quiet")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KILN_ADMIN_TOKEN=deploy-test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose config: %v\n%s", err, out)
	}
}

func TestPrometheusConfig(t *testing.T) {
	cfg := loadYAML(t, "deploy/prometheus/prometheus.yml")
	v, _ := lookup(cfg, "scrape_configs")
	jobs, _ := v.([]any)
	found := false
	for _, job := range jobs {
		targets := []string{}
		sc, _ := lookup(job, "static_configs")
		list, _ := sc.([]any)
		for _, s := range list {
			targets = append(targets, strList(s, "targets")...)
		}
		if slices.Contains(targets, "kilnd:8080") {
			found = true
			if p := str(job, "metrics_path"); p != "/metrics" {
				t.Errorf("job %s: metrics_path %q, want /metrics", str(job, "job_name"), p)
			}
		}
	}
	if !found {
		t.Fatal("no scrape job targets kilnd:8080")
	}
	if !strings.HasPrefix(dockerfileListen(t), "0.0.0.0:8080") {
		t.Errorf("the image's kilnd listens on %q, not port 8080 that Prometheus scrapes", dockerfileListen(t))
	}
	out, err := exec.Command(requirePromtool(t), "check", "config", filepath.Join(repoRoot(t), "deploy/prometheus/prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}

// provisionedDatasourceUID is the uid of the one Prometheus data source
// Grafana is provisioned with.
func provisionedDatasourceUID(t *testing.T) string {
	t.Helper()
	v, _ := lookup(loadYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml"), "datasources")
	list, _ := v.([]any)
	if len(list) != 1 {
		t.Fatalf("want one provisioned data source, got %d", len(list))
	}
	ds := list[0]
	if str(ds, "type") != "prometheus" || str(ds, "uid") == "" {
		t.Fatalf("data source: type %q uid %q, want prometheus with a uid", str(ds, "type"), str(ds, "uid"))
	}
	// "prometheus" is the compose service; 9090 its listen port.
	if u := str(ds, "url"); u != "http://prometheus:9090" {
		t.Errorf("data source url %q, want http://prometheus:9090", u)
	}
	return str(ds, "uid")
}

func providers(t *testing.T) []any {
	t.Helper()
	v, _ := lookup(loadYAML(t, "deploy/grafana/provisioning/dashboards/kiln.yml"), "providers")
	list, _ := v.([]any)
	return list
}

func TestGrafanaProvisioning(t *testing.T) {
	provisionedDatasourceUID(t)
	list := providers(t)
	if len(list) != 1 {
		t.Fatalf("want one dashboard provider, got %d", len(list))
	}
	if str(list[0], "type") != "file" || str(list[0], "options", "path") == "" {
		t.Errorf("dashboard provider: type %q path %q, want a file provider with a path",
			str(list[0], "type"), str(list[0], "options", "path"))
	}
	if v, _ := lookup(loadYAML(t, "deploy/grafana/provisioning/dashboards/kiln.yml"), "apiVersion"); v != "1" {
		t.Errorf("dashboard provisioning apiVersion %v, want 1", v)
	}
}

// metricKinds parses metrics/metrics.go: name -> collector kind
// (Counter, GaugeVec, HistogramVec, ...).
func metricKinds(t *testing.T) map[string]string {
	t.Helper()
	src := readRepoFile(t, "metrics/metrics.go")
	names := regexp.MustCompile(`Name: "(kiln_[a-z_]+)"`).FindAllStringSubmatch(src, -1)
	typed := regexp.MustCompile(`prometheus\.New(\w+)\(prometheus\.\w+Opts\{\s*Name: "(kiln_[a-z_]+)"`).FindAllStringSubmatch(src, -1)
	if len(names) == 0 || len(names) != len(typed) {
		t.Fatalf("metrics/metrics.go: %d metric names but %d with a recognisable collector type; update metricKinds", len(names), len(typed))
	}
	out := map[string]string{}
	for _, m := range typed {
		out[m[2]] = m[1]
	}
	return out
}

// runtimeMetrics are the names kilnd's Go and process collectors export,
// taken from the collectors themselves rather than a list that would age.
func runtimeMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range families {
		out[f.GetName()] = true
	}
	return out
}

type dashboardPanel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasourceRef           `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboard struct {
	UID           string           `json:"uid"`
	Title         string           `json:"title"`
	SchemaVersion int              `json:"schemaVersion"`
	Panels        []dashboardPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name    string `json:"name"`
			Type    string `json:"type"`
			Query   string `json:"query"`
			Current struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(readRepoFile(t, "deploy/grafana/kiln.json")))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deploy/grafana/kiln.json: %v", err)
	}
	if dec.More() {
		t.Fatal("deploy/grafana/kiln.json: text after the dashboard object")
	}
	return d
}

// allPanels flattens rows: a collapsed row carries its panels inside it.
func allPanels(list []dashboardPanel) []dashboardPanel {
	var out []dashboardPanel
	for _, p := range list {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "kiln" || d.Title != "kiln" {
		t.Errorf("uid %q title %q, want kiln and kiln", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: older than Grafana 9", d.SchemaVersion)
	}

	dsVar := false
	for _, v := range d.Templating.List {
		if v.Name == dsVariable {
			dsVar = v.Type == "datasource" && v.Query == "prometheus"
			if v.Current.Value != provisionedDatasourceUID(t) {
				t.Errorf("variable %s defaults to %v, not the provisioned data source %q", dsVariable, v.Current.Value, provisionedDatasourceUID(t))
			}
		}
	}
	if !dsVar {
		t.Fatalf("no datasource variable %s of type prometheus", dsVariable)
	}
	wantDS := "${" + dsVariable + "}"

	kinds := metricKinds(t)
	known := runtimeMetrics(t)
	for name, kind := range kinds {
		if strings.HasPrefix(kind, "Histogram") {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[name+suffix] = true
			}
		} else {
			known[name] = true
		}
	}
	used := map[string]bool{}
	ids := map[int]string{}
	var exprs []string
	var boxes []dashboardPanel
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
		}
		boxes = append(boxes, p)
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != wantDS {
			t.Errorf("panel %q: datasource %+v, want uid %s", p.Title, p.Datasource, wantDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != wantDS {
				t.Errorf("panel %q target %s: datasource %+v, want uid %s", p.Title, tg.RefID, tg.Datasource, wantDS)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
				continue
			}
			exprs = append(exprs, tg.Expr)
			names, err := promqlMetrics(tg.Expr)
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			if len(names) == 0 {
				t.Errorf("panel %q: %s selects no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				switch {
				case strings.HasPrefix(kinds[n], "Histogram"):
					t.Errorf("panel %q: histogram %s queried without _bucket/_sum/_count", p.Title, n)
				case !known[n]:
					t.Errorf("panel %q: metric %s is neither in metrics/metrics.go nor exported by the Go and process collectors", p.Title, n)
				}
				used[n] = true
				if strings.HasSuffix(n, "_bucket") && !strings.Contains(tg.Expr, "histogram_quantile") {
					t.Errorf("panel %q: %s outside histogram_quantile", p.Title, n)
				}
			}
			if strings.Contains(tg.Expr, "histogram_quantile") && !strings.Contains(tg.Expr, "_bucket") {
				t.Errorf("panel %q: histogram_quantile without a _bucket series: %s", p.Title, tg.Expr)
			}
		}
	}
	for name, kind := range kinds {
		if !used[name] && !used[name+"_bucket"] && !used[name+"_count"] {
			t.Errorf("no panel shows %s (%s)", name, kind)
		}
	}
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			if a.GridPos.X < b.GridPos.X+b.GridPos.W && b.GridPos.X < a.GridPos.X+a.GridPos.W &&
				a.GridPos.Y < b.GridPos.Y+b.GridPos.H && b.GridPos.Y < a.GridPos.Y+a.GridPos.H {
				t.Errorf("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}
	checkPromQLSyntax(t, exprs)
}

// checkPromQLSyntax has promtool parse every expression, as recording
// rules: it is Prometheus' own parser, which the tokenizer is not.
func checkPromQLSyntax(t *testing.T, exprs []string) {
	t.Helper()
	promtool := requirePromtool(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(e) // a JSON string is a YAML double-quoted scalar
		fmt.Fprintf(&b, "      - record: dashboard:expr%d\n        expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the dashboard's expressions: %v\n%s", err, out)
	}
}

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct {
	cmd  string // upper case
	args string
}

func dockerfile(t *testing.T) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(readRepoFile(t, "Dockerfile"), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		full := strings.TrimSpace(cur.String())
		cur.Reset()
		if full == "" {
			continue
		}
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
	}
	return out
}

type stage struct {
	image, name string
	body        []instruction
}

func dockerStages(t *testing.T) []stage {
	t.Helper()
	var stages []stage
	for _, in := range dockerfile(t) {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			s := stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile: %s before FROM", in.cmd)
			}
			continue
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build and a runtime stage", len(stages))
	}
	return stages
}

func entrypoint(t *testing.T) []string {
	t.Helper()
	stages := dockerStages(t)
	var ep []string
	for _, in := range stages[len(stages)-1].body {
		if in.cmd == "ENTRYPOINT" {
			if err := json.Unmarshal([]byte(in.args), &ep); err != nil {
				t.Fatalf("ENTRYPOINT is not exec form (a JSON array), so signals would go to a shell: %v", err)
			}
		}
	}
	if len(ep) == 0 {
		t.Fatal("runtime stage has no ENTRYPOINT")
	}
	return ep
}

// kilndArgs are the entrypoint's arguments after kilnd.
func kilndArgs(t *testing.T) []string {
	t.Helper()
	ep := entrypoint(t)
	for i, a := range ep {
		if path.Base(a) == "kilnd" {
			return ep[i+1:]
		}
	}
	t.Fatalf("ENTRYPOINT %v does not run kilnd", ep)
	return nil
}

func dockerfileListen(t *testing.T) string {
	args := kilndArgs(t)
	for i, a := range args {
		if (a == "--listen" || a == "-listen") && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// aptPackages are the packages the stage's RUN lines apt-get install.
func aptPackages(body []instruction) []string {
	var out []string
	for _, in := range body {
		if in.cmd != "RUN" {
			continue
		}
		for _, part := range strings.Split(in.args, "&&") {
			f := strings.Fields(part)
			i := slices.Index(f, "install")
			if i < 0 || !slices.ContainsFunc(f[:i], func(s string) bool { return path.Base(s) == "apt-get" }) {
				continue
			}
			for _, w := range f[i+1:] {
				if !strings.HasPrefix(w, "-") {
					out = append(out, w)
				}
			}
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t)
	for _, s := range stages {
		if hasRegistryHost(s.image) {
			t.Errorf("FROM %s names a registry host", s.image)
		}
	}
	build, rt := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.image, "golang:") || !strings.Contains(build.image, "bookworm") || build.name == "" {
		t.Errorf("build stage FROM %s AS %q, want a named golang:*-bookworm stage", build.image, build.name)
	}
	if rt.image != "debian:bookworm-slim" {
		t.Errorf("runtime stage FROM %s, want debian:bookworm-slim", rt.image)
	}

	var runs, copies []string
	for _, in := range build.body {
		switch in.cmd {
		case "RUN":
			runs = append(runs, in.args)
		case "COPY":
			copies = append(copies, in.args)
		}
	}
	buildCmd := strings.Join(runs, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/kilnd", "./cmd/kiln"} {
		if !strings.Contains(buildCmd, want) {
			t.Errorf("build stage never runs %s", want)
		}
	}
	checkCopiedPackages(t, copies)

	pkgs := aptPackages(rt.body)
	for _, want := range []string{"containerd", "runc", "ca-certificates"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("runtime stage installs %v, not %s", pkgs, want)
		}
	}
	var copiedBins, volumes, exposed, health string
	for _, in := range rt.body {
		switch in.cmd {
		case "COPY":
			if strings.HasPrefix(in.args, "--from="+build.name+" ") {
				copiedBins += in.args + " "
			}
		case "VOLUME":
			volumes += in.args + " "
		case "EXPOSE":
			exposed += in.args + " "
		case "HEALTHCHECK":
			health = in.args
		}
	}
	for _, bin := range []string{"kilnd", "kiln"} {
		if !regexp.MustCompile(`/` + bin + `\b`).MatchString(copiedBins) {
			t.Errorf("runtime stage does not copy %s from the build stage", bin)
		}
	}
	if !strings.Contains(volumes, "/var/lib/kiln") {
		t.Error("no VOLUME /var/lib/kiln: containerd's overlayfs snapshots cannot sit on the image's overlay root")
	}
	if !slices.Contains(strings.Fields(exposed), "8080") {
		t.Error("no EXPOSE 8080")
	}
	if _, cmd, ok := strings.Cut(health, "CMD "); !ok || !strings.Contains(cmd, "/healthz") {
		t.Errorf("HEALTHCHECK %q does not ask /healthz", health)
	} else if tool := strings.Fields(cmd)[0]; !slices.Contains(pkgs, tool) {
		t.Errorf("HEALTHCHECK runs %s, which the runtime stage does not install", tool)
	}

	ep := entrypoint(t)
	if p := path.Base(ep[0]); p != "kilnd" && !slices.Contains(pkgs, p) {
		t.Errorf("ENTRYPOINT runs %s, which the runtime stage does not install", ep[0])
	}
	args := kilndArgs(t)
	if got := strings.Join(args, " "); !strings.Contains(got, "--listen 0.0.0.0:8080") || !strings.Contains(got, "--data-dir /var/lib/kiln") {
		t.Errorf("kilnd arguments %q, want --listen 0.0.0.0:8080 --data-dir /var/lib/kiln", got)
	}
	checkKilndAcceptsFlags(t, args)
	checkDebianPackages(t, pkgs)
}

// checkCopiedPackages makes sure the build stage copies every directory
// of ours the two commands import: the Dockerfile lists them one by one
// (to keep local data dirs out), so a new package would break the image
// build where no test here can see it.
func checkCopiedPackages(t *testing.T, copies []string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "./cmd/kilnd", "./cmd/kiln")
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	const module = "github.com/kiln-run/kiln/"
	need := map[string]bool{}
	for _, pkg := range strings.Fields(string(out)) {
		if rel, ok := strings.CutPrefix(pkg, module); ok {
			need[strings.Split(rel, "/")[0]] = true
		}
	}
	copied := map[string]bool{}
	for _, c := range copies {
		f := strings.Fields(c)
		for _, src := range f[:len(f)-1] {
			copied[strings.TrimSuffix(strings.TrimPrefix(src, "./"), "/")] = true
		}
	}
	if copied["."] {
		return
	}
	var missing []string
	for dir := range need {
		if !copied[dir] {
			missing = append(missing, dir)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the build stage does not COPY %v, which kilnd or kiln import", missing)
	}
}

// checkKilndAcceptsFlags runs the real kilnd with the entrypoint's flags
// and -h: an unknown or misspelt flag exits 2, as it would in the image.
func checkKilndAcceptsFlags(t *testing.T, args []string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kilnd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kilnd")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kilnd: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, append(slices.Clone(args), "-h")...).CombinedOutput()
	if err != nil {
		t.Errorf("kilnd %s -h: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// checkDebianPackages asks apt whether bookworm has the runtime stage's
// packages, when this machine is bookworm with package lists; elsewhere
// the answer would be about another release, so it only logs.
func checkDebianPackages(t *testing.T, pkgs []string) {
	t.Helper()
	osr, _ := os.ReadFile("/etc/os-release")
	if !strings.Contains(string(osr), "VERSION_CODENAME=bookworm") {
		t.Log("not a bookworm machine: the runtime stage's packages were not looked up")
		return
	}
	policy := func(p string) (string, error) {
		out, err := exec.Command("apt-cache", "policy", p).Output()
		if err != nil {
			return "", err
		}
		_, c, ok := strings.Cut(string(out), "Candidate: ")
		if !ok {
			return "", errors.New("no candidate")
		}
		c, _, _ = strings.Cut(c, "\n")
		return c, nil
	}
	if c, err := policy("containerd"); err != nil || c == "(none)" {
		t.Log("apt has no package lists (run apt-get update): the runtime stage's packages were not looked up")
		return
	}
	for _, p := range pkgs {
		if c, err := policy(p); err != nil || c == "(none)" {
			t.Errorf("bookworm has no package %s (apt-cache policy: %q, %v)", p, c, err)
		}
	}
}
