package executor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/distribution/reference"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kiln-run/kiln/errdefs"
)

// PullProgress is one progress report of a pull. Bytes and Total count
// layer bytes only: manifests and configs are small and would make the
// bar jump for nothing.
type PullProgress struct {
	Status      string `json:"status"`
	LayersDone  int    `json:"layers_done"`
	LayersTotal int    `json:"layers_total"`
	Bytes       int64  `json:"bytes"`
	Total       int64  `json:"total"`
}

// Pull statuses, in the order a pull goes through them.
const (
	PullResolving   = "resolving"
	PullDownloading = "downloading"
	PullUnpacking   = "unpacking"
	PullDone        = "done"
)

// pullTimeout bounds one pull. A pull runs detached from whoever asked for
// it, so without a bound a registry that stalls mid-blob would hold the
// ref's pull, and every call waiting on it, forever.
const pullTimeout = 20 * time.Minute

// progressInterval is how often byte counts are sampled from containerd.
const progressInterval = 250 * time.Millisecond

// Pull fetches ref from its registry into kiln's namespace and unpacks it,
// so the first call does not pay for unpacking. progress, when not nil, is
// called on the caller's goroutine. A pull of a ref that is already being
// pulled (for instance by a fn's first calls) joins that pull instead of
// starting another. The image is stored under the normalized ref
// (host/path:tag), which is the name returned.
func (r *Runtime) Pull(ctx context.Context, ref string, progress func(PullProgress)) (ImageInfo, error) {
	name, err := normalizeRef(ref)
	if err != nil {
		return ImageInfo{}, err
	}
	img, err := r.pulls.do(ctx, name, r.pullFunc(name), progress)
	if err != nil {
		return ImageInfo{}, err
	}
	return r.imageInfo(r.ctx(ctx), img.Metadata()), nil
}

// ensureImage returns the local image ref names, pulling it when kiln
// does not have it: a fn can be created for an image that was never pulled
// and still answer its first call. Concurrent first calls share one pull.
func (r *Runtime) ensureImage(ctx context.Context, ref string) (containerd.Image, error) {
	img, err := r.lookupImage(r.ctx(ctx), ref)
	if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return img, err
	}
	name, nerr := normalizeRef(ref)
	if nerr != nil {
		// Not a name any registry could serve, so "not found" is the
		// honest answer.
		return nil, err
	}
	img, err = r.pulls.do(ctx, name, r.pullFunc(name), nil)
	if err != nil {
		return nil, fmt.Errorf("image %q is not present and pulling it failed: %w", ref, err)
	}
	return img, nil
}

// lookupImage finds ref as it is written, then in its normalized form, so
// a fn naming "team/fn" finds the image a pull stored as its full name.
func (r *Runtime) lookupImage(ctx context.Context, ref string) (containerd.Image, error) {
	img, err := r.client.GetImage(ctx, ref)
	if err == nil || !cerrdefs.IsNotFound(err) {
		return img, wrapContainerd(fmt.Sprintf("image %q", ref), err)
	}
	if name, nerr := normalizeRef(ref); nerr == nil && name != ref {
		if img, err2 := r.client.GetImage(ctx, name); err2 == nil || !cerrdefs.IsNotFound(err2) {
			return img, wrapContainerd(fmt.Sprintf("image %q", name), err2)
		}
	}
	return nil, wrapContainerd(fmt.Sprintf("image %q", ref), err)
}

// normalizeRef turns a short reference into the full name registries and
// containerd's resolver need; a missing tag means "latest".
func normalizeRef(ref string) (string, error) {
	if strings.TrimSpace(ref) == "" {
		return "", fmt.Errorf("empty image reference: %w", errdefs.ErrInvalid)
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %v: %w", ref, err, errdefs.ErrInvalid)
	}
	return named.String(), nil
}

