package executor

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/emptypb"
)

// fakeShim answers Shutdown on a unix socket the way runc's shim does: a
// no-op while it serves a container, else it removes its socket and stops.
type fakeShim struct {
	sock       string
	containers atomic.Int32
	shutdowns  atomic.Int32
	srv        *ttrpc.Server
	done       chan struct{}
	once       sync.Once
}

func startFakeShim(t *testing.T, sock string) *fakeShim {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeShim{sock: sock, srv: srv, done: make(chan struct{})}
	srv.Register("containerd.task.v2.Task", map[string]ttrpc.Method{
		"Shutdown": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req taskapi.ShutdownRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			f.shutdowns.Add(1)
			if f.containers.Load() == 0 {
				f.stop()
			}
			return &emptypb.Empty{}, nil
		},
	})
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background(), l) }()
	t.Cleanup(f.stop)
	return f
}

func (f *fakeShim) stop() {
	f.once.Do(func() {
		_ = os.Remove(f.sock)
		go func() { _ = f.srv.Close() }()
		close(f.done)
	})
}

func testRuntime(t *testing.T) *Runtime {
	t.Helper()
	old := shimSocketRoot
	// Short: a unix socket path has room for about 108 bytes, and the
	// name alone is 64.
	dir, err := os.MkdirTemp("", "ks")
	if err != nil {
		t.Fatal(err)
	}
	shimSocketRoot = dir
	t.Cleanup(func() { shimSocketRoot = old; os.RemoveAll(dir) })
	log := logrus.New()
	log.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{cfg: Config{Namespace: "ns", GroupShims: true}, groupSeq: map[string]uint64{}, log: logrus.NewEntry(log),
		containerdAddress: "/run/test/containerd.sock", bgCtx: ctx, cancel: cancel}
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	return r
}

// closeNow makes pending shim checks run at once, as Close does, and
// waits for them.
func closeNow(r *Runtime) {
	r.cancel()
	r.wg.Wait()
}

func TestShimSocketIsContainerds(t *testing.T) {
	r := &Runtime{cfg: Config{Namespace: "kiln"}, containerdAddress: containerdAddress("unix:///var/lib/kiln/containerd/containerd.sock")}
	if r.containerdAddress != "/var/lib/kiln/containerd/containerd.sock" {
		t.Fatalf("address from dial target: %q", r.containerdAddress)
	}
	// What containerd 1.6.20's runtime/v2/shim.SocketAddress answers for
	// this address, namespace and id, computed with containerd's code
	// outside this module (its shim package would add go-runc here); the
	// e2e tests dial real shims by it too.
	want := "/run/containerd/s/d65e3d9fb45a600ef65f888f4d497c49e41849656c8950ed741d476521bd80fd"
	if got := r.shimSocket("kiln-fn-0"); got != want {
		t.Errorf("shim socket %s, containerd's %s", got, want)
	}
	if containerdAddress("passthrough:///x") != "" || (&Runtime{}).shimSocket("g") != "" {
		t.Error("an address that is not a unix socket should turn the shim check off")
	}
}

func TestLastContainerOutShutsAShimThatStayed(t *testing.T) {
	r := testRuntime(t)
	g := r.shimGroup("fn")
	if r.shimGroup("fn") != g {
		t.Fatal("second container not in the first's group")
	}
	f := startFakeShim(t, r.shimSocket(g))
	f.containers.Store(2)

	r.leaveShim("fn", g, g)
	f.containers.Add(-1)
	if r.shimGroup("fn") == g {
		t.Fatal("a group still took a container after one of its containers left")
	}
	closeNow(r)
	if n := f.shutdowns.Load(); n != 0 {
		t.Fatalf("%d Shutdowns while kiln still had a container in the shim", n)
	}

	r = testRuntime(t)
	g = r.shimGroup("fn")
	r.shimGroup("fn")
	f = startFakeShim(t, r.shimSocket(g))
	r.leaveShim("fn", g, g)
	r.leaveShim("fn", g, g)
	closeNow(r)
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the shim of a group whose last container left was not shut down")
	}
	if f.shutdowns.Load() != 1 || r.ShimsReaped() != 1 {
		t.Errorf("shutdowns %d, reaped %d; want 1 and 1", f.shutdowns.Load(), r.ShimsReaped())
	}
}

