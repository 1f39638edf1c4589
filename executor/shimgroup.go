package executor

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/services/tasks/v1"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/ttrpc"
)

// Shim lifetime. containerd starts one runc shim per container, or one per
// group of containers whose specs carry the same io.containerd.runc.v2.group
// annotation. A shim exits only when containerd sends it Shutdown while it
// serves no container, and containerd sends that from one place: the end of
// its task Delete. With groups, three things let a shim outlive every
// container it had (containerd 1.6.20 and 1.7.x alike; docs/SOAK.md):
//
//   - A Delete whose call from containerd to the shim is cut by a deadline
//     after the shim has done its part returns before the Shutdown, and
//     containerd keeps the task listed. The Go client's Task.Delete then
//     asks the shim first (Wait, Status), gets NotFound and returns without
//     calling containerd's Delete again, so no Shutdown ever comes. A group's
//     shim serialises the creates, deletes and exits of up to 16 containers
//     behind one lock, which is what makes its answers slow under churn.
//   - A create that meets its group's shim starting or exiting: the shim's
//     socket is named after the group, and a shim start that finds the name
//     taken but nobody answering removes it and starts another shim, as an
//     exiting shim removes it too, possibly after a new one took it. The
//     shim left holding no name gets no container and no Shutdown.
//   - containerd's Shutdown call has a deadline of its own (3 s, within the
//     caller's); one cut short is only logged.
//
// So kiln deletes tasks through containerd's task service directly, which
// reaches the Shutdown even for a task the shim has already forgotten;
// keeps a book of each shim (shimState) so no create runs beside the one
// that starts a group's shim or the deletes that can empty it; and, once
// the last of its containers in a shim is removed, checks the shim went
// with it and, if not, sends it Shutdown over its socket itself.

// shimGroupSize bounds how many containers share one shim. One shim
// serialises the task operations of its whole group: a burst of 100
// launches into a single shim timed out in containerd and left containers
// it could no longer delete. Groups of 16 keep most of the memory saving
// (a shim costs ~2.5 MB) and let bursts spread over several shims.
const shimGroupSize = 16

// shimExitGrace is how long a shim whose last container is removed may
// take to exit before kiln asks it to. containerd's Shutdown is part of the
// Delete kiln waited for, and the shim removes its socket at once, so this
// is generous.
const shimExitGrace = 3 * time.Second

// shimSocketRoot is where containerd 1.6 and 1.7 put shim sockets
// (defaults.DefaultStateDir + "/s"), whatever their own state dir.
var shimSocketRoot = "/run/containerd/s"

// errShimGone marks a task that could not be created or started because
// the shim of its group went away under it.
var errShimGone = errors.New("shim of the group went away")

func shimGone(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "failed to start shim") || strings.Contains(msg, "ttrpc: closed") ||
		strings.Contains(msg, "failed to create shim task")
}

// createRetries is how many times a container whose group's shim went
// away under its create is created again, each time in a new group.
const createRetries = 2

func (r *Runtime) create(ctx context.Context, f *Function, kind string, extra extras) (*box, error) {
	b, err := r.createOnce(ctx, f, kind, extra)
	for i := 0; i < createRetries && err != nil && r.cfg.GroupShims && errors.Is(err, errShimGone) && ctx.Err() == nil; i++ {
		// The group's shim was exiting (its last container had just gone)
		// as this container joined it: start a new group and try again.
		r.nextShimGroup(f.FnID)
		b, err = r.createOnce(ctx, f, kind, extra)
	}
	return b, err
}

// shimGroup names the shim group of a fn's next container and counts the
// container in it: consecutive launches fill a group, then start the next
// one. Old groups empty out as their containers go.
func (r *Runtime) shimGroup(fnID string) string {
	r.groupsMu.Lock()
	defer r.groupsMu.Unlock()
	n := r.groupSeq[fnID]
	r.groupSeq[fnID] = n + 1
	g := r.groupName(fnID, n)
	st := r.shimLocked(g)
	st.members++
	st.fnID = fnID
	return g
}

// closeShimGroup retires group: the fn's launches move to a new group if
// it is the one they are filling now, and a container that picked it but
// has not reached its task yet goes to a new group too (beginTask).
func (r *Runtime) closeShimGroup(fnID, group string) {
	r.groupsMu.Lock()
	r.closeShimGroupLocked(fnID, group)
	r.groupsMu.Unlock()
}

func (r *Runtime) closeShimGroupLocked(fnID, group string) {
	n := r.groupSeq[fnID]
	if r.groupName(fnID, n) == group {
		r.groupSeq[fnID] = (n/shimGroupSize + 1) * shimGroupSize
	}
	if st, ok := r.shims[group]; ok && !st.retired {
		st.retired = true
		st.notify()
	}
}

