package main

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kiln-run/kiln/imagebuild"
)

func writeProject(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const fullKilnYAML = `app: shop
config: {CURRENCY: EUR}
annotations:
  team: payments
fns:
  - name: pay
    runtime: python
    build: src
    format: json-http
    memory: 256
    cpus: 500m
    timeout: 10
    idle_timeout: 60
    config: {LEVEL: debug, PORT: 8080}
    annotations: {kiln.io/private: "true", limits: {rps: 5}}
    secrets: [db-password, api-key]
    max_concurrency: 1
    max_instances: 4
    min_warm: 1
    max_requests: 1000
    triggers:
      - name: pay
        source: /pay
      - name: nightly
        type: cron
        source: "@every 1h"
  - name: legacy
    image: registry.test/legacy:1
    cpus: 0.25
`

func TestLoadKilnYAML(t *testing.T) {
	dir := writeProject(t, map[string]string{"kiln.yaml": fullKilnYAML, "src/func.py": "x"})
	m, err := loadManifest(filepath.Join(dir, "kiln.yaml"), "")
	if err != nil {
		t.Fatal(err)
	}
	if m.App.Name != "shop" || m.App.Config["CURRENCY"] != "EUR" || m.App.Annotations["team"] != "payments" || len(m.Fns) != 2 {
		t.Fatalf("app %+v, %d fns", m.App, len(m.Fns))
	}
	pay := m.Fns[0]
	want := fnSpec{Name: "pay", Runtime: "python", Build: "src", Format: "json-http", Memory: 256, Timeout: 10, IdleTimeout: 60,
		Config:      map[string]string{"LEVEL": "debug", "PORT": "8080"},
		Annotations: map[string]any{"kiln.io/private": "true", "limits": map[string]any{"rps": 5}},
		Secrets:     []string{"db-password", "api-key"}, SecretsSet: true, Scaling: [4]int{1, 4, 1, 1000}}
	if pay.CPUs == nil || *pay.CPUs != 500 {
		t.Errorf("cpus %v", pay.CPUs)
	}
	got := pay
	got.CPUs, got.Triggers, got.line = nil, nil, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fn pay:\n%+v\nwant\n%+v", got, want)
	}
	if len(pay.Triggers) != 2 || pay.Triggers[0].Type != "http" || pay.Triggers[1].Source != "@every 1h" {
		t.Errorf("triggers %+v", pay.Triggers)
	}
	if l := m.Fns[1]; l.Image != "registry.test/legacy:1" || l.CPUs == nil || *l.CPUs != 250 || l.SecretsSet {
		t.Errorf("fn legacy %+v", l)
	}
}

// Every invalid file names the file and the line, and says what is wrong.
func TestKilnYAMLErrorsHaveLines(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"syntax", "app: a\nfns:\n  - name: x\n   runtime: go\n", "kiln.yaml:2: did not find expected"},
		{"unknown field", "app: a\nfns:\n  - name: x\n    image: i\n    memroy: 5\n", `kiln.yaml:5: unknown field memroy`},
		{"wrong type", "app: a\nfns:\n  - name: x\n    image: i\n    memory: lots\n", "kiln.yaml:5: cannot unmarshal !!str `lots` into a whole number"},
		{"bad cpus", "app: a\nfns:\n  - name: x\n    image: i\n    cpus: fast\n", `kiln.yaml:5: cpus "fast"`},
		{"no app", "fns:\n  - name: x\n    image: i\n", "kiln.yaml:1: app: required"},
		{"no name", "app: a\nfns:\n  - image: i\n", "kiln.yaml:3: fn: name: required"},
		{"nothing to run", "app: a\nfns:\n  - name: x\n", "kiln.yaml:3: fn x: give runtime"},
		{"bad runtime", "app: a\nfns:\n  - name: x\n    runtime: cobol\n", `kiln.yaml:3: fn x: unknown runtime "cobol"`},
		{"shell hot", "app: a\nfns:\n  - name: x\n    runtime: shell\n    format: http-stream\n", "kiln.yaml:3: fn x: the shell runtime speaks only the default format"},
		{"bad format", "app: a\nfns:\n  - name: x\n    image: i\n    format: grpc\n", `unknown format "grpc"`},
		{"dup fn", "app: a\nfns:\n  - name: x\n    image: i\n  - name: x\n    image: j\n", `kiln.yaml:5: fn "x" is named twice (also line 3)`},
		{"bad source", "app: a\nfns:\n  - name: x\n    image: i\n    triggers:\n      - name: t\n        source: nopath\n", "kiln.yaml:6: trigger t: source \"nopath\""},
		{"dup source", "app: a\nfns:\n  - name: x\n    image: i\n    triggers:\n      - {name: t, source: /p}\n      - {name: u, source: /p}\n", "kiln.yaml:7: trigger u: source /p is taken by another trigger (line 6)"},
		{"missing build dir", "app: a\nfns:\n  - name: x\n    runtime: go\n    build: nowhere\n", "build directory nowhere does not exist"},
		{"negative knob", "app: a\nfns:\n  - name: x\n    image: i\n    min_warm: -1\n", "min_warm must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeProject(t, map[string]string{"kiln.yaml": tt.yaml})
			_, err := loadManifest(filepath.Join(dir, "kiln.yaml"), "")
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.yaml)
			}
			msg := strings.ReplaceAll(err.Error(), filepath.Join(dir, "kiln.yaml"), "kiln.yaml")
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want it to contain %q", msg, tt.want)
			}
		})
	}
}

