// Package executor runs functions in containers through containerd: it
// imports images, builds OCI specs, starts containers whose stdio are
// FIFOs kiln reads directly, and implements the hot Instance the pool
// manages. It also sweeps containers a crashed kilnd left behind.
package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
)

// Labels kiln puts on every container it creates, so the orphan sweep and
// operators can tell whose container it is.
const (
	LabelApp   = "kiln.io/app"
	LabelFn    = "kiln.io/fn"
	LabelFnID  = "kiln.io/fn-id"
	LabelKind  = "kiln.io/kind"
	labelGroup = "io.containerd.runc.v2.group"
)

// Config configures a Runtime.
type Config struct {
	Client    *containerd.Client
	Namespace string
	// FIFODir holds the stdio FIFOs of running containers.
	FIFODir string
	// SocketDir holds the socket dirs of http-stream containers; default
	// a "sock" dir beside FIFODir.
	SocketDir string
	// SecretDir holds the secret files of running containers; it must be
	// a tmpfs (kilnd mounts one). Empty: fns with secrets cannot start.
	SecretDir string
	// ListenTimeout bounds the wait for an http-stream function to listen
	// on its socket; 0 means DefaultListenTimeout.
	ListenTimeout time.Duration
	// Snapshotter defaults to overlayfs.
	Snapshotter string
	MaxBody     int64
	// MaxStream bounds a streamed response body; 0 means no bound.
	MaxStream int64
	// StopGrace is how long a container gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// InitPath is kiln-init on this host (cmd/kiln-init). Set, containers
	// get direct stdio: the function reads and writes kiln's FIFOs itself
	// instead of through copies the shim makes, two process hops fewer per
	// call. Empty, the shim copies.
	InitPath string
	// GroupShims makes the containers of one fn share a shim process,
	// shimGroupSize to a shim (see shimgroup.go).
	GroupShims bool
	Logger     *logrus.Entry
	// InsecureRegistries are host[:port] entries pulled from over plain
	// HTTP; an entry without a port covers every port of the host.
	InsecureRegistries []string
	// RegistryConfigPath is a docker config.json with registry
	// credentials; empty means $DOCKER_CONFIG/config.json or
	// ~/.docker/config.json.
	RegistryConfigPath string
}

// Runtime starts function containers. It is safe for concurrent use.
type Runtime struct {
	cfg    Config
	client *containerd.Client
	log    *logrus.Entry

	// unpackMu serialises unpacking so concurrent first calls of a fn
	// unpack its image once.
	unpackMu sync.Mutex

	digestsMu sync.Mutex
	digests   map[string]cachedDigest

	onColdStart func(app, fn string, took time.Duration)

	groupsMu sync.Mutex
	groupSeq map[string]uint64 // fn id -> containers launched, for shim groups
	// shims is kiln's book of its containers' shims, by group (or
	// container id when not grouped); see shimState.
	shims map[string]*shimState
	// containerdAddress is what containerd's shim sockets are named after.
	containerdAddress string
	shimsReaped       atomic.Int64

	oomMu sync.Mutex
	ooms  map[string]time.Time

	// secretMu guards the secrets tmpfs, mounted on first use.
	secretMu                   sync.Mutex
	secretReady, secretMounted bool

	// pulls shares one pull among every caller that needs a ref.
	pulls pullGroup

	wg     sync.WaitGroup
	bgCtx  context.Context // ends at Close; background work runs on it
	cancel context.CancelFunc
}

type cachedDigest struct {
	digest string
	at     time.Time
}

// digestTTL bounds how stale a ref→digest answer may be. Imports through
// kiln invalidate at once; the TTL covers images changed behind kiln's back.
const digestTTL = 2 * time.Second

