package executor

import (
	"context"
	"strings"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
)

// watchEvents follows containerd's event stream for two things kiln
// cannot learn from a call: OOM kills (so a 502 can name memory) and image
// changes (so a re-tagged image gets fresh containers). It reconnects
// until ctx ends.
func (r *Runtime) watchEvents(ctx context.Context) {
	defer r.wg.Done()
	for ctx.Err() == nil {
		ch, errs := r.client.Subscribe(r.ctx(ctx), `topic=="/tasks/oom"`, `topic~="^/images/"`)
	recv:
		for {
			select {
			case <-ctx.Done():
				return
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					r.log.WithError(err).Debug("containerd event stream ended; resubscribing")
				}
				break recv
			case env := <-ch:
				if env == nil {
					break recv
				}
				if strings.HasPrefix(env.Topic, "/images/") {
					r.forgetDigests()
					continue
				}
				ev, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				if oom, ok := ev.(*apievents.TaskOOM); ok {
					r.markOOM(oom.ContainerID)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (r *Runtime) markOOM(id string) {
	r.oomMu.Lock()
	defer r.oomMu.Unlock()
	r.ooms[id] = time.Now()
	// Forget old marks so the map stays small on a long-lived node.
	for k, t := range r.ooms {
		if time.Since(t) > 5*time.Minute {
			delete(r.ooms, k)
		}
	}
}

// oomKilled reports whether the kernel OOM-killed container id. The event
// can trail the exit a little, so it is given a short moment to arrive.
func (r *Runtime) oomKilled(id string) bool {
	deadline := time.Now().Add(300 * time.Millisecond)
	for {
		r.oomMu.Lock()
		_, ok := r.ooms[id]
		r.oomMu.Unlock()
		if ok || time.Now().After(deadline) {
			return ok
		}
		time.Sleep(20 * time.Millisecond)
	}
}