func TestShimThatServesAContainerIsLeftAlone(t *testing.T) {
	r := testRuntime(t)
	var logs strings.Builder
	var mu sync.Mutex
	r.log.Logger.SetOutput(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}))
	r.joinShim("kiln-fn-abc")
	f := startFakeShim(t, r.shimSocket("kiln-fn-abc"))
	// A container kiln does not know of (another client's, say).
	f.containers.Store(1)
	r.leaveShim("fn", "", "kiln-fn-abc")
	closeNow(r)
	select {
	case <-f.done:
		t.Fatal("a shim serving a container went away")
	default:
	}
	if r.ShimsReaped() != 0 {
		t.Errorf("reaped %d", r.ShimsReaped())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "did not take a Shutdown") {
		t.Errorf("no warning for a shim that stayed: %q", logs.String())
	}
}

func TestNoShimNoShutdown(t *testing.T) {
	r := testRuntime(t)
	g := r.shimGroup("fn")
	// A socket file a dead shim left behind: nothing answers on it.
	if err := os.WriteFile(r.shimSocket(g), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.leaveShim("fn", g, g)
	closeNow(r)
	if r.ShimsReaped() != 0 {
		t.Errorf("reaped %d shims where none ran", r.ShimsReaped())
	}
	if err := shutdownShim(filepath.Join(t.TempDir(), "none"), g); !errors.Is(err, errNoShim) {
		t.Errorf("no socket: %v", err)
	}
}

func TestLeaveWithoutJoinIsHarmless(t *testing.T) {
	r := testRuntime(t)
	r.leaveShim("fn", "", "never-joined")
	closeNow(r)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// returnsWithin runs f and reports whether it returned within d.
func returnsWithin(d time.Duration, f func()) (done <-chan struct{}, ok func() bool) {
	ch := make(chan struct{})
	go func() { f(); close(ch) }()
	return ch, func() bool {
		select {
		case <-ch:
			return true
		case <-time.After(d):
			return false
		}
	}
}

func TestGroupsFirstTaskIsCreatedAlone(t *testing.T) {
	r := testRuntime(t)
	g := r.shimGroup("fn")
	ctx := context.Background()
	if err := r.beginTask(ctx, g); err != nil {
		t.Fatal(err)
	}
	var second error
	_, ok := returnsWithin(100*time.Millisecond, func() { second = r.beginTask(ctx, g) })
	if ok() {
		t.Fatal("a second task was created while the group's shim was still starting")
	}
	r.endTask(g, true)
	if !ok() {
		t.Fatal("the second task still waits after the first was created")
	}
	if second != nil {
		t.Fatal(second)
	}
	// Once the shim is up, creates into it run side by side.
	if _, ok := returnsWithin(time.Second, func() { _ = r.beginTask(ctx, g) }); !ok() {
		t.Fatal("a third create waited for the second")
	}
}

func TestGroupWhoseFirstTaskFailedTakesNoMore(t *testing.T) {
	r := testRuntime(t)
	g := r.shimGroup("fn")
	ctx := context.Background()
	if err := r.beginTask(ctx, g); err != nil {
		t.Fatal(err)
	}
	var second error
	_, ok := returnsWithin(time.Second, func() { second = r.beginTask(ctx, g) })
	r.endTask(g, false)
	if !ok() || !errors.Is(second, errShimGone) {
		t.Fatalf("after a failed first task: %v, want errShimGone", second)
	}
	if r.shimGroup("fn") == g {
		t.Error("the failed group is still being filled")
	}
}

func TestDeleteWaitsForCreatesInItsGroup(t *testing.T) {
	r := testRuntime(t)
	g := r.shimGroup("fn")
	ctx := context.Background()
	if err := r.beginTask(ctx, g); err != nil {
		t.Fatal(err)
	}
	r.endTask(g, true) // the first is up
	if err := r.beginTask(ctx, g); err != nil {
		t.Fatal(err)
	} // the second is still being created
	_, ok := returnsWithin(100*time.Millisecond, func() { _ = r.beginDelete(ctx, g) })
	if ok() {
		t.Fatal("a delete that may empty the shim ran while a create into it was in flight")
	}
	if err := r.beginTask(ctx, g); !errors.Is(err, errShimGone) {
		t.Fatalf("a create into a group that is being emptied: %v, want errShimGone", err)
	}
	r.endTask(g, true)
	if !ok() {
		t.Fatal("the delete still waits after the create returned")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r.closeShimGroup("fn", g)
	if err := r.beginTask(cctx, g); !errors.Is(err, errShimGone) {
		t.Fatalf("a retired group: %v", err)
	}
}

func TestWaitsEndWithTheirContext(t *testing.T) {
	r := testRuntime(t)
	g := r.shimGroup("fn")
	if err := r.beginTask(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.beginTask(ctx, g); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("create waiting on the first: %v", err)
	}
	if err := r.beginDelete(ctx, g); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delete waiting on a create: %v", err)
	}
}