func (r *Runtime) groupName(fnID string, seq uint64) string {
	return "kiln-" + sanitizeID(fnID, 50) + "-" + strconv.FormatUint(seq/shimGroupSize, 36)
}

// nextShimGroup makes the fn's next container start a new shim group.
func (r *Runtime) nextShimGroup(fnID string) {
	r.groupsMu.Lock()
	n := r.groupSeq[fnID]
	r.groupSeq[fnID] = (n/shimGroupSize + 1) * shimGroupSize
	r.groupsMu.Unlock()
}

// shimKey is what containerd names a box's shim by: its group, or, not
// grouped, the container's own id.
func (b *box) shimKey() string {
	if b.shimGroup != "" {
		return b.shimGroup
	}
	return b.id
}

// shimState is kiln's book of one shim. containerd names a group's shim
// socket after the group, and its shim start, when it finds that socket
// taken, either joins the shim behind it or, if none answers, removes the
// file and starts another; an exiting shim removes the file too, possibly
// after a new shim has bound the name. So a create into a group whose
// shim is starting or exiting can leave a shim that holds the name of no
// socket and gets no container: nobody ever tells it to exit. kiln rules
// that out. The first task of a group is created alone (the others wait
// for it, then join its shim); no task is created into a group once it
// is retired; and the deletes that can empty the shim wait for the creates
// in flight, so no create ever meets an exiting shim.
type shimState struct {
	fnID string // of a group
	// members: containers that picked this shim and are not yet removed.
	members int
	// inShim: tasks created or being created in it and not yet deleted.
	inShim   int
	creating int
	spawning bool // the first create, which starts the shim, is in flight
	retired  bool // takes no new task
	changed  chan struct{}
}

func (st *shimState) notify() {
	close(st.changed)
	st.changed = make(chan struct{})
}

func (r *Runtime) shimLocked(key string) *shimState {
	if r.shims == nil {
		r.shims = map[string]*shimState{}
	}
	st, ok := r.shims[key]
	if !ok {
		st = &shimState{changed: make(chan struct{})}
		r.shims[key] = st
	}
	return st
}

// joinShim counts a container about to be created under shim key.
func (r *Runtime) joinShim(key string) {
	r.groupsMu.Lock()
	r.shimLocked(key).members++
	r.groupsMu.Unlock()
}

// errGroupRetired: the group a container was created for takes no more
// tasks; it is created again in a new one (see create).
var errGroupRetired = fmt.Errorf("%w: its group was closed before its task was created", errShimGone)

// beginTask is called before creating a task under shim key. In a group,
// it waits while the group's first task is being created, and refuses a
// retired group. endTask must follow.
func (r *Runtime) beginTask(ctx context.Context, group string) error {
	if group == "" {
		return nil
	}
	r.groupsMu.Lock()
	defer r.groupsMu.Unlock()
	for {
		st := r.shimLocked(group)
		switch {
		case st.retired:
			return errGroupRetired
		case !st.spawning:
			st.spawning = st.inShim == 0
			st.inShim++
			st.creating++
			return nil
		}
		if err := r.awaitChangeLocked(ctx, st); err != nil {
			return err
		}
	}
}

