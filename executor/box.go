package executor

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// box is one created container with a started task and kiln's ends of
// its stdio FIFOs. Hot instances and cold runs are both built on it.
type box struct {
	r         *Runtime
	id        string
	container containerd.Container
	task      containerd.Task
	io        *stdio
	log       *logrus.Entry

	// exited is closed once the task's exit status is known.
	exited     chan struct{}
	exitStatus containerd.ExitStatus
	// exitHook, when set, runs once the exit is known (before exited
	// closes), so a hot instance learns of it without a goroutine of its
	// own waiting on exited.
	exitHook atomic.Pointer[func()]
	stopWait context.CancelFunc

	destroyOnce sync.Once
	// secretDir holds the container's secret files; removed with it.
	secretDir string

	fnID      string
	shimGroup string // empty when shims are not grouped
	// inShim: a task create was started (it may exist even if the create
	// failed); taskGone: containerd has confirmed it is deleted.
	inShim, taskGone bool
}

// cleanupTimeout bounds how long removing one container may take. Cleanup
// runs on a context detached from the call, so a caller that gave up
// cannot leave a container behind.
const cleanupTimeout = 15 * time.Second

// extras is what one kind of container adds to a fn's spec.
type extras struct {
	env    []string
	mounts []specs.Mount
}

func (r *Runtime) createOnce(ctx context.Context, f *Function, kind string, extra extras) (_ *box, retErr error) {
	ctx = r.ctx(ctx)
	img, err := r.ensureImage(ctx, f.Image)
	if err != nil {
		return nil, err
	}
	if err := r.ensureUnpacked(ctx, img); err != nil {
		return nil, err
	}
	ispec, err := img.Spec(ctx)
	if err != nil {
		return nil, wrapContainerd(fmt.Sprintf("image %q config", f.Image), err)
	}

	id := newContainerID(f.FnName)
	labels := map[string]string{LabelApp: f.AppName, LabelFn: f.FnName, LabelFnID: f.FnID, LabelKind: kind}
	var shimGroup string
	secretDir, secretMount, err := r.writeSecrets(id, ispec.Config.User, f.Secrets)
	if err != nil {
		return nil, err
	}
	if secretDir != "" {
		extra.mounts = append(extra.mounts, secretMount)
	}
	opts := f.specOpts(img, ispec.Config.User, extra)
	if r.cfg.GroupShims {
		// The runc shim reads its group from the spec's annotations (the
		// label is for people and the sweep): containers of one fn then
		// share one shim process instead of paying ~2.5 MB each.
		group := r.shimGroup(f.FnID)
		shimGroup = group
		labels[labelGroup] = group
		opts = append(opts, oci.WithAnnotations(map[string]string{labelGroup: group}))
	} else {
		r.joinShim(id)
	}
	// With direct stdio the container's FIFOs sit in a dir of its own,
	// named in the spec now and made by openStdio below.
	var directDir string
	if r.cfg.InitPath != "" {
		directDir = r.fifoSetDir(id)
		opts = append(opts, withDirectStdio(r.cfg.InitPath, directDir))
	}
	container, err := r.client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(r.cfg.Snapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithContainerLabels(labels),
		containerd.WithNewSpec(opts...),
	)
	if err != nil {
		if secretDir != "" {
			_ = os.RemoveAll(secretDir)
		}
		r.leaveShim(f.FnID, shimGroup, cmp.Or(shimGroup, id))
		return nil, wrapContainerd(fmt.Sprintf("create container for fn %q", f.FnName), err)
	}
	b := &box{r: r, id: id, container: container, exited: make(chan struct{}), fnID: f.FnID, shimGroup: shimGroup, secretDir: secretDir,
		log: r.log.WithFields(logrus.Fields{"app": f.AppName, "fn": f.FnName, "container": id})}
	defer func() {
		if retErr != nil {
			b.destroy(0)
		}
	}()

	b.io, err = openStdio(r.cfg.FIFODir, id, directDir)
	if err != nil {
		return nil, err
	}
	// One create at a time meets a group's shim starting, none meets it
	// exiting (see shimState).
	if err := r.beginTask(ctx, shimGroup); err != nil {
		return nil, fmt.Errorf("create task %q: %w", id, err)
	}
	b.inShim = true
	b.task, err = container.NewTask(ctx, func(string) (cio.IO, error) { return b.io, nil })
	r.endTask(shimGroup, err == nil)
	if err != nil {
		if shimGone(err) {
			return nil, fmt.Errorf("create task %q: %w: %w", id, errShimGone, err)
		}
		return nil, wrapContainerd(fmt.Sprintf("create task %q", id), err)
	}
	// Wait must be registered before Start, or a fast exit is missed.
	waitCtx, stopWait := context.WithCancel(r.ctx(context.Background()))
	b.stopWait = stopWait
	exitCh, err := b.task.Wait(waitCtx)
	if err != nil {
		return nil, wrapContainerd(fmt.Sprintf("wait task %q", id), err)
	}
	go b.waitExit(waitCtx, exitCh)
	if err := b.task.Start(ctx); err != nil {
		if shimGone(err) {
			return nil, fmt.Errorf("start task %q: %w: %w", id, errShimGone, err)
		}
		return nil, wrapContainerd(fmt.Sprintf("start task %q", id), err)
	}
	return b, nil
}

