package test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-run/kiln/imagebuild"
)

// imageList returns kilnd's images by name.
func (k *kilnd) imageList() map[string]string {
	k.t.Helper()
	var list struct {
		Items []struct{ Name, Digest string }
	}
	k.doJSON("GET", "/v2/images", nil, &list)
	out := map[string]string{}
	for _, im := range list.Items {
		out[im.Name] = im.Digest
	}
	return out
}

// TestImagesImportedRunsAsFn: an archive uploaded to /v2/images/import is
// listed and runs as a fn.
func TestImagesImportedRunsAsFn(t *testing.T) {
	k := startKilnd(t)
	if _, ok := k.imageList()[exampleImage]; !ok {
		t.Fatalf("imported %s not listed: %v", exampleImage, k.imageList())
	}
	d := k.deploy("images", "imported", exampleImage, "json-http", nil)
	resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("import"), nil)
	if resp.StatusCode != 200 || string(body) != "Hello, import!" {
		t.Fatalf("call: %d %q", resp.StatusCode, body)
	}
}

// TestPullFromRegistry: an image pushed to a loopback registry is pulled
// through the API, with progress when asked for ndjson, and runs as a fn.
func TestPullFromRegistry(t *testing.T) {
	reg := startRegistry(t)
	img := reg.pushExample("team/hello", "v1")
	k := startKilnd(t, withArgs("--insecure-registries", reg.host))

	req, _ := http.NewRequest("POST", k.url+"/v2/images/pull", strings.NewReader(`{"ref":"`+img.Ref+`"}`))
	req.Header.Set("Accept", "application/x-ndjson")
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := k.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("pull: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	t.Logf("pull took %s, %d lines: %v", time.Since(start).Round(time.Millisecond), len(lines), lines)
	if len(lines) < 2 {
		t.Fatalf("want progress lines and a result, got %v", lines)
	}
	last := lines[len(lines)-1]
	if last["image"] != img.Ref || last["digest"] != img.Digest {
		t.Fatalf("result %v, want image %s digest %s", last, img.Ref, img.Digest)
	}
	done := lines[len(lines)-2]
	if done["status"] != "done" || done["layers_done"] != float64(img.Layers) || done["layers_total"] != float64(img.Layers) ||
		done["bytes"] != done["total"] || done["total"].(float64) <= 0 {
		t.Errorf("last progress %v, want done with every layer and byte", done)
	}
	if got := k.imageList()[img.Ref]; got != img.Digest {
		t.Fatalf("pulled image listed with digest %q, want %s", got, img.Digest)
	}

	d := k.deploy("images", "pulled", img.Ref, "json-http", nil)
	resp2, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("registry"), nil)
	if resp2.StatusCode != 200 || string(body) != "Hello, registry!" {
		t.Fatalf("call: %d %q", resp2.StatusCode, body)
	}

	// Without ndjson the answer comes once, at the end.
	var plain map[string]string
	k.doJSON("POST", "/v2/images/pull", map[string]string{"ref": img.Ref}, &plain)
	if plain["image"] != img.Ref || plain["digest"] != img.Digest {
		t.Errorf("plain pull answered %v", plain)
	}
}

func TestPullErrors(t *testing.T) {
	reg := startRegistry(t)
	reg.pushExample("team/hello", "v1")
	dead := freeAddr(t)
	k := startKilnd(t, withArgs("--insecure-registries", reg.host+","+dead))
	tests := []struct {
		name, ref string
		status    int
		msg       string
	}{
		{"unknown tag", reg.host + "/team/hello:nope", 404, "no such image"},
		{"unknown repo", reg.host + "/team/nothing:v1", 404, "no such image"},
		{"registry down", dead + "/team/hello:v1", 502, "unreachable"},
		{"bad reference", "Not A Ref", 400, "invalid"},
	}
	for _, tt := range tests {
		for _, accept := range []string{"application/json", "application/x-ndjson"} {
			resp, body := k.do("POST", "/v2/images/pull", strings.NewReader(`{"ref":"`+tt.ref+`"}`),
				http.Header{"Accept": {accept}, "Content-Type": {"application/json"}})
			var e struct {
				Message string
				Code    int
			}
			_ = json.Unmarshal(body, &e)
			if resp.StatusCode != tt.status || e.Code != tt.status || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("%s (%s): %d %s; want %d with %q", tt.name, accept, resp.StatusCode, body, tt.status, tt.msg)
			}
		}
	}
	// A fn whose image cannot be pulled fails its calls with the reason.
	for _, format := range []string{"json-http", "default"} {
		d := k.deploy("images", "nopull-"+format, reg.host+"/team/hello:nope", format, nil)
		resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("x"), nil)
		if resp.StatusCode == 200 || !strings.Contains(string(body), "no such image") {
			t.Errorf("%s call of a fn with a missing image: %d %s", format, resp.StatusCode, body)
		}
		t.Logf("%s call of a fn with a missing image: %d %s", format, resp.StatusCode, body)
	}
}

