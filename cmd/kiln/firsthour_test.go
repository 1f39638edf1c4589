package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-run/kiln/imagebuild"
)

var update = flag.Bool("update", false, "rewrite images/*/example from kiln init's templates")

// Contexts are stored 0600, switch the server, and give way to the
// environment and flags; tokens are never printed.
func TestContexts(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	cfgHome := t.TempDir()
	vars := map[string]string{"XDG_CONFIG_HOME": cfgHome}
	run := func(args ...string) result { return runWithEnv(t, vars, nil, args...) }

	if res := run("context", "create", "lab", "--api-url", api.srv.URL, "--token", "s3cret"); res.code != 0 || !strings.Contains(res.stdout, "current") {
		t.Fatalf("create: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if res := run("context", "create", "prod", "--api-url", "http://127.0.0.1:1"); res.code != 0 {
		t.Fatalf("create prod: %d %q", res.code, res.stderr)
	}
	path := filepath.Join(cfgHome, "kiln", "config.yaml")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file %v mode %v", err, fi.Mode())
	}

	// The first context became current: commands go to it, with its token.
	res := run("apps", "list")
	if res.code != 0 || !strings.Contains(res.stdout, "myapp") {
		t.Fatalf("apps list via context: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if got := api.requests("GET", "/v2/apps")[0].Header.Get("Authorization"); got != "Bearer s3cret" {
		t.Errorf("Authorization = %q", got)
	}

	res = run("context", "list")
	if strings.Contains(res.stdout, "s3cret") || !strings.Contains(res.stdout, "*        lab") || !strings.Contains(res.stdout, "set") {
		t.Errorf("list:\n%s", res.stdout)
	}
	res = run("context", "list", "-o", "json")
	if strings.Contains(res.stdout, "s3cret") || !strings.Contains(res.stdout, `"token_set": true`) {
		t.Errorf("list json:\n%s", res.stdout)
	}

	// use switches; the unreachable server's error names the context.
	if res = run("context", "use", "prod"); res.code != 0 {
		t.Fatalf("use: %q", res.stderr)
	}
	res = run("apps", "list")
	wantContains(t, "unreachable", res.stderr, "is kilnd running? set KILN_API_URL (now http://127.0.0.1:1, from context prod)")
	// --context picks one for a single command; KILN_API_URL beats both.
	if res = run("--context", "lab", "apps", "list"); res.code != 0 {
		t.Errorf("--context lab: %q", res.stderr)
	}
	vars["KILN_API_URL"] = api.srv.URL
	if res = run("apps", "list"); res.code != 0 {
		t.Errorf("KILN_API_URL over the context: %q", res.stderr)
	}
	// The context's token is not sent to a server the context does not name.
	if got := api.requests("GET", "/v2/apps"); got[len(got)-1].Header.Get("Authorization") != "" {
		t.Error("prod's context sent lab's token... or any token to another server")
	}
	delete(vars, "KILN_API_URL")
	if res = run("--context", "nope", "apps", "list"); res.code != 1 || !strings.Contains(res.stderr, `no context "nope"`) {
		t.Errorf("unknown context: %q", res.stderr)
	}
	if res = run("context", "delete", "prod"); res.code != 0 {
		t.Errorf("delete: %q", res.stderr)
	}

	// A broken file is reported with its line.
	if err := os.WriteFile(path, []byte("current: lab\ncontexts:\n  lab: {api_url: x, tokn: y}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = run("apps", "list")
	wantContains(t, "bad config", res.stderr, path+":3: unknown field tokn")
}

func TestUnreachableHint(t *testing.T) {
	res := runWithEnv(t, map[string]string{"KILN_API_URL": "http://127.0.0.1:1"}, nil, "apps", "list")
	if res.code != 1 {
		t.Fatalf("exit %d", res.code)
	}
	wantContains(t, "stderr", res.stderr, "cannot reach kilnd", "is kilnd running? set KILN_API_URL (now http://127.0.0.1:1, from KILN_API_URL)")
	res = runWithEnv(t, nil, nil, "apps", "list", "--api-url", "http://127.0.0.1:1")
	wantContains(t, "stderr", res.stderr, "(now http://127.0.0.1:1, from --api-url)")
}

// -o yaml is the server's object as YAML, in the server's key order, with
// strings that would read as numbers or booleans quoted.
func TestOutputYAML(t *testing.T) {
	api := newFakeAPI(t)
	api.handle("GET /v2/apps", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"items":[{"name":"myapp","id":"app1","config":{"PORT":"8080","DEBUG":"true"},"annotations":{"n":1,"list":[1,"a"]}}],"next_cursor":""}`)
	})
	res := api.run(nil, "apps", "get", "myapp", "-o", "yaml")
	if res.code != 0 {
		t.Fatalf("exit %d %q", res.code, res.stderr)
	}
	want := "name: myapp\nid: app1\nconfig:\n  PORT: \"8080\"\n  DEBUG: \"true\"\nannotations:\n  n: 1\n  list:\n    - 1\n    - a\n"
	if res.stdout != want {
		t.Errorf("yaml:\n%s\nwant:\n%s", res.stdout, want)
	}
	var back map[string]any
	if err := yaml.Unmarshal([]byte(res.stdout), &back); err != nil || back["config"].(map[string]any)["PORT"] != "8080" {
		t.Errorf("round trip: %v %v", err, back)
	}
	res = api.run(nil, "apps", "list", "-o", "yaml")
	if !strings.HasPrefix(res.stdout, "items:\n  - name: myapp\n") {
		t.Errorf("list yaml:\n%s", res.stdout)
	}
}

func TestAnnotationFlags(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /v2/apps", func(w http.ResponseWriter, r *http.Request) { writeJSONBody(w, 200, decodeBody(t, mustRead(r))) })
	api.handle("PUT /v2/fns/fn1", func(w http.ResponseWriter, r *http.Request) { writeJSONBody(w, 200, decodeBody(t, mustRead(r))) })
	res := api.run(nil, "apps", "create", "a", "--annotation", "team=pay", "--annotation", `limits={"rps":5}`, "--annotation", "kiln.io/private=true")
	if res.code != 0 {
		t.Fatalf("create: %q", res.stderr)
	}
	want := map[string]any{"name": "a", "annotations": map[string]any{"team": "pay", "limits": map[string]any{"rps": 5.0}, "kiln.io/private": "true"}}
	if got := decodeBody(t, api.only("POST", "/v2/apps").Body); !reflect.DeepEqual(got, want) {
		t.Errorf("body %v, want %v", got, want)
	}
	res = api.run(nil, "fns", "update", "myapp", "hello", "--annotation", "team=", "--secret", "db", "--min-warm", "2")
	if res.code != 0 {
		t.Fatalf("fn update: %q", res.stderr)
	}
	want = map[string]any{"annotations": map[string]any{"team": ""}, "secrets": []any{"db"}, "min_warm": 2.0}
	if got := decodeBody(t, api.only("PUT", "/v2/fns/fn1").Body); !reflect.DeepEqual(got, want) {
		t.Errorf("fn body %v, want %v", got, want)
	}
	if res = api.run(nil, "apps", "create", "b", "--annotation", `x={bad`); res.code != 1 || !strings.Contains(res.stderr, "looks like JSON") {
		t.Errorf("bad JSON: %q", res.stderr)
	}
}

// Without --format a fn is hot, and says so; default gets a warning.
func TestFnsCreateFormat(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /v2/fns", func(w http.ResponseWriter, r *http.Request) { writeJSONBody(w, 200, decodeBody(t, mustRead(r))) })
	res := api.run(nil, "fns", "create", "myapp", "f", "img:1")
	if res.code != 0 || decodeBody(t, api.requests("POST", "/v2/fns")[0].Body)["format"] != "json-http" || !strings.Contains(res.stderr, "using json-http") {
		t.Errorf("no format: %d %q", res.code, res.stderr)
	}
	res = api.run(nil, "fns", "create", "myapp", "g", "img:1", "--format", "default")
	if res.code != 0 || !strings.Contains(res.stderr, "starts a container per call") {
		t.Errorf("default: %d %q", res.code, res.stderr)
	}
	if res = api.run(nil, "fns", "create", "myapp", "h", "img:1", "--format", "grpc"); res.code != 1 || !strings.Contains(res.stderr, "bad --format") {
		t.Errorf("grpc: %q", res.stderr)
	}
}

func TestLogs(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("GET /v2/apps/app1/logs", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Header.Get("Accept") != ndjson || q.Get("fn_id") != "fn1" || q.Get("follow") != "true" {
			t.Errorf("request %v %v", r.Header, q)
		}
		since, err := time.Parse(time.RFC3339Nano, q.Get("since"))
		if err != nil || time.Since(since) < 9*time.Minute || time.Since(since) > 11*time.Minute {
			t.Errorf("since %q", q.Get("since"))
		}
		w.Header().Set("Content-Type", ndjson)
		fmt.Fprintln(w, `{"time":"2026-01-02T03:04:05.123456789Z","app_id":"app1","fn_id":"fn1","fn":"hello","call_id":"c1","line":"first"}`)
		w.(http.Flusher).Flush()
		fmt.Fprintln(w, `{"time":"2026-01-02T03:04:06Z","app_id":"app1","fn_id":"fn1","fn":"hello","call_id":"c2","line":"second"}`)
	})
	res := api.run(nil, "logs", "myapp", "hello", "-f", "--since", "10m")
	if res.code != 0 {
		t.Fatalf("exit %d %q", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	first := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC).Local().Format("2006-01-02T15:04:05.000Z07:00")
	if len(lines) != 2 || lines[0] != first+" hello c1 first" || !strings.HasSuffix(lines[1], " hello c2 second") {
		t.Errorf("logs:\n%s", res.stdout)
	}
	res = api.run(nil, "logs", "myapp", "hello", "-f", "--since", "10m", "-o", "json")
	if !strings.HasPrefix(res.stdout, `{"time":"2026-01-02T03:04:05.123456789Z"`) {
		t.Errorf("json:\n%s", res.stdout)
	}
	if res = api.run(nil, "logs", "myapp", "--since", "yesterday"); res.code != 1 || !strings.Contains(res.stderr, "bad --since") {
		t.Errorf("bad since: %q", res.stderr)
	}
}

// A kilnd without the logs or secrets routes gets a clear word, not
// "not found" as if the app were missing.
func TestMissingRoutesSaySo(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	for _, p := range []string{"GET /v2/apps/app1/logs", "GET /v2/apps/app1/secrets", "PUT /v2/apps/app1/secrets/k", "DELETE /v2/apps/app1/secrets/k"} {
		api.handle(p, http.NotFound)
	}
	for _, args := range [][]string{
		{"logs", "myapp"},
		{"secrets", "list", "myapp"},
		{"secrets", "create", "myapp", "k", "--from-literal", "v"},
		{"secrets", "delete", "myapp", "k"},
	} {
		res := api.run(nil, args...)
		if res.code != 1 || !strings.Contains(res.stderr, "this kilnd has no") {
			t.Errorf("%v: exit %d stderr %q", args, res.code, res.stderr)
		}
	}
	// kilnd's own 404 (a JSON message) is passed on as it is.
	api2 := newFakeAPI(t)
	api2.withApp()
	api2.json("DELETE /v2/apps/app1/secrets/k", 404, map[string]any{"message": `secret "k" not found`, "code": 404})
	if res := api2.run(nil, "secrets", "delete", "myapp", "k"); res.stderr != "Error: secret \"k\" not found\n" {
		t.Errorf("real 404: %q", res.stderr)
	}
}

// The value goes to kilnd once, exactly, and never to stdout or stderr.
func TestSecrets(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	var got []string
	api.handle("PUT /v2/apps/app1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		_ = json.Unmarshal(mustRead(r), &b)
		got = append(got, b["value"])
		writeJSONBody(w, 200, map[string]any{"name": r.PathValue("name"), "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})
	})
	api.json("GET /v2/apps/app1/secrets", 200, map[string]any{"items": []any{map[string]any{"name": "db", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-02T00:00:00Z"}}, "next_cursor": ""})
	api.json("DELETE /v2/apps/app1/secrets/db", 200, map[string]any{"message": "deleted"})

	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file-\u00e9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"from-stdin", []string{"secrets", "create", "myapp", "db"}, "from-stdin"},
		{"", []string{"secrets", "create", "myapp", "db", "--from-file", file}, "from-file-\u00e9\n"},
		{"", []string{"secrets", "create", "myapp", "db", "--from-literal", "lit-value"}, "lit-value"},
	} {
		res := api.run(strings.NewReader(tc.stdin), tc.args...)
		if res.code != 0 {
			t.Fatalf("%v: %q", tc.args, res.stderr)
		}
		if strings.Contains(res.stdout+res.stderr, strings.TrimSpace(tc.want)) {
			t.Errorf("%v printed the value: %q %q", tc.args, res.stdout, res.stderr)
		}
		if got[len(got)-1] != tc.want {
			t.Errorf("%v sent %q, want %q", tc.args, got[len(got)-1], tc.want)
		}
		if strings.Contains(strings.Join(tc.args, " "), "from-literal") && !strings.Contains(res.stderr, "shell history") {
			t.Errorf("no warning for --from-literal: %q", res.stderr)
		}
	}
	if res := api.run(bytes.NewReader([]byte{0xff, 0xfe}), "secrets", "create", "myapp", "bin"); res.code != 1 || !strings.Contains(res.stderr, "not text") {
		t.Errorf("binary: %q", res.stderr)
	}
	if res := api.run(nil, "secrets", "create", "myapp", "empty"); res.code != 1 || !strings.Contains(res.stderr, "empty") {
		t.Errorf("empty: %q", res.stderr)
	}
	res := api.run(nil, "secrets", "list", "myapp")
	if res.code != 0 || !strings.Contains(res.stdout, "db") {
		t.Errorf("list: %q", res.stdout)
	}
	if res = api.run(nil, "secrets", "delete", "myapp", "db"); res.code != 0 || res.stdout != "secret db deleted\n" {
		t.Errorf("delete: %q %q", res.stdout, res.stderr)
	}
}

// App and fn names complete from kilnd.
func TestCompletion(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	res := api.run(nil, "__complete", "fns", "get", "")
	if !strings.HasPrefix(res.stdout, "myapp\n") {
		t.Errorf("apps: %q", res.stdout)
	}
	res = api.run(nil, "__complete", "invoke", "myapp", "he")
	if !strings.HasPrefix(res.stdout, "hello\n") {
		t.Errorf("fns: %q", res.stdout)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if res := api.run(nil, "completion", sh); res.code != 0 || !strings.Contains(res.stdout, "kiln") {
			t.Errorf("completion %s: %d %q", sh, res.code, res.stderr)
		}
	}
}

// kiln init writes a project kiln deploy accepts as it stands, with a hot
// format where the runtime has one.
func TestInit(t *testing.T) {
	for _, rt := range imagebuild.Runtimes() {
		t.Run(rt, func(t *testing.T) {
			wd, _ := os.Getwd()
			dir := t.TempDir()
			if err := os.Chdir(dir); err != nil {
				t.Fatal(err)
			}
			defer os.Chdir(wd)
			res := runWithEnv(t, map[string]string{"KILN_SOURCE": filepath.Join(wd, "..", "..")}, nil, "init", "--runtime", rt, "hello")
			if res.code != 0 {
				t.Fatalf("exit %d %q", res.code, res.stderr)
			}
			m, err := loadManifest(filepath.Join("hello", "kiln.yaml"), "")
			if err != nil {
				t.Fatal(err)
			}
			f := m.Fns[0]
			wantFormat := "http-stream"
			if rt == imagebuild.RuntimeShell {
				wantFormat = "default"
			}
			if m.App.Name != "hello" || f.Name != "hello" || f.Runtime != rt || f.Format != wantFormat || f.Memory != 128 || f.Timeout != 30 ||
				len(f.Triggers) != 1 || f.Triggers[0].Source != "/hello" {
				t.Errorf("kiln.yaml: %+v %+v", m.App, f)
			}
			if got, err := imagebuild.DetectRuntime("hello"); err != nil || got != rt {
				t.Errorf("the directory reads as %q (%v)", got, err)
			}
			readme, _ := os.ReadFile(filepath.Join("hello", "README.md"))
			wantContains(t, "README", string(readme), "kiln deploy", "kiln invoke hello hello")
			if rt == imagebuild.RuntimeGo {
				mod, _ := os.ReadFile(filepath.Join("hello", "go.mod"))
				wantContains(t, "go.mod", string(mod), "module hello", "replace github.com/kiln-run/kiln => ")
			}
			if res := runWithEnv(t, nil, nil, "init", "--runtime", rt, "hello"); res.code != 1 || !strings.Contains(res.stderr, "exists already") {
				t.Errorf("second init: %q", res.stderr)
			}
		})
	}
	if res := runWithEnv(t, nil, nil, "init", "--runtime", "shell", "--format", "json", filepath.Join(t.TempDir(), "x")); res.code != 1 || !strings.Contains(res.stderr, "only the default format") {
		t.Errorf("shell json: %q", res.stderr)
	}
}

// images/<runtime>/example is what kiln init makes, so the two cannot
// drift; go test -run TestInitExamplesUpToDate -update rewrites them.
func TestInitExamplesUpToDate(t *testing.T) {
	for _, rt := range []string{imagebuild.RuntimePython, imagebuild.RuntimeNode, imagebuild.RuntimeShell} {
		format := "http-stream"
		if rt == imagebuild.RuntimeShell {
			format = "default"
		}
		files, err := initFiles(initData{Name: "example", App: "example", Runtime: rt, Format: format})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("..", "..", "images", rt, "example")
		for name, want := range files {
			path := filepath.Join(dir, name)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s differs from kiln init's template (%v): go test ./cmd/kiln -run TestInitExamplesUpToDate -update", path, err)
			}
		}
	}
}