// An Fn func.yaml deploys unedited: its fields map onto a fn, its app
// comes from --app, ../app.yaml or the parent directory, and the fields
// kiln does not use are named, not silently dropped.
func TestLoadFuncYAML(t *testing.T) {
	fn := "schema_version: 20180708\nname: greet\nversion: 0.0.3\nruntime: python3.11\nbuild_image: fnproject/python:3.11-dev\n" +
		"run_image: fnproject/python:3.11\nentrypoint: /python/bin/fdk /function/func.py handler\nmemory: 256\ntimeout: 20\n" +
		"idle_timeout: 45\nconfig:\n  GREETING: hi\ntriggers:\n- name: greet\n  type: http\n  source: /greet\n"
	root := writeProject(t, map[string]string{"myapp/greet/func.yaml": fn, "myapp/greet/func.py": "x"})
	path := filepath.Join(root, "myapp", "greet", "func.yaml")
	m, err := loadManifest(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != "func.yaml" || m.App.Name != "myapp" || len(m.Fns) != 1 {
		t.Fatalf("%+v", m)
	}
	f := m.Fns[0]
	if f.Name != "greet" || f.Runtime != imagebuild.RuntimePython || f.Build != "." || f.Format != "http-stream" ||
		f.Memory != 256 || f.Timeout != 20 || f.IdleTimeout != 45 || f.Config["GREETING"] != "hi" ||
		len(f.Triggers) != 1 || f.Triggers[0].Source != "/greet" {
		t.Errorf("fn %+v", f)
	}
	notes := strings.Join(m.Notes, "\n")
	wantContains(t, "notes", notes, "parent directory's name", "ignoring", "entrypoint", "build_image", "http-stream")

	if err := os.WriteFile(filepath.Join(root, "myapp", "app.yaml"), []byte("name: fromfile\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m, err = loadManifest(path, ""); err != nil || m.App.Name != "fromfile" {
		t.Errorf("with ../app.yaml: %v %+v", err, m.App)
	}
	if m, err = loadManifest(path, "chosen"); err != nil || m.App.Name != "chosen" || !strings.Contains(strings.Join(m.Notes, " "), "--app") {
		t.Errorf("with --app: %v %+v", err, m)
	}

	bad := writeProject(t, map[string]string{"f/func.yaml": "name: j\nruntime: java\n"})
	_, err = loadManifest(filepath.Join(bad, "f", "func.yaml"), "")
	if err == nil || !strings.Contains(err.Error(), "func.yaml:2: runtime \"java\"") {
		t.Errorf("java: %v", err)
	}
	img := writeProject(t, map[string]string{"f/func.yaml": "name: d\nruntime: docker\nimage: registry.test/d:1\nformat: json\n"})
	m, err = loadManifest(filepath.Join(img, "f", "func.yaml"), "x")
	if err != nil || m.Fns[0].Image != "registry.test/d:1" || m.Fns[0].Runtime != "" || m.Fns[0].Format != "json" {
		t.Errorf("docker runtime: %v %+v", err, m)
	}
}

func planFor(t *testing.T, yaml string, st serverState, imgs map[string]fnImage, prune bool) []change {
	t.Helper()
	dir := writeProject(t, map[string]string{"kiln.yaml": yaml})
	m, err := loadManifest(filepath.Join(dir, "kiln.yaml"), "")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := planDeploy(m, st, imgs, prune)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func steps(ch []change) []string {
	out := make([]string, 0, len(ch))
	for _, c := range ch {
		out = append(out, c.Action+" "+c.Kind+" "+c.Name)
	}
	return out
}

const planYAML = `app: shop
config: {A: "1"}
fns:
  - name: pay
    image: pay:1
    format: json-http
    memory: 256
    config: {LEVEL: debug}
    secrets: [key]
    triggers:
      - {name: pay, source: /pay}
`

// matching is the state kilnd has after planYAML was deployed.
func matching() serverState {
	return serverState{
		App:      &appResource{ID: "a1", Name: "shop", Config: map[string]string{"A": "1"}},
		Fns:      []fnResource{{ID: "f1", Name: "pay", AppID: "a1", Image: "pay:1", Format: "json-http", Memory: 256, Timeout: 30, IdleTimeout: 30, Config: map[string]string{"LEVEL": "debug"}, Secrets: []string{"key"}}},
		Triggers: []triggerResource{{ID: "t1", Name: "pay", AppID: "a1", FnID: "f1", Type: "http", Source: "/pay"}},
	}
}

func TestPlanDeploy(t *testing.T) {
	imgs := map[string]fnImage{"pay": {Ref: "pay:1"}}

	// Nothing on kilnd: everything is created, in dependency order.
	got := steps(planFor(t, planYAML, serverState{}, imgs, false))
	if want := []string{"create app shop", "create fn pay", "create trigger pay"}; !reflect.DeepEqual(got, want) {
		t.Errorf("fresh: %v, want %v", got, want)
	}
	// A built image kilnd does not have yet is imported before the fn.
	built := map[string]fnImage{"pay": {Ref: "pay:1", Archive: "/tmp/x.tar", Digest: "sha256:abc"}}
	if got := steps(planFor(t, planYAML, serverState{}, built, false)); got[1] != "import image pay:1" {
		t.Errorf("with an import: %v", got)
	}

	// Deployed already: nothing to do, which the command prints as "no change".
	if got := planFor(t, planYAML, matching(), imgs, false); len(got) != 0 {
		t.Errorf("second run: %v", steps(got))
	}

	// One field changed: one update, with only that field in the body.
	st := matching()
	st.Fns[0].Memory = 128
	ch := planFor(t, planYAML, st, imgs, false)
	if len(ch) != 1 || ch[0].Action != "update" || !reflect.DeepEqual(ch[0].body, map[string]any{"memory": int64(256)}) {
		t.Errorf("memory change: %v %v", steps(ch), ch)
	} else if ch[0].Fields[0] != "memory 128 -> 256 MB" {
		t.Errorf("fields %v", ch[0].Fields)
	}

	// What the file does not name is left alone...
	st = matching()
	st.App.Config["OLD"] = "x"
	st.Fns[0].Config["EXTRA"] = "y"
	st.Fns[0].Annotations = map[string]any{"owner": "ops"}
	st.Fns = append(st.Fns, fnResource{ID: "f2", Name: "old", AppID: "a1", Image: "old:1"})
	st.Triggers = append(st.Triggers, triggerResource{ID: "t2", Name: "old", AppID: "a1", FnID: "f2", Type: "http", Source: "/old"})
	if got := planFor(t, planYAML, st, imgs, false); len(got) != 0 {
		t.Errorf("extra state without --prune: %v", steps(got))
	}
	// ...unless --prune: then it goes, triggers before their fns.
	ch = planFor(t, planYAML, st, imgs, true)
	if got, want := steps(ch), []string{"update app shop", "update fn pay", "delete trigger old", "delete fn old"}; !reflect.DeepEqual(got, want) {
		t.Errorf("prune: %v, want %v", got, want)
	}
	if !reflect.DeepEqual(ch[0].body, map[string]any{"config": map[string]string{"OLD": ""}}) {
		t.Errorf("prune app body %v", ch[0].body)
	}
	if !reflect.DeepEqual(ch[1].body, map[string]any{"config": map[string]string{"EXTRA": ""}, "annotations": map[string]any{"owner": nil}}) {
		t.Errorf("prune fn body %v", ch[1].body)
	}

	// A trigger that now belongs to another fn is replaced.
	st = matching()
	st.Fns = append(st.Fns, fnResource{ID: "f2", Name: "other", AppID: "a1", Image: "o:1"})
	st.Triggers[0].FnID = "f2"
	if got, want := steps(planFor(t, planYAML, st, imgs, false)), []string{"delete trigger pay", "create trigger pay"}; !reflect.DeepEqual(got, want) {
		t.Errorf("moved trigger: %v, want %v", got, want)
	}

	// Secrets compare as a set; an empty list clears them.
	st = matching()
	st.Fns[0].Secrets = []string{"key", "other"}
	ch = planFor(t, planYAML, st, imgs, false)
	if len(ch) != 1 || !reflect.DeepEqual(ch[0].body["secrets"], []string{"key"}) {
		t.Errorf("secrets: %v %v", steps(ch), ch)
	}
}

func TestPlanRefusesATakenSource(t *testing.T) {
	st := matching()
	st.Triggers[0].Name = "someone-elses"
	dir := writeProject(t, map[string]string{"kiln.yaml": planYAML})
	m, err := loadManifest(filepath.Join(dir, "kiln.yaml"), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = planDeploy(m, st, map[string]fnImage{"pay": {Ref: "pay:1"}}, false)
	if err == nil || !strings.Contains(err.Error(), "kiln.yaml:11: trigger pay: source /pay is held by trigger someone-elses") {
		t.Errorf("err = %v", err)
	}
	// With --prune the other trigger goes first, then this one is created.
	ch, err := planDeploy(m, st, map[string]fnImage{"pay": {Ref: "pay:1"}}, true)
	if err != nil || !reflect.DeepEqual(steps(ch), []string{"delete trigger someone-elses", "create trigger pay"}) {
		t.Errorf("prune: %v %v", err, steps(ch))
	}
}

// writeArchive makes an image archive naming ref, as kiln build does.
func writeArchive(t *testing.T, path, ref string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := imagebuild.WriteArchive(f, ref, imagebuild.Config{Entrypoint: []string{"/x"}}, []imagebuild.File{{Path: "x", Data: []byte(ref)}}); err != nil {
		t.Fatal(err)
	}
}

// deployYAML imports an archive, so the test builds nothing.
const deployYAML = `app: shop
fns:
  - name: pay
    archive: pay.tar
    memory: 64
    triggers:
      - {name: pay, source: /pay}
`

// The deploy command end to end against a fake kilnd that keeps state:
// created the first time, "no change" the second (the image is not even
// uploaded again), an edit is one update, --prune removes.
func TestDeployIsIdempotent(t *testing.T) {
	api := newStateAPI(t)
	dir := writeProject(t, map[string]string{"kiln.yaml": deployYAML})
	writeArchive(t, filepath.Join(dir, "pay.tar"), "registry.test/pay:1")
	file := filepath.Join(dir, "kiln.yaml")

	res := api.run(nil, "deploy", "-f", file)
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "first deploy", res.stdout, "app shop: created", "image registry.test/pay:1: imported", "fn pay: created (image registry.test/pay:1, format json-http (the file sets none), memory 64 MB)",
		"trigger pay: created (http /pay -> fn pay)", "endpoint "+api.srv.URL+"/t/shop/pay")
	if api.count("apps") != 1 || api.count("fns") != 1 || api.count("triggers") != 1 || api.imports != 1 {
		t.Fatalf("state: %d apps %d fns %d triggers, %d imports", api.count("apps"), api.count("fns"), api.count("triggers"), api.imports)
	}

	res = api.run(nil, "deploy", "-f", file)
	if res.code != 0 || res.stdout != "no change\n" || api.imports != 1 {
		t.Fatalf("second deploy: exit %d stdout %q stderr %q, %d imports", res.code, res.stdout, res.stderr, api.imports)
	}

	edited := strings.Replace(deployYAML, "memory: 64", "memory: 96", 1)
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	res = api.run(nil, "deploy", "-f", file, "--dry-run")
	if res.code != 0 || !strings.Contains(res.stdout, "fn pay: would be updated (memory 64 -> 96 MB)") {
		t.Fatalf("dry run: exit %d stdout %q", res.code, res.stdout)
	}
	res = api.run(nil, "deploy", "-f", file)
	if res.code != 0 || !strings.HasPrefix(res.stdout, "fn pay: updated (memory 64 -> 96 MB)\n") {
		t.Fatalf("edit: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}

	// A fn and trigger made by hand stay, until --prune.
	api.mu.Lock()
	api.fns["byhand"] = map[string]any{"id": "byhand", "name": "manual", "app_id": "a1", "image": "x:1"}
	api.mu.Unlock()
	if res = api.run(nil, "deploy", "-f", file); res.stdout != "no change\n" {
		t.Errorf("without --prune: %q", res.stdout)
	}
	res = api.run(nil, "deploy", "-f", file, "--prune")
	if res.code != 0 || !strings.Contains(res.stdout, "fn manual: deleted (pruned)") || api.count("fns") != 1 {
		t.Errorf("--prune: exit %d stdout %q, %d fns", res.code, res.stdout, api.count("fns"))
	}

	// -o json lists the changes for scripts.
	res = api.run(nil, "deploy", "-f", file, "-o", "json")
	wantContains(t, "json", res.stdout, `"changes": []`)
}

// A step kilnd refuses stops the deploy: what was done is listed, nothing
// after it is attempted, and a file kilnd would never see (invalid) changes
// nothing at all.
func TestDeployStopsAndReports(t *testing.T) {
	api := newStateAPI(t)
	dir := writeProject(t, map[string]string{"kiln.yaml": deployYAML})
	writeArchive(t, filepath.Join(dir, "pay.tar"), "registry.test/pay:1")
	api.fail = func(r *http.Request) bool { return r.Method == "POST" && r.URL.Path == "/v2/triggers" }
	res := api.run(nil, "deploy", "-f", filepath.Join(dir, "kiln.yaml"))
	if res.code != 1 {
		t.Fatalf("exit %d", res.code)
	}
	wantContains(t, "stderr", res.stderr, "changed before the failure", "app shop: created", "fn pay: created", "Error: create trigger: pay: injected failure")
	if strings.Contains(res.stderr, "trigger pay: created") {
		t.Error("reported the failed step as done")
	}

	bad := writeProject(t, map[string]string{"kiln.yaml": "app: other\nfns:\n  - name: x\n    image: i\n    memory: -5\n"})
	before := len(api.reqs)
	res = api.run(nil, "deploy", "-f", filepath.Join(bad, "kiln.yaml"))
	if res.code != 1 || !strings.Contains(res.stderr, "kiln.yaml:3: fn x: memory must be positive") || len(api.reqs) != before {
		t.Errorf("invalid file: exit %d stderr %q, %d requests", res.code, res.stderr, len(api.reqs)-before)
	}
}

// A built fn gets a name from its content: a rebuild of the same source
// changes nothing, and an edit gives a new image the fn is moved to.
func TestDeployBuildsByDigest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs busybox for the shell runtime")
	}
	api := newStateAPI(t)
	dir := writeProject(t, map[string]string{
		"kiln.yaml": "app: sh\nfns:\n  - name: echo\n    runtime: shell\n",
		"func.sh":   "cat\n",
	})
	res := api.run(nil, "deploy", "-f", filepath.Join(dir, "kiln.yaml"))
	if res.code != 0 || !strings.Contains(res.stdout, "image kiln.local/sh/echo:") || !strings.Contains(res.stdout, "format default (the file sets none)") {
		t.Fatalf("exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	if res = api.run(nil, "deploy", "-f", filepath.Join(dir, "kiln.yaml")); res.stdout != "no change\n" {
		t.Fatalf("rebuild: %q %q", res.stdout, res.stderr)
	}
	if err := os.WriteFile(filepath.Join(dir, "func.sh"), []byte("echo changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = api.run(nil, "deploy", "-f", filepath.Join(dir, "kiln.yaml"))
	if res.code != 0 || !strings.Contains(res.stdout, "fn echo: updated (image kiln.local/sh/echo:") || !strings.Contains(res.stderr, "removed the image fn echo ran before") {
		t.Errorf("edit: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
}
