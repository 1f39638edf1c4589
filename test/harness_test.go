package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/imagebuild"
)

// Images every test kilnd gets, built once per test binary.
const (
	testfnImage  = "kiln/testfn:latest"
	exampleImage = "kiln/hello:latest"
	// fnfuncImage is a function written for Fn's http-stream contract
	// with nothing of kiln's (test/fnfunc).
	fnfuncImage = "kiln/fnfunc:latest"
)

// env is what TestMain set up for every test.
var env struct {
	root       string
	kilndBin   string
	kilnBin    string
	containerd *executor.Daemon
	client     *containerd.Client
	imageTars  []string
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if err := executor.CheckBinaries(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the end-to-end tests need containerd and runc: %v\n", err)
		return 1
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the end-to-end tests need root (containers, cgroups, mounts); run them as root")
		return 1
	}
	root, err := os.MkdirTemp("", "kiln-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	env.root = root
	defer os.RemoveAll(root)
	if err := setup(root); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: e2e setup:", err)
		teardown()
		return 1
	}
	code := m.Run()
	teardown()
	return code
}

func setup(root string) error {
	ctx := context.Background()
	start := time.Now()
	bin := filepath.Join(root, "bin")
	for name, pkg := range map[string]string{"kilnd": "./cmd/kilnd", "kiln": "./cmd/kiln", "kiln-init": "./cmd/kiln-init"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), pkg)
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	}
	env.kilndBin = filepath.Join(bin, "kilnd")
	env.kilnBin = filepath.Join(bin, "kiln")
	for ref, pkg := range map[string]string{testfnImage: "images/testfn", exampleImage: "images/go/example", fnfuncImage: "test/fnfunc"} {
		tar := filepath.Join(root, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		f, err := os.Create(tar)
		if err != nil {
			return err
		}
		_, err = imagebuild.GoFunctionImage(ctx, f, filepath.Join(repoRoot(), pkg), ref, nil, io.Discard)
		f.Close()
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		env.imageTars = append(env.imageTars, tar)
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	d, err := executor.StartContainerd(ctx, filepath.Join(root, "containerd"), logrus.NewEntry(log))
	if err != nil {
		return err
	}
	env.containerd = d
	env.client, err = containerd.New(d.Address())
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "e2e setup: binaries, images and containerd (pid %d) ready in %s\n", d.PID(), time.Since(start).Round(time.Millisecond))
	return nil
}

func teardown() {
	if env.client != nil {
		env.client.Close()
	}
	if env.containerd != nil {
		env.containerd.Stop()
	}
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// kilnd is one kilnd process under test, with its own data dir and
// containerd namespace, so tests never see each other's containers.
type kilnd struct {
	t       *testing.T
	cmd     *exec.Cmd
	url     string
	addr    string
	dataDir string
	ns      string
	logPath string
	args    []string
	exited  chan struct{}
	http    *http.Client
	// embedded kilnds run their own containerd under the data dir; ctr
	// is a client of whichever containerd this kilnd uses.
	adminToken     string
	anonymous      bool // send no admin token (to test refusals)
	embedded       bool
	ctr            *containerd.Client
	embeddedDaemon *executor.Daemon
}

type kilndOption func(*kilnd)

// embeddedContainerd makes kilnd start and supervise its own containerd.
func embeddedContainerd() kilndOption { return func(k *kilnd) { k.embedded = true } }

// withAdminToken guards kilnd's /v2 API with a token; the harness's own
// requests send it.
func withAdminToken(token string) kilndOption {
	return func(k *kilnd) {
		k.adminToken = token
		k.args = append(k.args, "--admin-token", token)
	}
}

// withArgs adds kilnd flags.
func withArgs(args ...string) kilndOption { return func(k *kilnd) { k.args = append(k.args, args...) } }

// startKilnd starts kilnd and imports the test images. At the end of the
// test it stops kilnd with SIGTERM and fails the test if any container,
// task or snapshot of its namespace is left.
func startKilnd(t *testing.T, opts ...kilndOption) *kilnd {
	t.Helper()
	k := &kilnd{
		t:       t,
		dataDir: t.TempDir(),
		ns:      "e2e-" + sanitize(t.Name()),
		http:    &http.Client{Timeout: 2 * time.Minute},
	}
	k.args = []string{"--max-memory", "4096"}
	for _, o := range opts {
		o(k)
	}
	k.addr = freeAddr(t)
	k.url = "http://" + k.addr
	k.logPath = filepath.Join(k.dataDir, "kilnd.log")
	k.start()
	for _, tar := range env.imageTars {
		f, err := os.Open(tar)
		if err != nil {
			t.Fatal(err)
		}
		resp, body := k.do("POST", "/v2/images/import", f, nil)
		f.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("import %s: %d %s", tar, resp.StatusCode, body)
		}
	}
	t.Cleanup(func() {
		k.stop(syscall.SIGTERM, 60*time.Second)
		if k.embedded {
			k.reopenEmbedded()
		}
		k.assertNothingLeft()
		if k.embedded {
			k.ctr.Close()
			k.embeddedDaemon.Stop()
		}
		if t.Failed() {
			k.dumpLog()
		}
	})
	return k
}