// waitExit records the task's exit. A Wait that fails is containerd going
// away (a restart), not the task exiting: the shim and the container live
// on, so kiln waits again once containerd is back rather than throwing a
// healthy container away.
func (b *box) waitExit(ctx context.Context, exitCh <-chan containerd.ExitStatus) {
	defer func() {
		if f := b.exitHook.Load(); f != nil {
			(*f)()
		}
		close(b.exited)
	}()
	for {
		st, ok := <-exitCh
		switch {
		case ok && st.Error() == nil:
			b.exitStatus = st
			return
		case ok && cerrdefs.IsNotFound(st.Error()):
			// The task is gone: it exited while nobody was watching.
			b.exitStatus = st
			return
		case ctx.Err() != nil:
			b.exitStatus = *containerd.NewExitStatus(containerd.UnknownExitStatus, time.Time{}, ctx.Err())
			return
		}
		select {
		case <-ctx.Done():
			b.exitStatus = *containerd.NewExitStatus(containerd.UnknownExitStatus, time.Time{}, ctx.Err())
			return
		case <-time.After(250 * time.Millisecond):
		}
		next, err := b.task.Wait(ctx)
		if err != nil {
			b.exitStatus = *containerd.NewExitStatus(containerd.UnknownExitStatus, time.Time{}, err)
			return
		}
		exitCh = next
	}
}

func (r *Runtime) ensureUnpacked(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, r.cfg.Snapshotter)
	if err == nil && ok {
		return nil
	}
	r.unpackMu.Lock()
	defer r.unpackMu.Unlock()
	if ok, err := img.IsUnpacked(ctx, r.cfg.Snapshotter); err == nil && ok {
		return nil
	}
	if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
		return wrapContainerd(fmt.Sprintf("unpack image %q", img.Name()), err)
	}
	return nil
}

func (b *box) onExit(f func(code uint32)) {
	g := func() { f(b.exitStatus.ExitCode()) }
	b.exitHook.Store(&g)
	select {
	case <-b.exited:
		// Exited before g was in place: waitExit may have missed it.
		g()
	default:
	}
}

// exitCode waits up to d for the task's exit and returns its code.
func (b *box) exitCode(d time.Duration) (uint32, bool) {
	select {
	case <-b.exited:
		return b.exitStatus.ExitCode(), true
	default:
	}
	if d <= 0 {
		return 0, false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.exited:
		return b.exitStatus.ExitCode(), true
	case <-t.C:
		return 0, false
	}
}

// exitKnown reports whether the task's exit has been seen.
func (b *box) exitKnown() bool {
	select {
	case <-b.exited:
		return true
	default:
		return false
	}
}

