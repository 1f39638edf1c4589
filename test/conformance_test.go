package test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// conformanceRuntimes are the runtimes with a conformance function, and
// the formats each speaks. The shell runtime is a plain script: default
// only.
var conformanceRuntimes = []struct {
	runtime string
	dir     string
	formats []string
}{
	{"go", "images/go/conformance", []string{"default", "http", "json", "json-http", "cloudevent"}},
	{"python", "images/python/conformance", []string{"default", "http", "json", "json-http"}},
	{"node", "images/node/conformance", []string{"default", "http", "json", "json-http"}},
	{"shell", "images/shell/conformance", []string{"default"}},
}

// TestConformance builds every runtime's conformance function with
// `kiln build --output`, imports it and calls it in every format it
// supports: each must answer the same JSON. The python and node bases are
// built with debootstrap the first time and reused from the build cache
// ($KILN_CACHE_DIR, else the default cache dir) after that, so only the
// first run on a machine pays minutes for them.
func TestConformance(t *testing.T) {
	k := startKilnd(t)
	tars := t.TempDir()
	for _, rt := range conformanceRuntimes {
		ref := "kiln/conformance-" + rt.runtime + ":test"
		tar := filepath.Join(tars, rt.runtime+".tar")
		start := time.Now()
		cmd := exec.Command(env.kilnBin, "build", filepath.Join(repoRoot(), rt.dir),
			"--tag", ref, "--runtime", rt.runtime, "--output", tar)
		cmd.Env = os.Environ()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kiln build %s: %v\n%s", rt.runtime, err, out)
		}
		took := time.Since(start).Round(100 * time.Millisecond)
		switch {
		case rt.runtime != "python" && rt.runtime != "node":
			t.Logf("built %s in %s", rt.runtime, took)
		case strings.Contains(string(out), "using cached"):
			t.Logf("built %s in %s on the cached base", rt.runtime, took)
		default:
			t.Logf("built %s in %s, building its base first:\n%s", rt.runtime, took, out)
		}
		f, err := os.Open(tar)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := k.do("POST", "/v2/images/import", f, nil)
		f.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("import %s: %d %s", rt.runtime, resp.StatusCode, body)
		}

		for _, format := range rt.formats {
			t.Run(rt.runtime+"/"+format, func(t *testing.T) {
				d := k.deploy("conformance", rt.runtime+"-"+format, ref, format,
					map[string]any{"config": map[string]string{"ENV1": "env1-" + rt.runtime}})
				calls := []struct {
					body    string
					header  http.Header
					payload any
					hdr     any
				}{
					{`{"hello": ["kiln", 1]}`, http.Header{"X-Test": {"x-test-value"}, "Content-Type": {"application/json"}},
						map[string]any{"hello": []any{"kiln", 1.0}}, "x-test-value"},
					{"not json at all", http.Header{"Content-Type": {"text/plain"}}, "not json at all", nil},
				}
				for i, c := range calls {
					start := time.Now()
					resp, body := k.do("POST", "/t/conformance/"+d.Fn, strings.NewReader(c.body), c.header)
					if resp.StatusCode != 200 {
						t.Fatalf("call %d: %d %s", i, resp.StatusCode, body)
					}
					var got map[string]any
					if err := json.Unmarshal(body, &got); err != nil {
						t.Fatalf("call %d: answer %q is not JSON: %v", i, body, err)
					}
					want := map[string]any{"normal": "Hello World!", "env1": "env1-" + rt.runtime, "payload": c.payload, "header": c.hdr}
					if !reflect.DeepEqual(got, want) {
						t.Errorf("call %d: got %v, want %v", i, got, want)
					}
					if ct := resp.Header.Get("Content-Type"); format != "default" && !strings.HasPrefix(ct, "application/json") {
						t.Errorf("call %d: Content-Type %q", i, ct)
					}
					t.Logf("call %d answered in %s", i, time.Since(start).Round(time.Millisecond))
				}
			})
		}
	}
}