// pullFunc is the actual pull of name, run once per pullOp on a context
// of its own.
func (r *Runtime) pullFunc(name string) func(context.Context, func(PullProgress)) (containerd.Image, error) {
	return func(ctx context.Context, report func(PullProgress)) (containerd.Image, error) {
		ctx = r.ctx(ctx)
		start := time.Now()
		log := r.log.WithField("image", name)
		log.Info("pulling image")
		resolver, err := newResolver(r.cfg.RegistryConfigPath, r.cfg.InsecureRegistries)
		if err != nil {
			return nil, err
		}
		tr := newLayerTracker(r.client.ContentStore())
		report(PullProgress{Status: PullResolving})
		tickCtx, stopTicks := context.WithCancel(ctx)
		ticked := make(chan struct{})
		go func() {
			defer close(ticked)
			t := time.NewTicker(progressInterval)
			defer t.Stop()
			for {
				select {
				case <-tickCtx.Done():
					return
				case <-t.C:
					if p, ok := tr.sample(tickCtx); ok {
						report(p)
					}
				}
			}
		}()
		img, err := r.client.Pull(ctx, name,
			containerd.WithResolver(resolver),
			containerd.WithPullUnpack,
			containerd.WithPullSnapshotter(r.cfg.Snapshotter),
			containerd.WithImageHandlerWrapper(tr.wrap),
		)
		stopTicks()
		<-ticked
		if err != nil {
			log.WithError(err).Warn("pull failed")
			return nil, pullError(name, err)
		}
		r.forgetDigests()
		p := tr.final()
		report(p)
		log.WithFields(map[string]any{"digest": img.Target().Digest.String(), "layers": p.LayersTotal,
			"bytes": p.Total, "took": time.Since(start).Round(time.Millisecond).String()}).Info("pulled image")
		return img, nil
	}
}

// pullError says what went wrong in words an operator can act on, keeping
// kiln's sentinels for what api maps to statuses. Registry failures other
// than a missing image carry no sentinel: they are the registry's, not the
// caller's or containerd's.
func pullError(name string, err error) error {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("pull %q: the registry has no such image (%v): %w", name, err, errdefs.ErrNotFound)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("pull %q: gave up after %s: %v", name, pullTimeout, err)
	case errors.As(err, &dnsErr), errors.As(err, &opErr):
		return fmt.Errorf("pull %q: registry unreachable: %v", name, err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("pull %q: the registry speaks plain HTTP; list its host:port in kilnd's --insecure-registries: %v", name, err)
	case cerrdefs.IsUnavailable(err):
		return fmt.Errorf("pull %q: containerd unavailable: %v: %w", name, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("pull %q: %w", name, err)
}

// newResolver builds a resolver that reads credentials from the docker
// config file at each pull, so a `docker login` is picked up without a
// restart, and speaks plain HTTP to the registries listed as insecure.
func newResolver(configPath string, insecure []string) (remotes.Resolver, error) {
	auths, err := loadRegistryAuths(configPath)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}
	authorizer := docker.NewDockerAuthorizer(
		docker.WithAuthClient(client),
		docker.WithAuthCreds(auths.lookup),
	)
	hosts := docker.ConfigureDefaultRegistries(
		docker.WithPlainHTTP(insecureMatcher(insecure)),
		docker.WithAuthorizer(authorizer),
		docker.WithClient(client),
	)
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts}), nil
}

// insecureMatcher matches a registry host against host[:port] entries. An
// entry without a port covers every port of that host, as operators list
// "myregistry" and mean it.
func insecureMatcher(entries []string) func(string) (bool, error) {
	type entry struct{ host, port string }
	list := make([]entry, 0, len(entries))
	for _, e := range entries {
		e = registryHost(e)
		if e == "" {
			continue
		}
		h, p, err := net.SplitHostPort(e)
		if err != nil {
			h, p = strings.Trim(e, "[]"), ""
		}
		list = append(list, entry{strings.ToLower(h), p})
	}
	return func(host string) (bool, error) {
		h, p, err := net.SplitHostPort(host)
		if err != nil {
			h, p = strings.Trim(host, "[]"), ""
		}
		h = strings.ToLower(h)
		for _, e := range list {
			if e.host == h && (e.port == "" || e.port == p) {
				return true, nil
			}
		}
		return false, nil
	}
}