func (b *box) stdinPipe() deadlineWriter { return b.io.stdin }
func (b *box) stdoutPipe() io.Reader     { return b.io.stdout }
func (b *box) stderrPipe() io.Reader     { return b.io.stderr }
func (b *box) closeStdin()               { b.io.closeStdin() }
func (b *box) kill()                     { go b.killNow() }
func (b *box) logger() *logrus.Entry     { return b.log }

// destroy stops the task (SIGTERM, then SIGKILL after grace) and removes
// the task, the container, its snapshot and its FIFOs. Safe to call more
// than once; only the first call acts.
func (b *box) destroy(grace time.Duration) {
	b.destroyOnce.Do(func() {
		if b.shimGroup != "" {
			// A group that starts losing containers takes no new ones, so
			// no container ever joins a shim that is about to exit.
			b.r.closeShimGroup(b.fnID, b.shimGroup)
		}
		ctx, cancel := context.WithTimeout(b.r.ctx(context.Background()), cleanupTimeout)
		defer cancel()
		if b.task != nil {
			if grace > 0 {
				if err := b.task.Kill(ctx, syscall.SIGTERM); err == nil {
					select {
					case <-b.exited:
					case <-time.After(grace):
					}
				}
			}
			select {
			case <-b.exited:
			default:
				if err := b.task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !cerrdefs.IsNotFound(err) {
					b.log.WithError(err).Debug("kill")
				}
				select {
				case <-b.exited:
				case <-time.After(5 * time.Second):
					b.log.Warn("task did not exit 5s after SIGKILL; deleting it anyway")
				}
			}
		}
		if b.stopWait != nil {
			b.stopWait()
		}
		if b.io != nil {
			_ = b.io.Close()
		}
		if b.secretDir != "" {
			_ = os.RemoveAll(b.secretDir)
		}
		// containerd may be restarting, or a shim busy: keep trying until
		// the cleanup deadline, then hand the rest to the runtime's
		// janitor rather than leak the container. The removal has a
		// deadline of its own, not what the kill left of ctx: a Delete cut
		// short is what once left shims running (see shimgroup.go).
		rctx, rcancel := context.WithTimeout(b.r.ctx(context.Background()), cleanupTimeout)
		defer rcancel()
		if err := b.remove(rctx); err != nil {
			b.log.WithError(err).Warn("remove container: retrying in the background")
			b.r.retryRemove(b)
			return
		}
		b.r.leaveShim(b.fnID, b.shimGroup, b.shimKey())
	})
}

// remove deletes the task and the container with its snapshot, retrying
// until ctx ends.
func (b *box) remove(ctx context.Context) error {
	for {
		// Even without b.task: a NewTask whose answer was lost may still
		// have made one.
		var err error
		if b.inShim && !b.taskGone {
			err = b.r.beginDelete(ctx, b.shimGroup)
		}
		if err == nil && !b.taskGone {
			if err = b.r.deleteTask(ctx, b.id, b.exitKnown()); err == nil {
				b.taskGone = true
				if b.inShim {
					b.r.taskDeleted(b.shimGroup)
				}
			}
		}
		if err == nil {
			err = b.container.Delete(ctx, containerd.WithSnapshotCleanup)
		}
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// retryRemove keeps trying to remove a container whose cleanup timed out,
// for a few minutes, in a goroutine the runtime owns. What is still left
// when kilnd stops, the next start's orphan sweep removes.
func (r *Runtime) retryRemove(b *box) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx(r.bgCtx), 5*time.Minute)
		defer cancel()
		if err := b.remove(ctx); err != nil {
			b.log.WithError(err).Error("container not removed; the next start's orphan sweep will remove it")
			return
		}
		b.log.Info("container removed after a retry")
		r.leaveShim(b.fnID, b.shimGroup, b.shimKey())
	}()
}

// kill sends SIGKILL to every process of the task without waiting; the
// exit is seen by waitExit. It is how a cold run that passed its deadline
// ends at once: its stdout reaches EOF when the shim sees the exit.
func (b *box) killNow() {
	ctx, cancel := context.WithTimeout(b.r.ctx(context.Background()), cleanupTimeout)
	defer cancel()
	if err := b.task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !cerrdefs.IsNotFound(err) {
		b.log.WithError(err).Debug("kill")
	}
}
