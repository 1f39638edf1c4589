package executor

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kiln-run/kiln/errdefs"
)

// Function is what the executor needs to know about a fn to run it.
type Function struct {
	AppName string
	FnName  string
	FnID    string
	Image   string
	Format  string
	// Path is the trigger path the fn is reached by, for FN_PATH.
	Path     string
	MemoryMB int64
	// MilliCPUs is a CPU quota in thousandths of a CPU; 0 means none.
	MilliCPUs int64
	// Config is app config overlaid with fn config; it becomes env vars.
	Config  map[string]string
	TmpfsMB int64
	// PidsLimit bounds processes in the container; 0 means 128.
	PidsLimit int64
	// HostNetwork shares the node's network namespace (opt-in, admin gated).
	HostNetwork bool
	// Secrets are files under /run/secrets, never env.
	Secrets []Secret
}

// env is the contract's environment for every format; config comes after
// the FN_ variables so it cannot be mistaken for them, and in a stable
// order so two containers of one fn see the same env.
func (f *Function) env() []string {
	env := []string{
		"FN_FORMAT=" + f.Format,
		"FN_APP_NAME=" + f.AppName,
		"FN_FN_NAME=" + f.FnName,
		"FN_FN_ID=" + f.FnID,
		"FN_PATH=" + f.Path,
		"FN_MEMORY=" + strconv.FormatInt(f.MemoryMB, 10),
		"FN_TYPE=sync",
	}
	keys := make([]string, 0, len(f.Config))
	for k := range f.Config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+f.Config[k])
	}
	return env
}

const cpuPeriod = 100000 // µs; the kernel default CFS period

// specOpts builds the container's OCI spec: the image's config, then the
// fn's env and limits, then kiln's hardening, so an image cannot loosen it.
func (f *Function) specOpts(img containerd.Image, imageUser string, extra extras) []oci.SpecOpts {
	return append([]oci.SpecOpts{oci.WithImageConfig(img)}, f.limits(imageUser, extra)...)
}

// limits is everything of the spec that does not come from the image.
func (f *Function) limits(imageUser string, extra extras) []oci.SpecOpts {
	memBytes := f.MemoryMB << 20
	tmpfs := f.TmpfsMB
	if tmpfs <= 0 {
		tmpfs = 64
	}
	pids := f.PidsLimit
	if pids <= 0 {
		pids = 128
	}
	opts := []oci.SpecOpts{
		oci.WithEnv(append(f.env(), extra.env...)),
		oci.WithHostname("kiln"),
		oci.WithRootFSReadonly(),
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(nil),
		oci.WithAmbientCapabilities(nil),
		seccomp.WithDefaultProfile(),
		oci.WithPidsLimit(pids),
		// Its own cgroup namespace, so /proc/self/cgroup does not show
		// the node's cgroup layout.
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}),
		withOOMScoreAdj(oomScoreAdj),
		withMemoryNoSwap(memBytes),
		oci.WithMounts([]specs.Mount{{
			Destination: "/tmp",
			Type:        "tmpfs",
			Source:      "tmpfs",
			Options:     []string{"nosuid", "nodev", "noexec", "mode=1777", "size=" + strconv.FormatInt(tmpfs, 10) + "m"},
		}}),
	}
	if len(extra.mounts) > 0 {
		// After /tmp: a mount below it (http-stream's socket dir) goes on
		// top of the tmpfs.
		opts = append(opts, oci.WithMounts(extra.mounts))
	}
	if imageUser == "" {
		// An image that names no user would run as root; kiln runs it as nobody.
		opts = append(opts, oci.WithUIDGID(65534, 65534))
	}
	if f.MilliCPUs > 0 {
		opts = append(opts, oci.WithCPUCFS(f.MilliCPUs*cpuPeriod/1000, cpuPeriod))
	}
	if f.HostNetwork {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostResolvconf, oci.WithHostHostsFile)
	}
	return opts
}

// oomScoreAdj makes the kernel pick a function over kilnd or containerd
// when the whole node runs out of memory.
const oomScoreAdj = 500

func withOOMScoreAdj(adj int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.OOMScoreAdj = &adj
		return nil
	}
}

// withMemoryNoSwap sets memory and memory+swap to the same value: a fn
// that outgrows its memory is OOM-killed rather than slowed by swapping.
func withMemoryNoSwap(limit int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		if s.Linux.Resources.Memory == nil {
			s.Linux.Resources.Memory = &specs.LinuxMemory{}
		}
		s.Linux.Resources.Memory.Limit = &limit
		swap := limit
		s.Linux.Resources.Memory.Swap = &swap
		return nil
	}
}

// Where kiln-init and the stdio FIFOs appear in a container with direct
// stdio (Config.InitPath). Under a dir of kiln's own, which no image has:
// runc makes the mount points before it makes the root read-only.
const (
	initMount  = "/.kiln/init"
	stdioMount = "/.kiln/stdio"
)

// withDirectStdio runs the container's command through kiln-init, which
// takes the FIFOs in dir (bind-mounted at stdioMount) as its stdio and
// execs the command; see cmd/kiln-init. It goes last: it wraps the
// command the other options settled on.
func withDirectStdio(initPath, dir string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Process == nil || len(s.Process.Args) == 0 {
			return fmt.Errorf("%w: the image names no command to run", errdefs.ErrInvalid)
		}
		s.Process.Args = append([]string{initMount, stdioMount, "--"}, s.Process.Args...)
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: initMount, Type: "bind", Source: initPath, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
			specs.Mount{Destination: stdioMount, Type: "bind", Source: dir, Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"}},
		)
		return nil
	}
}
