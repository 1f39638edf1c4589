package executor

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-run/kiln/errdefs"
)

func TestPullGroupSharesOnePull(t *testing.T) {
	var g pullGroup
	var pulls atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	pull := func(ctx context.Context, report func(PullProgress)) (containerd.Image, error) {
		if pulls.Add(1) == 1 {
			close(started)
		}
		report(PullProgress{Status: PullDownloading, LayersTotal: 2, Total: 10, Bytes: 5})
		<-release
		report(PullProgress{Status: PullDone, LayersTotal: 2, LayersDone: 2, Total: 10, Bytes: 10})
		return nil, nil
	}

	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	lastSeen := make([]PullProgress, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = g.do(context.Background(), "r", pull, func(p PullProgress) { lastSeen[i] = p })
		}(i)
	}
	<-started
	// Every waiter must be registered before the pull may end, or a late
	// one would start a second pull legitimately.
	waitUntil(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.ops) == 1
	})
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if got := pulls.Load(); got != 1 {
		t.Fatalf("%d pulls for %d concurrent callers, want 1", got, n)
	}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
		}
		if lastSeen[i].Status != PullDone || lastSeen[i].Bytes != 10 {
			t.Errorf("caller %d last progress %+v, want done", i, lastSeen[i])
		}
	}
	g.mu.Lock()
	left := len(g.ops)
	g.mu.Unlock()
	if left != 0 {
		t.Errorf("%d ops left after the pull", left)
	}
}