// reopenEmbedded starts the stopped kilnd's containerd again, on its data
// dir, so the leak check can look inside it.
func (k *kilnd) reopenEmbedded() {
	k.t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := executor.StartContainerd(context.Background(), filepath.Join(k.dataDir, "containerd"), logrus.NewEntry(log))
	if err != nil {
		k.t.Fatalf("reopen kilnd's containerd for the leak check: %v", err)
	}
	k.embeddedDaemon = d
	if k.ctr != nil {
		k.ctr.Close()
	}
	k.ctr, err = containerd.New(d.Address())
	if err != nil {
		k.t.Fatal(err)
	}
}

func (k *kilnd) start() {
	t := k.t
	t.Helper()
	logf, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--listen", k.addr, "--data-dir", k.dataDir, "--namespace", k.ns}
	if !k.embedded {
		args = append(args, "--containerd", env.containerd.Address())
		k.ctr = env.client
	}
	args = append(args, k.args...)
	k.cmd = exec.Command(env.kilndBin, args...)
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	k.exited = make(chan struct{})
	cmd := k.cmd
	go func() {
		_ = cmd.Wait()
		close(k.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(k.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if k.embedded && k.ctr == nil {
					c, err := containerd.New(executor.SocketPath(filepath.Join(k.dataDir, "containerd")))
					if err != nil {
						t.Fatal(err)
					}
					k.ctr = c
				}
				return
			}
		}
		select {
		case <-k.exited:
			k.dumpLog()
			t.Fatalf("kilnd exited during start-up: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			k.dumpLog()
			t.Fatal("kilnd did not become healthy within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop signals kilnd (by its PID) and waits; after the timeout it is
// SIGKILLed and the test fails.
func (k *kilnd) stop(sig syscall.Signal, timeout time.Duration) time.Duration {
	select {
	case <-k.exited:
		return 0
	default:
	}
	start := time.Now()
	_ = k.cmd.Process.Signal(sig)
	select {
	case <-k.exited:
		return time.Since(start)
	case <-time.After(timeout):
		_ = k.cmd.Process.Kill()
		<-k.exited
		k.t.Errorf("kilnd did not exit within %s of %v", timeout, sig)
		return time.Since(start)
	}
}

func (k *kilnd) dumpLog() {
	b, _ := os.ReadFile(k.logPath)
	if len(b) > 20000 {
		b = append([]byte("...\n"), b[len(b)-20000:]...)
	}
	k.t.Logf("kilnd log:\n%s", b)
}

func (k *kilnd) log() string {
	b, _ := os.ReadFile(k.logPath)
	return string(b)
}

// ctrCtx is a context in this kilnd's containerd namespace.
func (k *kilnd) ctrCtx() context.Context {
	return namespaces.WithNamespace(context.Background(), k.ns)
}

// containers lists the containers in kilnd's namespace.
func (k *kilnd) containers() []containerd.Container {
	k.t.Helper()
	list, err := k.ctr.Containers(k.ctrCtx())
	if err != nil {
		k.t.Fatalf("list containers: %v", err)
	}
	return list
}

// assertNothingLeft fails the test if kilnd left any container, task or
// container snapshot in its namespace.
func (k *kilnd) assertNothingLeft() {
	k.t.Helper()
	ctx := k.ctrCtx()
	if list := k.containers(); len(list) > 0 {
		ids := make([]string, len(list))
		for i, c := range list {
			ids[i] = c.ID()
		}
		k.t.Errorf("containers left in namespace %s: %v", k.ns, ids)
	}
	tasks, err := k.ctr.TaskService().List(ctx, nil)
	if err == nil && len(tasks.Tasks) > 0 {
		k.t.Errorf("%d tasks left in namespace %s", len(tasks.Tasks), k.ns)
	}
	var snaps []string
	_ = k.ctr.SnapshotService(containerd.DefaultSnapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "kiln-") {
			snaps = append(snaps, info.Name)
		}
		return nil
	})
	if len(snaps) > 0 {
		k.t.Errorf("container snapshots left in namespace %s: %v", k.ns, snaps)
	}
	if entries, _ := os.ReadDir(filepath.Join(k.dataDir, "fifo")); len(entries) > 0 {
		k.t.Errorf("%d FIFO dirs left", len(entries))
	}
	if entries, _ := os.ReadDir(filepath.Join(k.dataDir, "sock")); len(entries) > 0 {
		k.t.Errorf("%d http-stream socket dirs left", len(entries))
	}
	// A shim exits once its last container is deleted; give it a moment.
	address := env.containerd.Address()
	if k.embedded {
		address = executor.SocketPath(filepath.Join(k.dataDir, "containerd"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := shimPIDs(k.ns, address)
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			k.t.Errorf("shims left for namespace %s: pids %v", k.ns, pids)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// do sends a request and returns the response with its body read.
func (k *kilnd) do(method, path string, body io.Reader, header http.Header) (*http.Response, []byte) {
	k.t.Helper()
	req, err := http.NewRequest(method, k.url+path, body)
	if err != nil {
		k.t.Fatal(err)
	}
	for key, v := range header {
		req.Header[key] = v
	}
	if k.adminToken != "" && strings.HasPrefix(path, "/v2/") && !k.anonymous {
		req.Header.Set("Authorization", "Bearer "+k.adminToken)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		k.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, b
}

// doJSON sends v as JSON and decodes a 2xx answer into out.
func (k *kilnd) doJSON(method, path string, v, out any) {
	k.t.Helper()
	var body io.Reader
	if v != nil {
		b, _ := json.Marshal(v)
		body = bytes.NewReader(b)
	}
	resp, b := k.do(method, path, body, http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode/100 != 2 {
		k.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			k.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

type deployed struct {
	AppID, FnID, App, Fn string
}

// deploy creates an app, a fn and an http trigger at /<fn name>.
func (k *kilnd) deploy(app, fn, image, format string, extra map[string]any) deployed {
	k.t.Helper()
	var a struct{ ID string }
	resp, b := k.do("GET", "/v2/apps?name="+app, nil, nil)
	var list struct {
		Items []struct{ ID string }
	}
	_ = json.Unmarshal(b, &list)
	if resp.StatusCode == 200 && len(list.Items) > 0 {
		a.ID = list.Items[0].ID
	} else {
		k.doJSON("POST", "/v2/apps", map[string]any{"name": app}, &a)
	}
	body := map[string]any{"name": fn, "app_id": a.ID, "image": image, "format": format}
	for key, v := range extra {
		body[key] = v
	}
	var f struct{ ID string }
	k.doJSON("POST", "/v2/fns", body, &f)
	k.doJSON("POST", "/v2/triggers", map[string]any{"name": fn, "app_id": a.ID, "fn_id": f.ID, "type": "http", "source": "/" + fn}, nil)
	return deployed{AppID: a.ID, FnID: f.ID, App: app, Fn: fn}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 60 {
		out = out[:60]
	}
	return strings.Trim(out, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
}

// parallelCalls runs n calls concurrently and returns their results.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f(i)
		}(i)
	}
	wg.Wait()
}
