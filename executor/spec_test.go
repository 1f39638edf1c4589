package executor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func buildSpec(t *testing.T, f *Function, imageUser string) *oci.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "test")
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "kiln-test"}, f.limits(imageUser, extras{env: []string{"EXTRA=1"}})...)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestSpecHardening(t *testing.T) {
	f := &Function{AppName: "a", FnName: "f", FnID: "id1", Format: "json-http", MemoryMB: 64,
		Config: map[string]string{"B": "2", "A": "1"}}
	s := buildSpec(t, f, "")
	if !s.Root.Readonly {
		t.Error("root filesystem is writable")
	}
	if !s.Process.NoNewPrivileges {
		t.Error("no_new_privs not set")
	}
	caps := s.Process.Capabilities
	if caps == nil || len(caps.Bounding)+len(caps.Effective)+len(caps.Permitted)+len(caps.Ambient)+len(caps.Inheritable) != 0 {
		t.Errorf("capabilities not all dropped: %+v", caps)
	}
	if s.Linux.Seccomp == nil || len(s.Linux.Seccomp.Syscalls) == 0 {
		t.Error("no seccomp profile")
	}
	if p := s.Linux.Resources.Pids; p == nil || p.Limit != 128 {
		t.Errorf("pids limit %+v, want 128", p)
	}
	m := s.Linux.Resources.Memory
	if m == nil || *m.Limit != 64<<20 || *m.Swap != 64<<20 {
		t.Errorf("memory %+v, want limit = swap = 64 MB", m)
	}
	if s.Process.User.UID != 65534 || s.Process.User.GID != 65534 {
		t.Errorf("user %+v, want 65534 for an image without a user", s.Process.User)
	}
	i := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/tmp" })
	if i < 0 || s.Mounts[i].Type != "tmpfs" || !slices.Contains(s.Mounts[i].Options, "size=64m") {
		t.Errorf("/tmp mount %+v", s.Mounts)
	}
	if !slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace && n.Path == "" }) {
		t.Error("no private network namespace")
	}
	if !slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.CgroupNamespace }) {
		t.Error("no cgroup namespace")
	}
	if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj <= 0 {
		t.Error("functions are not the node's first OOM victims")
	}
	if len(s.Linux.MaskedPaths) == 0 {
		t.Error("no masked /proc paths")
	}
	if s.Linux.Resources.CPU != nil && s.Linux.Resources.CPU.Quota != nil {
		t.Error("CPU quota set without cpus")
	}
	env := strings.Join(s.Process.Env, "\n")
	for _, want := range []string{"FN_FORMAT=json-http", "FN_APP_NAME=a", "FN_FN_NAME=f", "FN_FN_ID=id1", "FN_MEMORY=64", "FN_TYPE=sync", "A=1\nB=2", "EXTRA=1"} {
		if !strings.Contains(env, want) {
			t.Errorf("env lacks %q:\n%s", want, env)
		}
	}
}

func TestSpecOptions(t *testing.T) {
	f := &Function{FnName: "f", Format: "http", MemoryMB: 128, MilliCPUs: 500, TmpfsMB: 16, PidsLimit: 32, HostNetwork: true}
	s := buildSpec(t, f, "1000")
	if q := s.Linux.Resources.CPU; q == nil || *q.Quota != 50000 || *q.Period != 100000 {
		t.Errorf("cpu %+v, want half a CPU", q)
	}
	if s.Linux.Resources.Pids.Limit != 32 {
		t.Errorf("pids %d", s.Linux.Resources.Pids.Limit)
	}
	if s.Process.User.UID == 65534 {
		t.Error("an image that names a user must not be forced to 65534")
	}
	i := slices.IndexFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/tmp" })
	if i < 0 || !slices.Contains(s.Mounts[i].Options, "size=16m") {
		t.Errorf("/tmp mount %+v", s.Mounts)
	}
	if slices.ContainsFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == specs.NetworkNamespace }) {
		t.Error("host network asked for, but the spec has a network namespace")
	}
}

func TestContainerIDs(t *testing.T) {
	for in, want := range map[string]string{
		"hello":        "hello",
		"a..b":         "a-b",
		"_x_":          "x",
		"!!!":          "fn",
		"Fn.With-Dots": "Fn-With-Dots",
	} {
		if got := sanitizeID(in, 40); got != want {
			t.Errorf("sanitizeID(%q) = %q, want %q", in, got, want)
		}
	}
	id := newContainerID("my.fn")
	if !strings.HasPrefix(id, "kiln-my-fn-") || len(id) > 76 {
		t.Errorf("container id %q", id)
	}
	if newContainerID("x") == newContainerID("x") {
		t.Error("container ids repeat")
	}
}

func TestSocketPathStaysShort(t *testing.T) {
	if p := SocketPath("/short"); p != "/short/containerd.sock" {
		t.Errorf("short dir: %q", p)
	}
	long := "/" + strings.Repeat("d", 150)
	if p := SocketPath(long); len(p) >= 100 || SocketPath(long) != p {
		t.Errorf("long dir gives %q", p)
	}
}

func TestShimGroupsRollOver(t *testing.T) {
	r := &Runtime{groupSeq: map[string]uint64{}}
	first := r.shimGroup("fn")
	for i := 1; i < shimGroupSize; i++ {
		if g := r.shimGroup("fn"); g != first {
			t.Fatalf("container %d went to %s, want %s", i, g, first)
		}
	}
	second := r.shimGroup("fn")
	if second == first {
		t.Fatal("group did not roll over after its size")
	}
	r.nextShimGroup("fn")
	if g := r.shimGroup("fn"); g == second {
		t.Fatal("nextShimGroup did not start a new group")
	}
	if r.shimGroup("other") == first {
		t.Fatal("two fns share a group")
	}
	if !shimGone(errors.New("failed to start shim: start failed: dial unix /run/containerd/s/x: connect: no such file or directory")) {
		t.Error("a shim that went away is not recognised")
	}
}

func TestShimGroupClosesWhenItLosesAContainer(t *testing.T) {
	r := &Runtime{groupSeq: map[string]uint64{}}
	g := r.shimGroup("fn")
	r.closeShimGroup("fn", g)
	if r.shimGroup("fn") == g {
		t.Fatal("a container joined a group that had started to empty")
	}
	old := g
	g = r.shimGroup("fn")
	r.closeShimGroup("fn", old) // an older group: the current one stays
	if r.shimGroup("fn") != g {
		t.Fatal("closing an old group moved the current one")
	}
}