// New returns a Runtime on an already connected client.
func New(cfg Config) (*Runtime, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("executor: no containerd client: %w", errdefs.ErrInvalid)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "kiln"
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = containerd.DefaultSnapshotter
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = protocol.DefaultMaxBody
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if err := os.MkdirAll(cfg.FIFODir, 0o700); err != nil {
		return nil, fmt.Errorf("executor: fifo dir: %w", err)
	}
	if cfg.InitPath != "" {
		if fi, err := os.Stat(cfg.InitPath); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("executor: kiln-init %s is not an executable file (%v)", cfg.InitPath, err)
		}
	}
	if cfg.SocketDir == "" {
		cfg.SocketDir = filepath.Join(filepath.Dir(cfg.FIFODir), "sock")
	}
	// Only root traverses it: the dirs inside are each one container's.
	if err := os.MkdirAll(cfg.SocketDir, 0o700); err != nil {
		return nil, fmt.Errorf("executor: socket dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{cfg: cfg, client: cfg.Client, log: cfg.Logger, digests: map[string]cachedDigest{},
		groupSeq: map[string]uint64{}, ooms: map[string]time.Time{}, bgCtx: ctx, cancel: cancel}
	if conn := cfg.Client.Conn(); conn != nil {
		r.containerdAddress = containerdAddress(conn.Target())
	}
	r.wg.Add(1)
	go r.watchEvents(ctx)
	return r, nil
}

// OnColdStart sets a callback for every cold (one-call) container start.
// Set it before serving.
func (r *Runtime) OnColdStart(f func(app, fn string, took time.Duration)) { r.onColdStart = f }

// Close stops the runtime's background work. Containers are the pool's
// to remove; Close does not touch them.
func (r *Runtime) Close() error {
	r.pulls.close()
	r.cancel()
	r.wg.Wait()
	r.unmountSecretFS()
	return nil
}

// ShimsReaped counts the shims that outlived all of kiln's containers in
// them and that kiln had to ask to shut down.
func (r *Runtime) ShimsReaped() int64 { return r.shimsReaped.Load() }

func (r *Runtime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

// Health reports whether containerd answers.
func (r *Runtime) Health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ok, err := r.client.IsServing(r.ctx(ctx))
	if err != nil || !ok {
		return fmt.Errorf("containerd is not serving: %v: %w", err, errdefs.ErrUnavailable)
	}
	return nil
}

// ImageID resolves ref to its manifest digest. It is on every call's path,
// so answers are cached briefly.
func (r *Runtime) ImageID(ctx context.Context, ref string) (string, error) {
	r.digestsMu.Lock()
	c, ok := r.digests[ref]
	r.digestsMu.Unlock()
	if ok && time.Since(c.at) < digestTTL {
		return c.digest, nil
	}
	img, err := r.ensureImage(ctx, ref)
	if err != nil {
		return "", err
	}
	d := img.Target().Digest.String()
	r.digestsMu.Lock()
	r.digests[ref] = cachedDigest{digest: d, at: time.Now()}
	r.digestsMu.Unlock()
	return d, nil
}

func (r *Runtime) forgetDigests() {
	r.digestsMu.Lock()
	clear(r.digests)
	r.digestsMu.Unlock()
}

// wrapContainerd turns containerd's errors into kiln's sentinels so api
// can answer with the right status.
func wrapContainerd(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w", what, errdefs.ErrNotFound)
	case cerrdefs.IsUnavailable(err):
		return fmt.Errorf("%s: containerd unavailable: %v: %w", what, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func newContainerID(fnName string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "kiln-" + sanitizeID(fnName, 40) + "-" + hex.EncodeToString(b[:])
}

// sanitizeID keeps what containerd accepts in an id ([A-Za-z0-9] joined
// by single [._-]) so operators can still read the fn's name in `ctr c ls`.
func sanitizeID(s string, max int) string {
	out := make([]byte, 0, len(s))
	sep := true
	for i := 0; i < len(s) && len(out) < max; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			out = append(out, c)
			sep = false
		case !sep:
			out = append(out, '-')
			sep = true
		}
	}
	for len(out) > 0 && out[len(out)-1] == '-' {
		out = out[:len(out)-1]
	}
	if len(out) == 0 {
		return "fn"
	}
	return string(out)
}

// fifoSetDir is where a container with direct stdio has its FIFOs.
func (r *Runtime) fifoSetDir(id string) string { return filepath.Join(r.cfg.FIFODir, id) }