func TestPullGroupCallerGivesUpPullGoesOn(t *testing.T) {
	var g pullGroup
	release := make(chan struct{})
	var pullCtxErr atomic.Value
	finished := make(chan struct{})
	pull := func(ctx context.Context, report func(PullProgress)) (containerd.Image, error) {
		<-release
		if ctx.Err() != nil {
			pullCtxErr.Store(ctx.Err())
		}
		close(finished)
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := g.do(ctx, "r", pull, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	// A second caller joins the pull still running rather than starting one.
	done := make(chan error, 1)
	go func() {
		_, err := g.do(context.Background(), "r", func(context.Context, func(PullProgress)) (containerd.Image, error) {
			return nil, errors.New("second pull started")
		}, nil)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("joined caller: %v", err)
	}
	<-finished
	if v := pullCtxErr.Load(); v != nil {
		t.Fatalf("the pull's context was cancelled with its first caller: %v", v)
	}
}

func TestPullGroupSharesErrorsAndRetriesAfter(t *testing.T) {
	var g pullGroup
	boom := errors.New("registry exploded")
	var calls atomic.Int32
	pull := func(context.Context, func(PullProgress)) (containerd.Image, error) {
		calls.Add(1)
		return nil, boom
	}
	for i := 0; i < 2; i++ {
		if _, err := g.do(context.Background(), "r", pull, nil); !errors.Is(err, boom) {
			t.Fatalf("attempt %d: err = %v", i, err)
		}
	}
	// A failed pull is not cached: the next caller tries again.
	if got := calls.Load(); got != 2 {
		t.Fatalf("%d pulls, want 2", got)
	}
}

func TestPullGroupCloseCancelsAndRefuses(t *testing.T) {
	var g pullGroup
	started := make(chan struct{})
	pull := func(ctx context.Context, _ func(PullProgress)) (containerd.Image, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	errc := make(chan error, 1)
	go func() {
		_, err := g.do(context.Background(), "r", pull, nil)
		errc <- err
	}()
	<-started
	closed := make(chan struct{})
	go func() { g.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close did not return")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("pull in flight ended with %v, want cancelled", err)
	}
	if _, err := g.do(context.Background(), "r", pull, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("pull after close: %v, want ErrUnavailable", err)
	}
}

func TestInsecureMatcher(t *testing.T) {
	m := insecureMatcher([]string{"127.0.0.1:5000", "http://Registry.Local/", " ", "[::1]:6000", "plain"})
	tests := map[string]bool{
		"127.0.0.1:5000":     true,
		"127.0.0.1:5001":     false,
		"127.0.0.1":          false,
		"registry.local":     true,
		"registry.local:443": true,
		"REGISTRY.LOCAL:80":  true,
		"[::1]:6000":         true,
		"[::1]:6001":         false,
		"plain:1234":         true,
		"other":              false,
		"plainer":            false,
	}
	for host, want := range tests {
		got, err := m(host)
		if err != nil || got != want {
			t.Errorf("insecure(%q) = %v, %v; want %v", host, got, err, want)
		}
	}
	if got, _ := insecureMatcher(nil)("127.0.0.1:5000"); got {
		t.Error("an empty list made a host insecure")
	}
}

func TestLoadRegistryAuths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	b64 := base64.StdEncoding.EncodeToString([]byte("alice:s3cr:et"))
	cfg := fmt.Sprintf(`{
	  "auths": {
	    "https://Reg.example:5000/v1/": {"auth": %q},
	    "plain.example": {"username": "bob", "password": "pw"},
	    "token.example": {"identitytoken": "tok"}
	  },
	  "credHelpers": {"helper.example": "kilntest"}
	}`, b64)
	// A credential helper, as docker runs them: docker-credential-<name>
	// on PATH, asked "get" with the host on stdin.
	bin := t.TempDir()
	helper := "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"helper-user\",\"Secret\":\"helper-secret\"}' \"$host\"\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-kilntest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	auths, err := loadRegistryAuths(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ host, user, secret string }{
		{"reg.example:5000", "alice", "s3cr:et"},
		{"plain.example", "bob", "pw"},
		{"token.example", "", "tok"},
		{"helper.example", "helper-user", "helper-secret"},
		{"unknown.example", "", ""},
	}
	for _, tt := range tests {
		u, s, err := auths.lookup(tt.host)
		if err != nil || u != tt.user || s != tt.secret {
			t.Errorf("lookup(%q) = %q, %q, %v; want %q, %q", tt.host, u, s, err, tt.user, tt.secret)
		}
	}

	// DOCKER_CONFIG names a directory; a missing file is anonymous access.
	t.Setenv("DOCKER_CONFIG", dir)
	if got := registryConfigPath(""); got != path {
		t.Errorf("registryConfigPath = %q, want %q", got, path)
	}
	if a, err := loadRegistryAuths(filepath.Join(dir, "nope.json")); err != nil || a.file != nil {
		t.Errorf("missing file: %v, %v", a, err)
	}

	bad := map[string]string{
		"not json":      `{"auths":`,
		"bad base64":    `{"auths":{"h":{"auth":"***"}}}`,
		"no colon":      fmt.Sprintf(`{"auths":{"h":{"auth":%q}}}`, base64.StdEncoding.EncodeToString([]byte("nocolon"))),
		"auths not map": `{"auths":[1]}`,
	}
	for name, body := range bad {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadRegistryAuths(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNormalizeRef(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1:5000/fn", "127.0.0.1:5000/fn:latest"},
		{"127.0.0.1:5000/team/fn:v1", "127.0.0.1:5000/team/fn:v1"},
		{"localhost/fn:2", "localhost/fn:2"},
	}
	for _, tt := range tests {
		got, err := normalizeRef(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("normalizeRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "  ", "Upper", "a b"} {
		if _, err := normalizeRef(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("normalizeRef(%q) err = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestPullErrorClassifies(t *testing.T) {
	if err := pullError("r", fmt.Errorf("resolve: %w", cerrdefs.ErrNotFound)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("not found: %v", err)
	}
	err := pullError("r", errors.New(`Get "https://h/v2/": http: server gave HTTP response to HTTPS client`))
	if !strings.Contains(err.Error(), "--insecure-registries") {
		t.Errorf("plain HTTP registry: %v", err)
	}
	err = pullError("r", errors.New("500 Internal Server Error"))
	if errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a registry failure carries a sentinel: %v", err)
	}
}

type fakeIngests struct {
	mu      sync.Mutex
	offsets map[string]int64
}

func (f *fakeIngests) Status(_ context.Context, ref string) (content.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	off, ok := f.offsets[ref]
	if !ok {
		return content.Status{}, cerrdefs.ErrNotFound
	}
	return content.Status{Ref: ref, Offset: off}, nil
}

func TestLayerTracker(t *testing.T) {
	l1 := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("l1"), Size: 100}
	l2 := ocispec.Descriptor{MediaType: images.MediaTypeDockerSchema2LayerGzip, Digest: digest.FromString("l2"), Size: 300}
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("c"), Size: 10}
	man := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 10}

	ingests := &fakeIngests{offsets: map[string]int64{}}
	tr := newLayerTracker(ingests)
	ctx := context.Background()
	if p, _ := tr.sample(ctx); p.Status != PullResolving || p.LayersTotal != 0 {
		t.Errorf("before the manifest: %+v, want resolving", p)
	}

	inLayer := make(chan struct{})
	release := make(chan struct{})
	h := tr.wrap(images.HandlerFunc(func(_ context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		switch d.Digest {
		case man.Digest:
			return []ocispec.Descriptor{cfg, l1, l2}, nil
		case l2.Digest:
			close(inLayer)
			<-release
		}
		return nil, nil
	}))
	if _, err := h.Handle(ctx, man); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(ctx, l1); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = h.Handle(ctx, l2) }()
	<-inLayer
	ingests.mu.Lock()
	ingests.offsets["layer-"+l2.Digest.String()] = 120
	ingests.mu.Unlock()

	p, ok := tr.sample(ctx)
	want := PullProgress{Status: PullDownloading, LayersDone: 1, LayersTotal: 2, Bytes: 220, Total: 400}
	if !ok || p != want {
		t.Fatalf("mid-pull sample = %+v, %v; want %+v", p, ok, want)
	}
	if _, ok := tr.sample(ctx); ok {
		t.Error("an unchanged sample was reported again")
	}
	close(release)
	var last PullProgress
	waitUntil(t, func() bool {
		if p, ok := tr.sample(ctx); ok {
			last = p
		}
		return last.LayersDone == 2
	})
	if last.Status != PullUnpacking || last.Bytes != 400 {
		t.Errorf("all layers fetched: %+v, want unpacking with every byte", last)
	}
	if f := tr.final(); f != (PullProgress{Status: PullDone, LayersDone: 2, LayersTotal: 2, Bytes: 400, Total: 400}) {
		t.Errorf("final = %+v", f)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