// awaitChangeLocked lets go of groupsMu until st changes or ctx ends, and
// holds it again when it returns.
func (r *Runtime) awaitChangeLocked(ctx context.Context, st *shimState) error {
	ch := st.changed
	r.groupsMu.Unlock()
	defer r.groupsMu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// endTask records that a task create under group returned; ok says whether
// the task exists. A group whose first task failed is retired: its shim
// may be half started.
func (r *Runtime) endTask(group string, ok bool) {
	if group == "" {
		return
	}
	r.groupsMu.Lock()
	defer r.groupsMu.Unlock()
	st := r.shimLocked(group)
	st.creating--
	if st.spawning {
		st.spawning = false
		if !ok {
			r.closeShimGroupLocked(st.fnID, group)
		}
	}
	st.notify()
}

// beginDelete waits, before a task of group is deleted, until no task is
// being created in it: the delete may be the one that empties the shim.
// The group is retired, so no create starts meanwhile.
func (r *Runtime) beginDelete(ctx context.Context, group string) error {
	if group == "" {
		return nil
	}
	r.groupsMu.Lock()
	defer r.groupsMu.Unlock()
	for {
		st := r.shimLocked(group)
		if !st.retired {
			st.retired = true
			st.notify()
		}
		if st.creating == 0 {
			return nil
		}
		if err := r.awaitChangeLocked(ctx, st); err != nil {
			return err
		}
	}
}

// taskDeleted records that a task created under group is gone.
func (r *Runtime) taskDeleted(group string) {
	if group == "" {
		return
	}
	r.groupsMu.Lock()
	st := r.shimLocked(group)
	st.inShim--
	st.notify()
	r.groupsMu.Unlock()
}

// leaveShim uncounts a removed container of fn fnID, in group (empty when
// not grouped), under shim key. A group that lost a container takes no new
// ones (destroy closes it as soon as one starts to go), so the last one out
// has kiln make sure the shim went with it.
func (r *Runtime) leaveShim(fnID, group, key string) {
	r.groupsMu.Lock()
	if group != "" {
		r.closeShimGroupLocked(fnID, group)
	}
	last := false
	if st, ok := r.shims[key]; ok {
		st.members--
		if last = st.members <= 0; last {
			delete(r.shims, key)
		}
	}
	r.groupsMu.Unlock()
	if last {
		r.reapShim(key)
	}
}

// reapShim checks, in a goroutine the runtime owns, that the shim named
// key exits now that kiln has no container under it, and asks it to over
// its socket if it has not. The shim honours Shutdown only when it serves
// no container at all, so this can never take one down with it; no process
// is signalled. At Close the check is made at once rather than abandoned.
func (r *Runtime) reapShim(key string) {
	sock := r.shimSocket(key)
	if sock == "" {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTimer(shimExitGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.bgCtx.Done():
		}
		switch err := shutdownShim(sock, key); {
		case errors.Is(err, errNoShim):
		case err != nil:
			r.log.WithError(err).WithField("shim", key).Warn("a shim outlived its containers and did not take a Shutdown")
		default:
			r.shimsReaped.Add(1)
			r.log.WithField("shim", key).Warn("a shim outlived its containers; kiln asked it to shut down")
		}
	}()
}

// errNoShim: nothing answers on the shim's socket, so it is gone.
var errNoShim = errors.New("no shim answers")

// shutdownShim sends Shutdown to the shim listening on sock, if one does,
// and waits for its socket to go.
func shutdownShim(sock, key string) error {
	conn, err := net.DialTimeout("unix", sock, 200*time.Millisecond)
	if err != nil {
		// No socket, or a file a dead shim left (containerd replaces it
		// when the name is next used).
		return errNoShim
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// The request's id is the shim's own; runc's shim only checks that it
	// has no container left.
	_, err = taskapi.NewTaskClient(c).Shutdown(ctx, &taskapi.ShutdownRequest{ID: key})
	if err != nil && !errors.Is(err, ttrpc.ErrClosed) {
		return fmt.Errorf("shutdown shim %q: %w", key, err)
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	return fmt.Errorf("shim %q still has its socket %s 2s after Shutdown: it serves a container kiln does not know of", key, sock)
}

// shimSocket is the socket containerd's runc shim for key listens on in
// kiln's namespace: sha256 of containerd's address, the namespace and the
// key (runtime/v2/shim.SocketAddress, the same in 1.6 and 1.7). Empty when
// the client does not say which containerd it dialled.
func (r *Runtime) shimSocket(key string) string {
	if r.containerdAddress == "" {
		return ""
	}
	d := sha256.Sum256([]byte(filepath.Join(r.containerdAddress, r.cfg.Namespace, key)))
	return filepath.Join(shimSocketRoot, fmt.Sprintf("%x", d))
}

// containerdAddress is the socket path the client dialled, which is the
// address containerd hands its shims (and hashes into their sockets).
func containerdAddress(target string) string {
	if p, ok := strings.CutPrefix(target, "unix://"); ok {
		return p
	}
	return ""
}

// deleteTask deletes container id's task through containerd's task
// service, not the client's Task.Delete: that asks the shim first and, when
// the shim has already forgotten the container (a Delete whose answer was
// lost), returns NotFound without calling containerd, which then never
// shuts the shim down. Called again after such a loss, containerd's Delete
// finds its stale task, gets NotFound from the shim, and still sends the
// Shutdown. A task that has not exited yet is killed first. NotFound means
// done: containerd has no task for id.
func (r *Runtime) deleteTask(ctx context.Context, id string, exited bool) error {
	svc := r.client.TaskService()
	if !exited {
		_, err := svc.Kill(ctx, &tasks.KillRequest{ContainerID: id, Signal: uint32(syscall.SIGKILL), All: true})
		if err = cerrdefs.FromGRPC(err); err != nil && !cerrdefs.IsNotFound(err) {
			r.log.WithError(err).WithField("container", id).Debug("kill before delete")
		}
	}
	_, err := svc.Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: id})
	if err = cerrdefs.FromGRPC(err); err != nil && !cerrdefs.IsNotFound(err) {
		return err
	}
	return nil
}
