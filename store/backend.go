package store

import (
	"context"
	"time"
)

// backend is where a Store keeps its records: bbolt (boltStore) on one
// node, Postgres (pgStore) for several. It is the storage half of each of
// Store's methods; the Store does the half that must be the same for both
// (validation, ids, timestamps, defaults, copies, the generation), so the
// backends cannot drift apart on what a record looks like. It is this
// wide because it is the whole store, not one caller's view of it, and
// nothing outside the package sees it.
//
// What a backend must do, beyond storing: each method is one
// transaction; uniqueness, existence and cascade rules, the errors for
// them (errors.go) and the orders of listings are those documented on
// Store's methods. Records passed in are the backend's only for the
// call. The update methods take apply, which turns a copy of the stored
// record into the one to store or fails (the error aborts the
// transaction and is returned as is); it is called exactly once.
type backend interface {
	createApp(ctx context.Context, app *App) error
	getApp(ctx context.Context, id string) (*App, error)
	getAppByName(ctx context.Context, name string) (*App, error)
	listApps(ctx context.Context, opts ListOptions) ([]*App, string, error)
	updateApp(ctx context.Context, id string, apply func(old *App) (*App, error)) (*App, error)
	// deleteApp returns the ids of the deleted fns, in creation order.
	deleteApp(ctx context.Context, id string) ([]string, error)

	createFn(ctx context.Context, fn *Fn) error
	getFn(ctx context.Context, id string) (*Fn, error)
	getFnByName(ctx context.Context, appID, name string) (*Fn, error)
	listFns(ctx context.Context, opts ListOptions) ([]*Fn, string, error)
	updateFn(ctx context.Context, id string, apply func(old *Fn) (*Fn, error)) (*Fn, error)
	deleteFn(ctx context.Context, id string) error

	createTrigger(ctx context.Context, t *Trigger) error
	getTrigger(ctx context.Context, id string) (*Trigger, error)
	getTriggerBySource(ctx context.Context, appID, source string) (*Trigger, error)
	listTriggers(ctx context.Context, opts ListOptions) ([]*Trigger, string, error)
	listTriggersByType(ctx context.Context, typ string) ([]*Trigger, error)
	updateTrigger(ctx context.Context, id string, apply func(old *Trigger) (*Trigger, error)) (*Trigger, error)
	deleteTrigger(ctx context.Context, id string) error

	// createCall and enqueueCall get a record with its status and
	// creation time set; an empty AppID is to become the fn's.
	createCall(ctx context.Context, c *Call) error
	enqueueCall(ctx context.Context, c *Call, lim QueueLimits) error
	updateCall(ctx context.Context, fnID, callID string, apply func(old *Call) (*Call, error)) (*Call, error)
	saveCalls(ctx context.Context, writes []CallWrite) error
	getCall(ctx context.Context, fnID, callID string) (*Call, error)
	listCalls(ctx context.Context, fnID string, opts ListOptions) ([]*Call, string, error)
	listCallsByStatus(ctx context.Context, status string, limit int) ([]*Call, error)
	countQueued(ctx context.Context) (int, map[string]int, error)
	appendCallLog(ctx context.Context, fnID, callID string, p []byte, capBytes int) error
	getCallLog(ctx context.Context, fnID, callID string) ([]byte, error)
	// pruneCalls drops finished calls past the newest perFn of their fn
	// (perFn > 0) or created before cutoff (when not zero).
	pruneCalls(ctx context.Context, perFn int, cutoff time.Time) (int, error)

	// putSecret stores sec, keeping the CreatedAt of the secret it
	// replaces, and returns what it stored.
	putSecret(ctx context.Context, sec *Secret) (*Secret, error)
	getSecret(ctx context.Context, appID, name string) (*Secret, error)
	listSecrets(ctx context.Context, appID string) ([]*Secret, error)
	deleteSecret(ctx context.Context, appID, name string) error

	close() error

	// acquireLease takes or renews a lease (see Store.AcquireLease).
	acquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
}
