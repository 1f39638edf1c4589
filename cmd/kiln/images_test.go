package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestImagesImportStreamsFileWithProgress(t *testing.T) {
	api := newFakeAPI(t)
	data := bytes.Repeat([]byte("layer"), 100_000)
	path := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	api.handle("POST /v2/images/import", func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != int64(len(data)) {
			t.Errorf("Content-Length = %d, want %d", r.ContentLength, len(data))
		}
		writeJSONBody(w, 200, map[string]any{"images": []string{"registry.test/library/hello:dev"}})
	})
	res := api.run(nil, "images", "import", path)
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	if got := api.only("POST", "/v2/images/import").Body; !bytes.Equal(got, data) {
		t.Errorf("uploaded %d bytes, want the file's %d", len(got), len(data))
	}
	if res.stdout != "imported registry.test/library/hello:dev\n" {
		t.Errorf("stdout = %q", res.stdout)
	}
	wantContains(t, "stderr", res.stderr, "importing img.tar:", "/ 488.3 KiB", "(100%)")
}

func TestImagesImportMissingFile(t *testing.T) {
	api := newFakeAPI(t)
	res := api.run(nil, "images", "import", filepath.Join(t.TempDir(), "nope.tar"))
	if res.code != 1 || !strings.Contains(res.stderr, "no such file") {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestImagesListAndPull(t *testing.T) {
	api := newFakeAPI(t)
	api.json("GET /v2/images", 200, map[string]any{"items": []any{
		map[string]any{"name": "hello:dev", "digest": "sha256:abc", "size": 2 << 20},
	}})
	api.handle("POST /v2/images/pull", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept"), "application/x-ndjson") {
			t.Errorf("Accept = %q, want ndjson", r.Header.Get("Accept"))
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, line := range []string{
			`{"status":"downloading","layers_done":0,"layers_total":2,"bytes":0,"total":4194304}`,
			`{"status":"downloading","layers_done":1,"layers_total":2,"bytes":2097152,"total":4194304}`,
			`{"status":"downloading","layers_done":1,"layers_total":2,"bytes":2097200,"total":4194304}`,
			`{"status":"done","layers_done":2,"layers_total":2,"bytes":4194304,"total":4194304}`,
			`{"image":"registry.test/team/alpine:3","digest":"sha256:def"}`,
		} {
			_, _ = io.WriteString(w, line+"\n")
		}
	})

	res := api.run(nil, "images", "list")
	if res.code != 0 {
		t.Fatalf("list: exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "list", res.stdout, "NAME", "hello:dev", "sha256:abc", "2.0 MiB")

	res = api.run(nil, "images", "pull", "registry.test/team/alpine:3")
	if res.code != 0 {
		t.Fatalf("pull: exit %d stderr %q", res.code, res.stderr)
	}
	if got := decodeBody(t, api.only("POST", "/v2/images/pull").Body); !reflect.DeepEqual(got, map[string]any{"ref": "registry.test/team/alpine:3"}) {
		t.Errorf("pull body = %v", got)
	}
	if res.stdout != "pulled registry.test/team/alpine:3 sha256:def\n" {
		t.Errorf("pull stdout = %q", res.stdout)
	}
	// Into a pipe: one line per layer or status change, not per update.
	want := "pulling registry.test/team/alpine:3: downloading, 0/2 layers, 0 B / 4.0 MiB (0%)\n" +
		"pulling registry.test/team/alpine:3: downloading, 1/2 layers, 2.0 MiB / 4.0 MiB (50%)\n" +
		"pulling registry.test/team/alpine:3: done, 2/2 layers, 4.0 MiB / 4.0 MiB (100%)\n"
	if res.stderr != want {
		t.Errorf("progress:\n%s\nwant:\n%s", res.stderr, want)
	}
}

func TestImagesPullErrors(t *testing.T) {
	api := newFakeAPI(t)
	api.handle("POST /v2/images/pull", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Ref string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		switch req.Ref {
		case "missing:1":
			writeJSONBody(w, 404, map[string]any{"message": `pull "missing:1": the registry has no such image`, "code": 404})
		case "midway:1":
			w.Header().Set("Content-Type", "application/x-ndjson")
			_, _ = io.WriteString(w, `{"status":"downloading","layers_done":0,"layers_total":1,"bytes":10,"total":100}`+"\n")
			_, _ = io.WriteString(w, `{"message":"pulling \"midway:1\": connection reset","code":502}`+"\n")
		case "plain:1":
			// A kilnd that ignores Accept answers once, at the end.
			writeJSONBody(w, 200, map[string]any{"image": "plain:1", "digest": "sha256:1"})
		case "cut:1":
			w.Header().Set("Content-Type", "application/x-ndjson")
			_, _ = io.WriteString(w, `{"status":"downloading","layers_done":0,"layers_total":1,"bytes":10,"total":100}`+"\n")
		}
	})
	tests := []struct {
		ref, stderr string
		code        int
	}{
		{"missing:1", "Error: pull \"missing:1\": the registry has no such image\n", 1},
		{"midway:1", "connection reset", 1},
		{"cut:1", "without a result", 1},
		{"plain:1", "", 0},
	}
	for _, tt := range tests {
		res := api.run(nil, "images", "pull", tt.ref)
		if res.code != tt.code || !strings.Contains(res.stderr, tt.stderr) {
			t.Errorf("%s: exit %d stderr %q", tt.ref, res.code, res.stderr)
		}
	}
}

func TestImagesRemove(t *testing.T) {
	api := newFakeAPI(t)
	api.handle("DELETE /v2/images/{ref...}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("ref") {
		case "127.0.0.1:5000/team/fn:v1":
			writeJSONBody(w, 200, map[string]any{"message": "deleted image 127.0.0.1:5000/team/fn:v1"})
		case "used:1":
			writeJSONBody(w, 409, map[string]any{"message": `image "used:1" is used by fn "f" (01)`, "code": 409})
		default:
			writeJSONBody(w, 404, map[string]any{"message": "image not found", "code": 404})
		}
	})
	res := api.run(nil, "images", "rm", "127.0.0.1:5000/team/fn:v1")
	if res.code != 0 || res.stdout != "deleted image 127.0.0.1:5000/team/fn:v1\n" {
		t.Errorf("rm: exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	res = api.run(nil, "images", "rm", "used:1")
	if res.code != 1 || !strings.Contains(res.stderr, "is used by fn") {
		t.Errorf("rm used: exit %d stderr %q", res.code, res.stderr)
	}
	res = api.run(nil, "image", "delete", "nope")
	if res.code != 1 || !strings.Contains(res.stderr, "not found") {
		t.Errorf("rm missing: exit %d stderr %q", res.code, res.stderr)
	}
}

func TestUploadProgressLines(t *testing.T) {
	var out bytes.Buffer
	bar := newProgressBar(&out, "up")
	bar.expect(1000)
	r := bar.reader(bytes.NewReader(make([]byte, 1000)))
	buf := make([]byte, 100)
	for {
		if _, err := r.Read(buf); err == io.EOF {
			break
		}
	}
	bar.done()
	bar.finish()
	bar.finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var pcts []string
	for _, l := range lines {
		pcts = append(pcts, l[strings.LastIndex(l, "(")+1:len(l)-2])
	}
	if strings.Join(pcts, ",") != "10,30,50,80,100" {
		t.Errorf("progress lines %q", out.String())
	}
}

func TestBuildUnknownRuntime(t *testing.T) {
	api := newFakeAPI(t)
	res := api.run(nil, "build", t.TempDir(), "--tag", "x:1", "--runtime", "cobol")
	if res.code != 1 || res.stderr != "Error: unknown runtime \"cobol\": want one of go, python, node, shell\n" {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestBuildUndetectableRuntime(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("?"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runWithEnv(t, nil, nil, "build", dir, "--tag", "x:1", "--archive", filepath.Join(t.TempDir(), "x.tar"))
	if res.code != 1 || !strings.Contains(res.stderr, "pass --runtime") {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestBuildShellDetected(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox not installed")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "func.sh"), []byte("cat\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "sh.tar")
	res := runWithEnv(t, nil, nil, "build", dir, "--tag", "sh:1", "--archive", out)
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	archive, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if name := archiveImageName(t, archive); name != "sh:1" {
		t.Errorf("image name %q", name)
	}
	wantContains(t, "stderr", res.stderr, "detected runtime shell")
}

func TestBuildCacheDirFromEnvironment(t *testing.T) {
	// A python build with an unreachable cache dir fails saying where it
	// looked, which shows the default came from the environment.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "func.py"), []byte("def handler(ctx, data): return data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := runWithEnv(t, map[string]string{"KILN_DATA_DIR": blocker}, nil, "build", dir, "--tag", "py:1", "--base", "debian", "--archive", filepath.Join(t.TempDir(), "x.tar"))
	if res.code != 1 || !strings.Contains(res.stderr, filepath.Join(blocker, "build-cache")) {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func TestBuildNeedsTag(t *testing.T) {
	api := newFakeAPI(t)
	res := api.run(nil, "build", t.TempDir())
	if res.code != 1 || !strings.Contains(res.stderr, `"tag" not set`) {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}

func writeHello(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/hello\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"hi\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// archiveImageName returns the io.containerd.image.name annotation of an OCI archive.
func archiveImageName(t *testing.T, archive []byte) string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("no index.json in archive: %v", err)
		}
		if hdr.Name != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil || len(idx.Manifests) != 1 {
			t.Fatalf("index.json: %v %+v", err, idx)
		}
		return idx.Manifests[0].Annotations["io.containerd.image.name"]
	}
}

func TestBuildToFile(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a Go program")
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	// No server: --archive must not need one. The old spelling, --output
	// FILE, still works, with a word about it.
	res := runWithEnv(t, map[string]string{"KILN_API_URL": "http://127.0.0.1:1"}, nil, "build", writeHello(t), "--tag", "hello:dev", "--output", out)
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	archive, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if name := archiveImageName(t, archive); name != "hello:dev" {
		t.Errorf("image name %q", name)
	}
	wantContains(t, "stdout", res.stdout, "wrote "+out, "hello:dev sha256:")
	wantContains(t, "stderr", res.stderr, "building Go package", "--output FILE is deprecated")
}

func TestBuildImportsIntoKilnd(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a Go program")
	}
	api := newFakeAPI(t)
	api.json("GET /version", 200, map[string]string{"version": "test"})
	api.handle("POST /v2/images/import", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Length") != strconv.Itoa(int(r.ContentLength)) || r.ContentLength <= 0 {
			t.Errorf("Content-Length = %q", r.Header.Get("Content-Length"))
		}
		writeJSONBody(w, 200, map[string]any{"images": []string{"hello:dev"}})
	})
	res := api.run(nil, "build", writeHello(t), "--tag", "hello:dev")
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	if name := archiveImageName(t, api.only("POST", "/v2/images/import").Body); name != "hello:dev" {
		t.Errorf("uploaded image named %q", name)
	}
	if res.stdout != "imported hello:dev\n" {
		t.Errorf("stdout = %q", res.stdout)
	}
	wantContains(t, "stderr", res.stderr, "building Go package", "(100%)")
}

func TestBuildFailsFastWithoutKilnd(t *testing.T) {
	res := runWithEnv(t, map[string]string{"KILN_API_URL": "http://127.0.0.1:1"}, nil, "build", t.TempDir(), "--tag", "x:1")
	if res.code != 1 || !strings.Contains(res.stderr, "--archive FILE builds without kilnd") || strings.Contains(res.stderr, "building") {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}
