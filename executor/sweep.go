package executor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/snapshots"
)

// Sweep removes every container, task and snapshot left in kiln's
// namespace, and the FIFO dir's leftovers. kilnd runs it before serving:
// after a crash nothing in the namespace belongs to a live instance, and
// the namespace is kiln's alone.
func (r *Runtime) Sweep(ctx context.Context) (int, error) {
	ctx = r.ctx(ctx)
	list, err := r.client.Containers(ctx)
	if err != nil {
		return 0, wrapContainerd("list containers", err)
	}
	n := 0
	for _, c := range list {
		if err := removeContainer(ctx, c); err != nil {
			r.log.WithError(err).WithField("container", c.ID()).Warn("orphan sweep: could not remove container")
			continue
		}
		n++
	}
	// Snapshots whose container record is already gone (a crash between
	// the two deletes) are found by listing the snapshotter itself.
	sn := r.client.SnapshotService(r.cfg.Snapshotter)
	var keys []string
	_ = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		// Container snapshots are keyed by kiln's container ids; anything
		// else (image layers, an unpack in progress) is not an orphan.
		if info.Kind == snapshots.KindActive && strings.HasPrefix(info.Name, "kiln-") {
			keys = append(keys, info.Name)
		}
		return nil
	})
	for _, k := range keys {
		if err := sn.Remove(ctx, k); err != nil && !cerrdefs.IsNotFound(err) {
			r.log.WithError(err).WithField("snapshot", k).Warn("orphan sweep: could not remove snapshot")
		}
	}
	for _, dir := range []string{r.cfg.FIFODir, r.cfg.SocketDir, r.cfg.SecretDir} {
		if dir == "" {
			continue
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return n, nil
}

func removeContainer(ctx context.Context, c containerd.Container) error {
	task, err := c.Task(ctx, nil)
	switch {
	case err == nil:
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		exitCh, werr := task.Wait(wctx)
		if kerr := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); kerr == nil && werr == nil {
			select {
			case <-exitCh:
			case <-wctx.Done():
			}
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
			return err
		}
	case !cerrdefs.IsNotFound(err):
		return err
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	return nil
}
