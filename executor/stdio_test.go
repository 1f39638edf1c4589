package executor

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestWithDirectStdioWrapsTheCommand(t *testing.T) {
	s := &specs.Spec{Process: &specs.Process{Args: []string{"/function", "--flag"}}}
	if err := withDirectStdio("/host/kiln-init", "/data/fifo/c1")(context.Background(), nil, nil, s); err != nil {
		t.Fatal(err)
	}
	if want := []string{initMount, stdioMount, "--", "/function", "--flag"}; !slices.Equal(s.Process.Args, want) {
		t.Errorf("args %q, want %q", s.Process.Args, want)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	if m := mounts[initMount]; m.Source != "/host/kiln-init" || !slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "noexec") {
		t.Errorf("init mount %+v: want the host's kiln-init, read-only and executable", m)
	}
	if m := mounts[stdioMount]; m.Source != "/data/fifo/c1" || !slices.Contains(m.Options, "noexec") {
		t.Errorf("stdio mount %+v: want the container's own FIFO dir, noexec", m)
	}
	if err := withDirectStdio("/i", "/d")(context.Background(), nil, nil, &specs.Spec{Process: &specs.Process{}}); err == nil {
		t.Error("an image without a command was wrapped")
	}
}

func TestDirectStdioFIFOs(t *testing.T) {
	dir := t.TempDir()
	s, err := openStdio(dir, "c1", filepath.Join(dir, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.Config(); cfg.Stdin != "" || cfg.Stdout != "" || cfg.Stderr != "" {
		t.Errorf("the task is given FIFOs %+v: the shim would copy them", cfg)
	}
	root := filepath.Join(dir, "c1")
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("fifo dir: %v %v", fi, err)
	}
	for _, name := range []string{"stdin", "stdout", "stderr"} {
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o666 {
			t.Errorf("%s: %v %v: want a FIFO any user can open", name, fi, err)
		}
	}
	// A body written and closed before the function opens stdin is still
	// there when it does, then EOF.
	if _, err := s.stdin.Write([]byte("body")); err != nil {
		t.Fatal(err)
	}
	s.closeStdin()
	r, err := os.OpenFile(filepath.Join(root, "stdin"), os.O_RDONLY|syscall.O_NONBLOCK, 0) // as kiln-init opens it
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _ := r.Read(buf)
	r.Close()
	if string(buf[:n]) != "body" {
		t.Errorf("read %q after kiln closed its writer, want the body", buf[:n])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("fifo dir left after Close: %v", err)
	}
}