// registryHost reduces a registry as people write it (with a scheme, a
// trailing path or slash) to the host[:port] a resolver asks about.
func registryHost(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}

// layerTracker follows a pull's layers through containerd's handlers and
// samples in-flight byte counts from the content store's ingests.
type layerTracker struct {
	cs ingestStatuser

	mu       sync.Mutex
	expected map[string]int64 // layer digest -> size, from the manifest
	active   map[string]ocispec.Descriptor
	done     map[string]bool
	last     PullProgress
}

// ingestStatuser is the part of containerd's content store the tracker
// reads, so it can be tested without containerd.
type ingestStatuser interface {
	Status(ctx context.Context, ref string) (content.Status, error)
}

func newLayerTracker(cs ingestStatuser) *layerTracker {
	return &layerTracker{cs: cs, expected: map[string]int64{},
		active: map[string]ocispec.Descriptor{}, done: map[string]bool{}}
}

// wrap is the handler wrapper given to containerd's Pull. The unpacker
// calls the wrapped handler for a layer when it fetches it, so the return
// of h.Handle for a layer means the layer's blob is in the content store.
func (t *layerTracker) wrap(h images.Handler) images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		layer := images.IsLayerType(desc.MediaType)
		if layer {
			t.mu.Lock()
			t.active[desc.Digest.String()] = desc
			t.mu.Unlock()
		}
		children, err := h.Handle(ctx, desc)
		t.mu.Lock()
		defer t.mu.Unlock()
		if layer {
			delete(t.active, desc.Digest.String())
			if err == nil {
				t.done[desc.Digest.String()] = true
			}
		}
		if err == nil && images.IsManifestType(desc.MediaType) {
			for _, c := range children {
				if images.IsLayerType(c.MediaType) {
					t.expected[c.Digest.String()] = c.Size
				}
			}
		}
		return children, err
	})
}