// TestPullOnFirstCall: a fn whose image kilnd does not have pulls it on
// its first call, and ten concurrent first calls share one pull.
func TestPullOnFirstCall(t *testing.T) {
	reg := startRegistry(t)
	img := reg.pushExample("team/lazy", "v1")
	k := startKilnd(t, withArgs("--insecure-registries", reg.host))
	if _, ok := k.imageList()[img.Ref]; ok {
		t.Fatal("image present before the first call")
	}
	for _, format := range []string{"json-http", "default"} {
		d := k.deploy("lazy", "lazy-"+format, img.Ref, format, nil)
		var ok atomic.Int32
		start := time.Now()
		parallel(10, func(i int) {
			req, _ := http.NewRequest("POST", k.url+"/invoke/"+d.FnID, strings.NewReader("first"))
			resp, err := k.http.Do(req)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && body.String() == "Hello, first!" {
				ok.Add(1)
			} else {
				t.Errorf("call %d: %d %q", i, resp.StatusCode, body.String())
			}
		})
		t.Logf("%s: 10 concurrent first calls answered in %s", format, time.Since(start).Round(time.Millisecond))
		if ok.Load() != 10 {
			t.Fatalf("%s: %d of 10 calls succeeded", format, ok.Load())
		}
	}
	// One pull: kilnd logged it once, and the registry resolved the tag once.
	if n := strings.Count(k.log(), `msg="pulling image"`); n != 1 {
		t.Errorf("kilnd logged %d pulls, want 1", n)
	}
	resolves := reg.requests("HEAD", "/v2/team/lazy/manifests/v1") + reg.requests("GET", "/v2/team/lazy/manifests/v1")
	if resolves != 1 {
		t.Errorf("registry saw %d requests for the tag, want 1", resolves)
	}
	if got := k.imageList()[img.Ref]; got != img.Digest {
		t.Errorf("after the calls the image is listed with %q, want %s", got, img.Digest)
	}
}

// TestImagesDeleteRefusedWhileUsed: DELETE answers 409 while a fn uses the
// image, whichever way the fn spells it, and removes it once none does.
func TestImagesDeleteRefusedWhileUsed(t *testing.T) {
	k := startKilnd(t)
	d := k.deploy("del", "user", exampleImage, "json-http", nil)
	resp, body := k.do("DELETE", "/v2/images/"+exampleImage, nil, nil)
	var e struct{ Message string }
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != 409 || !strings.Contains(e.Message, `in use by fn "user"`) {
		t.Fatalf("delete of a used image: %d %s", resp.StatusCode, body)
	}
	if _, ok := k.imageList()[exampleImage]; !ok {
		t.Fatal("a refused delete removed the image")
	}
	k.doJSON("DELETE", "/v2/fns/"+d.FnID, nil, nil)
	resp, body = k.do("DELETE", "/v2/images/"+exampleImage, nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), exampleImage) {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	if _, ok := k.imageList()[exampleImage]; ok {
		t.Fatal("deleted image still listed")
	}
	resp, body = k.do("DELETE", "/v2/images/"+exampleImage, nil, nil)
	if resp.StatusCode != 404 {
		t.Fatalf("second delete: %d %s", resp.StatusCode, body)
	}
	// The other image stays, and its fns still run.
	d = k.deploy("del", "other", testfnImage, "json-http", nil)
	resp, body = k.do("POST", "/invoke/"+d.FnID, strings.NewReader("still here"), nil)
	if resp.StatusCode != 200 || string(body) != "still here" {
		t.Fatalf("call after deleting another image: %d %q", resp.StatusCode, body)
	}
}

// TestImagesBuiltWithCLI: `kiln build` of the Go example imports it into
// kilnd, and the image runs as a fn.
func TestImagesBuiltWithCLI(t *testing.T) {
	k := startKilnd(t)
	const ref = "kiln/cli-built:1"
	cmd := exec.Command(env.kilnBin, "build", filepath.Join(repoRoot(), "images/go/example"), "--tag", ref)
	cmd.Env = append(os.Environ(), "KILN_API_URL="+k.url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kiln build: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "imported "+ref) {
		t.Errorf("kiln build said:\n%s", out)
	}
	d := k.deploy("built", "built", ref, "http", nil)
	resp, body := k.do("POST", "/invoke/"+d.FnID, strings.NewReader("cli"), nil)
	if resp.StatusCode != 200 || string(body) != "Hello, cli!" {
		t.Fatalf("call: %d %q", resp.StatusCode, body)
	}

	// The CLI lists, pulls and removes through the same API.
	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(env.kilnBin, args...)
		c.Env = append(os.Environ(), "KILN_API_URL="+k.url)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("kiln %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("images", "list"); !strings.Contains(out, ref) {
		t.Errorf("kiln images list:\n%s", out)
	}
	k.doJSON("DELETE", "/v2/fns/"+d.FnID, nil, nil)
	if out := run("images", "rm", ref); !strings.Contains(out, "deleted image "+ref) {
		t.Errorf("kiln images rm:\n%s", out)
	}
}

