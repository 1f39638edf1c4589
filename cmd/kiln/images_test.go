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
		writeJSONBody(w, 200, map[string]any{"images": []string{"docker.io/library/hello:dev"}})
	})
	res := api.run(nil, "images", "import", path)
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	if got := api.only("POST", "/v2/images/import").Body; !bytes.Equal(got, data) {
		t.Errorf("uploaded %d bytes, want the file's %d", len(got), len(data))
	}
	if res.stdout != "imported docker.io/library/hello:dev\n" {
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
	api.json("POST /v2/images/pull", 200, map[string]any{"name": "docker.io/library/alpine:3", "digest": "sha256:def"})

	res := api.run(nil, "images", "list")
	if res.code != 0 {
		t.Fatalf("list: exit %d stderr %q", res.code, res.stderr)
	}
	wantContains(t, "list", res.stdout, "NAME", "hello:dev", "sha256:abc", "2.0 MiB")

	res = api.run(nil, "images", "pull", "alpine:3")
	if res.code != 0 {
		t.Fatalf("pull: exit %d stderr %q", res.code, res.stderr)
	}
	if got := decodeBody(t, api.only("POST", "/v2/images/pull").Body); !reflect.DeepEqual(got, map[string]any{"ref": "alpine:3"}) {
		t.Errorf("pull body = %v", got)
	}
	if res.stdout != "pulled docker.io/library/alpine:3 sha256:def\n" {
		t.Errorf("pull stdout = %q", res.stdout)
	}
}

func TestUploadProgressLines(t *testing.T) {
	var out bytes.Buffer
	p := newUploadProgress(bytes.NewReader(make([]byte, 1000)), &out, "up", 1000)
	buf := make([]byte, 100)
	for {
		if _, err := p.Read(buf); err == io.EOF {
			break
		}
	}
	p.finish()
	p.finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var pcts []string
	for _, l := range lines {
		pcts = append(pcts, l[strings.LastIndex(l, "(")+1:len(l)-2])
	}
	if strings.Join(pcts, ",") != "10,30,50,80,100" {
		t.Errorf("progress lines %q", out.String())
	}
}

func TestBuildUnsupportedRuntime(t *testing.T) {
	api := newFakeAPI(t)
	res := api.run(nil, "build", t.TempDir(), "--tag", "x:1", "--runtime", "python")
	if res.code != 1 || res.stderr != "Error: runtime python not supported yet\n" {
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
	// No server: --output must not need one.
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
	wantContains(t, "stderr", res.stderr, "building Go package")
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
	if res.code != 1 || !strings.Contains(res.stderr, "use --output") || strings.Contains(res.stderr, "building") {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
}