// sample returns the progress now, and false when nothing changed since
// the last sample, so idle ticks send nothing.
func (t *layerTracker) sample(ctx context.Context) (PullProgress, bool) {
	t.mu.Lock()
	active := make([]ocispec.Descriptor, 0, len(t.active))
	for _, d := range t.active {
		active = append(active, d)
	}
	t.mu.Unlock()
	offsets := make(map[string]int64, len(active))
	for _, d := range active {
		st, err := t.cs.Status(ctx, remotes.MakeRefKey(ctx, d))
		if err == nil {
			offsets[d.Digest.String()] = st.Offset
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	p := PullProgress{Status: PullDownloading, LayersTotal: len(t.expected)}
	for dg, size := range t.expected {
		p.Total += size
		switch {
		case t.done[dg]:
			p.LayersDone++
			p.Bytes += size
		default:
			p.Bytes += min(offsets[dg], size)
		}
	}
	if len(t.expected) == 0 {
		p.Status = PullResolving
	} else if p.LayersDone == p.LayersTotal {
		p.Status = PullUnpacking
	}
	if p == t.last {
		return p, false
	}
	t.last = p
	return p, true
}

// final is the progress of a finished pull. Layers whose snapshots
// already existed are never fetched, so they count as done here.
func (t *layerTracker) final() PullProgress {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := PullProgress{Status: PullDone, LayersTotal: len(t.expected), LayersDone: len(t.expected)}
	for _, size := range t.expected {
		p.Total += size
	}
	p.Bytes = p.Total
	t.last = p
	return p
}

// pullGroup makes concurrent pulls of one ref share a single pull. Its
// zero value is ready to use.
type pullGroup struct {
	mu     sync.Mutex
	ops    map[string]*pullOp
	closed bool
	wg     sync.WaitGroup
}

// pullOp is one pull in flight. Waiters read its progress and result;
// only the pulling goroutine writes them.
type pullOp struct {
	cancel context.CancelFunc
	done   chan struct{}
	img    containerd.Image
	err    error

	mu       sync.Mutex
	progress PullProgress
	changed  chan struct{} // closed and replaced on every update
}

func (op *pullOp) publish(p PullProgress) {
	op.mu.Lock()
	op.progress = p
	close(op.changed)
	op.changed = make(chan struct{})
	op.mu.Unlock()
}

func (op *pullOp) current() (PullProgress, <-chan struct{}) {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.progress, op.changed
}

// do runs pull for key unless one is already running, then waits for it
// within ctx. The pull itself runs on a context of its own: a caller that
// gives up (a call past its deadline) must not abort a pull other callers,
// or the next call, are waiting for.
func (g *pullGroup) do(ctx context.Context, key string, pull func(context.Context, func(PullProgress)) (containerd.Image, error), progress func(PullProgress)) (containerd.Image, error) {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, fmt.Errorf("pull %q: kiln is shutting down: %w", key, errdefs.ErrUnavailable)
	}
	if g.ops == nil {
		g.ops = map[string]*pullOp{}
	}
	op, ok := g.ops[key]
	if !ok {
		pctx, cancel := context.WithTimeout(context.Background(), pullTimeout)
		op = &pullOp{cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
		g.ops[key] = op
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer cancel()
			img, err := pull(pctx, op.publish)
			g.mu.Lock()
			delete(g.ops, key)
			g.mu.Unlock()
			op.img, op.err = img, err
			close(op.done)
		}()
	}
	g.mu.Unlock()

	var sent PullProgress
	for {
		p, changed := op.current()
		if progress != nil && p != sent && p.Status != "" {
			progress(p)
			sent = p
		}
		select {
		case <-op.done:
			if progress != nil && op.err == nil {
				if p, _ := op.current(); p != sent && p.Status != "" {
					progress(p)
				}
			}
			return op.img, op.err
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the pull of %q: %w", key, ctx.Err())
		case <-changed:
		}
	}
}

// close cancels the pulls in flight and waits for them to end; later
// pulls fail with ErrUnavailable.
func (g *pullGroup) close() {
	g.mu.Lock()
	g.closed = true
	for _, op := range g.ops {
		op.cancel()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// registryConfigPath is where credentials are read from: the configured
// path, else $DOCKER_CONFIG/config.json, else ~/.docker/config.json, the
// file `docker login` and compatible tools write.
func registryConfigPath(configured string) string {
	if configured != "" {
		return configured
	}
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		return filepath.Join(dir, "config.json")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".docker", "config.json")
}

// loadRegistryAuths reads a docker config file with docker's own loader,
// so what `docker login` wrote works as it does for docker: "auths", and
// credential helpers ("credsStore", "credHelpers"), which run as
// docker-credential-<name> when a host is looked up. A missing file means
// anonymous pulls; a file that cannot be parsed is an error, since
// silently pulling anonymously would fail later with a far less helpful
// "unauthorized".
func loadRegistryAuths(configured string) (*registryAuths, error) {
	path := registryConfigPath(configured)
	if path == "" {
		return &registryAuths{}, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &registryAuths{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: parse %s: %w", path, err)
	}
	cf.Filename = path
	// Docker matches entries by host name case-sensitively ("https://Reg:5000/v1/"
	// misses reg:5000); host names are not case-sensitive, and kiln asks by
	// the lower-cased host.
	auths := make(map[string]types.AuthConfig, len(cf.AuthConfigs))
	for key, ac := range cf.AuthConfigs {
		auths[strings.ToLower(registryHost(key))] = ac
	}
	cf.AuthConfigs = auths
	helpers := make(map[string]string, len(cf.CredentialHelpers))
	for key, h := range cf.CredentialHelpers {
		helpers[strings.ToLower(registryHost(key))] = h
	}
	cf.CredentialHelpers = helpers
	return &registryAuths{file: cf}, nil
}

// registryAuths answers containerd's authorizer from a docker config.
type registryAuths struct{ file *configfile.ConfigFile }

// lookup gives a username and secret for host, or empty strings for
// anonymous access. An identity token goes out with an empty username,
// which containerd takes as a refresh token.
func (a *registryAuths) lookup(host string) (string, string, error) {
	if a.file == nil {
		return "", "", nil
	}
	ac, err := a.file.GetAuthConfig(strings.ToLower(host))
	if err != nil {
		return "", "", fmt.Errorf("registry credentials for %s: %w", host, err)
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}
