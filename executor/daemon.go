package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/sirupsen/logrus"
)

// InstallHint tells a person how to get what kiln needs.
const InstallHint = "install them with: sudo scripts/install-deps.sh (or: apt-get install containerd runc)"

// CheckBinaries reports a clear error when containerd or runc is missing.
func CheckBinaries() error {
	var missing []string
	for _, b := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%v not found in PATH; %s", missing, InstallHint)
	}
	return nil
}

// Daemon is a containerd that kilnd started and supervises: its root,
// state and socket live under one directory, so it never touches a system
// containerd. If it dies, Daemon restarts it.
type Daemon struct {
	dir     string
	address string
	log     *logrus.Entry

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	stopping bool

	wg sync.WaitGroup
}

// Address is the containerd socket path.
func (d *Daemon) Address() string { return d.address }

// PID is the current containerd process id (0 when not running).
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// SocketPath picks the socket path for a containerd under dir; unix
// socket paths are limited to about 108 bytes, so deep dirs get a short
// path in the temp dir named after a hash of dir.
func SocketPath(dir string) string {
	p := filepath.Join(dir, "containerd.sock")
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(os.TempDir(), "kiln-"+hex.EncodeToString(sum[:6])+".sock")
}

// StartContainerd starts a private containerd under dir and waits until
// it serves.
func StartContainerd(ctx context.Context, dir string, log *logrus.Entry) (*Daemon, error) {
	if err := CheckBinaries(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	d := &Daemon{dir: dir, address: SocketPath(dir), log: log.WithField("component", "containerd")}
	d.stopStale()
	if err := d.writeConfig(); err != nil {
		return nil, err
	}
	if err := d.start(); err != nil {
		return nil, err
	}
	if err := WaitServing(ctx, d.address, 20*time.Second); err != nil {
		d.Stop()
		return nil, fmt.Errorf("embedded containerd did not come up (log: %s): %w", d.logPath(), err)
	}
	d.wg.Add(1)
	go d.supervise()
	return d, nil
}

func (d *Daemon) logPath() string { return filepath.Join(d.dir, "containerd.log") }
func (d *Daemon) pidPath() string { return filepath.Join(d.dir, "containerd.pid") }

// stopStale stops a containerd that an earlier kilnd on this data dir
// started and that outlived it (kilnd was SIGKILLed). Only the pid kiln
// recorded is touched, and only if it still is a containerd.
func (d *Daemon) stopStale() {
	b, err := os.ReadFile(d.pidPath())
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil || pid <= 1 {
		return
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(exe) != "containerd" {
		return
	}
	d.log.WithField("pid", pid).Info("stopping containerd left by an earlier kilnd")
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

func (d *Daemon) writeConfig() error {
	// CRI is Kubernetes' plugin; kiln does not use it and it costs memory
	// and start time.
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`, filepath.Join(d.dir, "root"), filepath.Join(d.dir, "state"), d.address, d.address+".ttrpc")
	return os.WriteFile(filepath.Join(d.dir, "config.toml"), []byte(cfg), 0o600)
}

func (d *Daemon) start() error {
	logf, err := os.OpenFile(d.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(d.dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// containerd must not outlive kilnd: the kernel sends it SIGTERM when
	// kilnd dies, however it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	logf.Close()
	_ = os.WriteFile(d.pidPath(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	exited := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	d.log.WithField("pid", cmd.Process.Pid).Info("started embedded containerd")
	return nil
}

// supervise restarts containerd when it dies unexpectedly. Containers
// survive a containerd restart (their shims keep running), so kilnd's hot
// instances keep working once the client reconnects.
func (d *Daemon) supervise() {
	defer d.wg.Done()
	backoff := 200 * time.Millisecond
	for {
		d.mu.Lock()
		exited := d.exited
		d.mu.Unlock()
		<-exited
		d.mu.Lock()
		stopping := d.stopping
		d.mu.Unlock()
		if stopping {
			return
		}
		d.log.Warnf("embedded containerd exited; restarting in %s", backoff)
		time.Sleep(backoff)
		if backoff < 5*time.Second {
			backoff *= 2
		}
		d.mu.Lock()
		stopping = d.stopping
		d.mu.Unlock()
		if stopping {
			return
		}
		if err := d.start(); err != nil {
			d.log.WithError(err).Error("restart containerd")
			// Nothing to wait on; try again after the backoff.
			d.mu.Lock()
			ch := make(chan struct{})
			close(ch)
			d.exited = ch
			d.mu.Unlock()
			continue
		}
		if err := WaitServing(context.Background(), d.address, 20*time.Second); err == nil {
			backoff = 200 * time.Millisecond
		}
	}
}

// Stop stops containerd: SIGTERM, then SIGKILL after a grace. It does not
// remove containers; the pool does that before.
func (d *Daemon) Stop() {
	d.mu.Lock()
	d.stopping = true
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	d.wg.Wait()
	_ = os.Remove(d.pidPath())
}

// WaitServing polls the socket until containerd answers or timeout.
func WaitServing(ctx context.Context, address string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := Ping(ctx, address); err == nil {
			return nil
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if last == nil {
		last = errors.New("timed out")
	}
	return last
}

// Ping reports whether a containerd answers on address.
func Ping(ctx context.Context, address string) error {
	if _, err := os.Stat(address); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := containerd.New(address, containerd.WithTimeout(2*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	ok, err := c.IsServing(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("containerd is not serving")
	}
	return nil
}