// TestPullWithCLI: `kiln images pull` shows progress and the result.
func TestPullWithCLI(t *testing.T) {
	reg := startRegistry(t)
	img := reg.pushExample("team/cli", "v2")
	k := startKilnd(t, withArgs("--insecure-registries", reg.host))
	cmd := exec.Command(env.kilnBin, "images", "pull", img.Ref)
	cmd.Env = append(os.Environ(), "KILN_API_URL="+k.url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kiln images pull: %v\n%s", err, stderr.String())
	}
	if stdout.String() != "pulled "+img.Ref+" "+img.Digest+"\n" {
		t.Errorf("stdout %q", stdout.String())
	}
	if !strings.Contains(stderr.String(), "pulling "+img.Ref+": done") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// --- a loopback registry for the pull tests ---

// registryBin is Debian's docker-registry (the distribution registry);
// scripts/install-deps.sh installs it.
const registryBin = "/usr/bin/docker-registry"

// registry is a docker-registry serving plain HTTP on loopback with its
// own storage, for one test. Its access log records every request.
type registry struct {
	t    *testing.T
	host string // 127.0.0.1:port
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startRegistry(t *testing.T) *registry {
	t.Helper()
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%s missing: run scripts/install-deps.sh (Debian package docker-registry)", registryBin)
	}
	dir := t.TempDir()
	r := &registry{t: t, host: freeAddr(t), log: &syncBuffer{}, done: make(chan struct{})}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "storage"), r.host)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(registryBin, "serve", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + r.host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r
			}
		}
		select {
		case <-r.done:
			t.Fatalf("docker-registry exited: %s", r.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry not up after 15s: %s", r.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the registry by its PID, never by name.
func (r *registry) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	if r.t.Failed() {
		r.t.Logf("registry log:\n%s", r.log.String())
	}
}

// requests counts the access-log lines of method on path.
func (r *registry) requests(method, path string) int {
	return strings.Count(r.log.String(), `"`+method+" "+path+" HTTP/")
}

// exampleArchive is the Go example function's image archive, built once
// per test binary: pushes vary its config, not its compile.
var exampleArchive = sync.OnceValues(func() ([]byte, error) {
	var buf bytes.Buffer
	_, err := imagebuild.GoFunctionImage(context.Background(), &buf, filepath.Join(repoRoot(), "images/go/example"), "kiln/example:push", nil, io.Discard)
	return buf.Bytes(), err
})

// pushed is what a push stored in the registry.
type pushed struct {
	Ref    string // host/repo:tag
	Digest string // manifest digest
	Layers int
}

// pushExample pushes the example image to repo:tag with a config label
// unique to this push, so its manifest is new to every containerd
// namespace and a pull cannot be satisfied from content another test left.
// It speaks the registry API by hand: monolithic blob uploads, then the
// manifest.
func (r *registry) pushExample(repo, tag string) pushed {
	t := r.t
	t.Helper()
	archive, err := exampleArchive()
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	var index ocispec.Index
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		switch {
		case hdr.Name == "index.json":
			if err := json.Unmarshal(data, &index); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(hdr.Name, "blobs/sha256/") && hdr.Typeflag == tar.TypeReg:
			blobs["sha256:"+strings.TrimPrefix(hdr.Name, "blobs/sha256/")] = data
		}
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(blobs[index.Manifests[0].Digest.String()], &manifest); err != nil {
		t.Fatal(err)
	}
	var config map[string]any
	if err := json.Unmarshal(blobs[manifest.Config.Digest.String()], &config); err != nil {
		t.Fatal(err)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	rc, _ := config["config"].(map[string]any)
	rc["Labels"] = map[string]string{"kiln.test/push": hex.EncodeToString(nonce[:])}
	configBlob, _ := json.Marshal(config)
	manifest.Config.Digest = digest.FromBytes(configBlob)
	manifest.Config.Size = int64(len(configBlob))
	manifestBlob, _ := json.Marshal(manifest)

	r.putBlob(repo, configBlob)
	for _, l := range manifest.Layers {
		r.putBlob(repo, blobs[l.Digest.String()])
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+r.host+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(manifestBlob))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %d %s", resp.StatusCode, body)
	}
	return pushed{Ref: r.host + "/" + repo + ":" + tag, Digest: digest.FromBytes(manifestBlob).String(), Layers: len(manifest.Layers)}
}

func (r *registry) putBlob(repo string, blob []byte) {
	t := r.t
	t.Helper()
	resp, err := http.Post("http://"+r.host+"/v2/"+repo+"/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse("http://" + r.host + "/")
	loc = base.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", digest.FromBytes(blob).String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(blob))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload blob: %d %s", resp.StatusCode, body)
	}
}
