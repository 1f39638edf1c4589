package pool

import (
	"cmp"
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"time"
)

var (
	// ErrNoCapacity means the queue was full, or no instance became free
	// before the caller's deadline; callers answer 503 with Retry-After.
	ErrNoCapacity = errors.New("no capacity")
	// ErrClosed is returned by Acquire once Close has begun.
	ErrClosed = errors.New("pool is shutting down")
)

// Defaults for the zero values in Config and Spec.
const (
	DefaultMaxQueue      = 1024
	DefaultLaunchTimeout = 60 * time.Second
	DefaultCloseTimeout  = 10 * time.Second
	DefaultIdleTimeout   = 30 * time.Second
)

// ErrExited is what the caller a launch was for gets, wrapped, when the
// instance was already Done by the time it came up (it crashed on start)
// and its Err does not say why.
var ErrExited = errors.New("instance exited right after it started")

// Instance is one warm container.
type Instance interface {
	// Done is closed when the instance can no longer serve (it exited or
	// broke). A nil channel means it never reports that on its own.
	Done() <-chan struct{}
	// Err says why the instance can no longer serve once Done is closed
	// (it exited, was killed for memory, broke its protocol), so callers
	// can tell its failures from the pool's; nil while it can serve. It
	// must not block: the pool calls it with its lock held.
	Err() error
	// Close stops and removes it; it must be idempotent.
	Close(ctx context.Context) error
}

// Spec says which instances a call can use and how to start one.
type Spec[I Instance] struct {
	// Key covers everything that changes the container (image digest,
	// format, memory, cpus, config, timeouts). The first Spec seen for a
	// Key decides its MemoryMB, IdleTimeout, MaxInstances and
	// MaxRequests.
	Key string
	// Group is the fn id: when a new Key shows up for a Group, instances
	// of the group's older keys drain. Groups are also what the pool
	// shares launch slots, memory and the queue between (see the package
	// doc). Empty means no group: the Key is then a group of its own.
	Group string
	// App and Fn are names for Hooks and error messages only.
	App, Fn string
	// MemoryMB is held while the instance lives (starting, idle, busy or
	// being closed).
	MemoryMB int64
	// IdleTimeout closes instances idle for that long; <= 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxInstances bounds the instances of the Group (all its keys)
	// alive at once: starting, idle or busy; closing ones do not count.
	// A caller beyond it queues, as one waiting for memory does, until an
	// instance of its key is released to it or one of the group's closes.
	// The group's newest key decides it, so instances of drained keys
	// count against the new key's limit until they are gone. 0 (or
	// negative) means no limit.
	MaxInstances int
	// MaxRequests retires an instance once it has served that many
	// leases: at the Release of the last one it is closed instead of
	// being reused, and Hooks.Retired reports it. 0 (or negative) means
	// no limit.
	MaxRequests int
	// Launch starts one instance. Its ctx is the pool's, not the
	// caller's: it ends at Config.LaunchTimeout or when the pool closes.
	// When it fails it must leave nothing behind: the pool frees the
	// memory at once.
	Launch func(ctx context.Context) (I, error)
}

// Config tunes a Pool; the zero value is usable.
type Config struct {
	// CapacityMB is the memory all instances may hold together; 0 means
	// unlimited (see DetectCapacityMB).
	CapacityMB int64
	// MaxQueue bounds the calls queued, that is waiting for memory, a
	// launch slot or their group's MaxInstances (calls waiting for a
	// launch already under way do not count), shared fairly between
	// groups: with G groups having queued calls, a group may queue
	// max(1, MaxQueue/G) (see the package doc). 0 means DefaultMaxQueue,
	// negative means no queueing at all.
	MaxQueue int
	// MaxLaunches bounds the launches in flight across the pool at once;
	// more wait for a slot, which goes to the group with the fewest
	// launches in flight among those memory admits (see the package doc).
	// 0 means max(4, 2*GOMAXPROCS), negative means unlimited.
	MaxLaunches int
	// LaunchTimeout bounds one launch regardless of the callers waiting
	// for it; 0 means DefaultLaunchTimeout.
	LaunchTimeout time.Duration
	// CloseTimeout bounds one Instance.Close; 0 means DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Clock is nil for RealClock.
	Clock Clock
	Hooks Hooks
}

// Hooks are optional observation callbacks, for metrics and logs; any field
// may be nil. None may block or call back into the Pool.
//
// Changed and MemoryUsed report gauges, so they are called with the pool
// lock held: that keeps them in the order the changes happened, so the last
// value reported is the current one. The others are called without any
// pool lock.
type Hooks struct {
	// Launched reports every launch, failed ones with err set.
	Launched func(app, fn string, took time.Duration, err error)
	// Evicted reports an idle instance closed to make room for another key.
	Evicted func(app, fn string)
	// QueueWait reports how long an Acquire waited, for a launch or in
	// the queue, whatever the outcome; Acquires served by an idle
	// instance at once do not report.
	QueueWait func(app, fn string, waited time.Duration)
	// Retired reports an instance closed because it had served
	// Spec.MaxRequests leases; one discarded, or found dead, on its last
	// lease is not retired but closed for that.
	Retired func(app, fn string)
	// Closed reports every Instance.Close, with what it returned.
	Closed func(app, fn string, err error)
	// Changed gives the counts for app/fn (all its keys) after they changed.
	Changed func(app, fn string, c Counts)
	// MemoryUsed gives the memory held after it changed.
	MemoryUsed func(usedMB, capacityMB int64)
}

// Counts are what Hooks.Changed reports for one app/fn, summed over its
// keys.
type Counts struct {
	Starting, Idle, Busy int // instances
	// Waiting are the fn's calls blocked in Acquire, the fn's queue as
	// its users see it: Queued, and those waiting for a launch under way.
	Waiting int
	// Queued are those with no launch under way for them: waiting for
	// memory, a launch slot or MaxInstances (as in Stats).
	Queued int
}

// Stats is a snapshot of a Pool.
type Stats struct {
	UsedMB, CapacityMB int64
	// ReservedMB is what the keys' min-warm (SetMinWarm) reserve
	// together: MinWarm times the key's memory, summed.
	ReservedMB int64
	Waiting    int // calls blocked in Acquire
	Queued     int // of those, the ones waiting for memory, a launch slot or MaxInstances (no launch under way for them)
	Launching  int // launches in flight, each holding a launch slot
	Busy       int // leases held
	Closing    int // instances being closed
	Keys       []KeyStats
	// Groups are those of the keys in Keys, and those whose instances
	// are still being closed.
	Groups []GroupStats
}

// GroupStats are what fairness between groups is decided on, sorted by
// Group, then Key, in Stats.
type GroupStats struct {
	// Group is Spec.Group. A key without a group is a group of its own:
	// Group is empty and Key names it.
	Group, Key string
	Launching  int   // launches in flight
	Queued     int   // calls waiting with no launch under way for them
	Closing    int   // instances being closed
	MemoryMB   int64 // held by its starting, idle, busy and closing instances
	// Instances are its starting, idle and busy ones, what MaxInstances
	// (0: no limit) bounds.
	Instances, MaxInstances int
}

// KeyStats are the counts of one key, sorted by Key in Stats.
type KeyStats struct {
	Key, Group, App, Fn           string
	Starting, Idle, Busy, Waiting int
	// MinWarm is what SetMinWarm asks to keep alive.
	MinWarm int
	// Drained keys only finish what they have: their instances close as
	// they are released.
	Drained bool
}

type state uint8

const (
	stateNew state = iota
	stateIdle
	stateBusy
	stateClosing
)

type entry[I Instance] struct {
	inst      I
	done      <-chan struct{}
	ks        *keyState[I]
	mb        int64
	state     state
	idleSince time.Time
	upAt      time.Time // when its launch returned
	leases    int       // handed out so far, for MaxRequests
	// handedOff is the part of mb an eviction already passed on to the
	// launch it makes room for; closing frees only the rest.
	handedOff int64
	gone      chan struct{} // closed when the pool lets go; ends the Done watcher
	closed    chan struct{} // closed once Close returned: the memory is really free
	byKey     links[entry[I]]
	byAge     links[entry[I]]
}

type launchOp[I Instance] struct {
	ks *keyState[I]
	// owner is the waiter that gets a launch error; nil while orphaned
	// (every waiter of the key already has a launch of its own).
	owner  *waiter[I]
	cancel context.CancelFunc
	// handedMB is what evictions handed it, which it waits to be gone;
	// never more than its own memory.
	handedMB int64
}

type result[I Instance] struct {
	e   *entry[I]
	err error
}

type where uint8

const (
	nowhere where = iota
	whereQueue
	whereLaunch
)

type waiter[I Instance] struct {
	ks       *keyState[I]
	seq      uint64
	launchFn func(context.Context) (I, error)
	ch       chan result[I] // buffered: the single send never blocks
	where    where
	launch   *launchOp[I]
	served   bool
	byKey    links[waiter[I]]
	inQueue  links[waiter[I]] // on its group's queue
}

type keyState[I Instance] struct {
	key, group  string
	grp         *group[I]
	fc          *fnCounts
	mb          int64
	idleTimeout time.Duration
	maxRequests int
	drained     bool
	forgotten   bool
	warm        warmState[I]
	idle        ilist[entry[I]] // oldest first; LIFO pops from the tail
	busy        int
	starting    int
	// Waiters with a launch under way for them and waiters without one.
	// A launch is always given to the oldest waiter without one, so these
	// are the older and the newer part of the key's waiters.
	withLaunch, queued ilist[waiter[I]]
	orphans            []*launchOp[I]
}

// fnCounts aggregates the keys of one app/fn for Hooks.Changed.
type fnCounts struct {
	app, fn string
	Counts
	keys  int
	dirty bool
}

type fnID struct{ app, fn string }

// Pool keeps warm instances of type I; it is safe for concurrent use.
type Pool[I Instance] struct {
	capacityMB    int64
	maxQueue      int
	maxLaunches   int
	launchTimeout time.Duration
	closeTimeout  time.Duration
	clock         Clock
	hooks         Hooks

	// wg counts every goroutine the pool starts. Add happens under mu and
	// never after Close saw the pool empty, or from a goroutine already
	// counted, so it cannot race with Wait.
	wg sync.WaitGroup

	// One mutex guards everything below; waiters block on their own
	// channel, never on the mutex. The pool's unexported methods run with
	// it held unless their comment says otherwise.
	mu       sync.Mutex
	closed   bool
	usedMB   int64
	idleMB   int64
	memDirty bool
	// admitDue asks unlock to run admit: something freed a launch slot,
	// room under a MaxInstances, or memory, or a min-warm key wants a
	// launch.
	admitDue bool
	// What the min-warm of keys keep from everyone else (see warm.go).
	reservedMB, floorMB int64
	warming             ilist[keyState[I]]      // keys short of their min-warm, ready to launch
	keys                map[string]*keyState[I] // the live key of each Key
	retired             map[*keyState[I]]struct{}
	groups              map[groupID]*group[I]
	fns                 map[fnID]*fnCounts
	dirty               []*fnCounts
	live                map[*entry[I]]struct{} // every instance not yet being closed
	launches            map[*launchOp[I]]struct{}
	idle                ilist[entry[I]] // all idle instances, least recently used first
	queued              int             // waiters without a launch, on their groups' queues
	queuedMB            int64           // the memory they need together
	queuedGrps          int             // groups with queued waiters, for the queue share
	waiting             int
	seq                 uint64
	inflight            int
	closing             int
	leasesDone          chan struct{}
	shutdown            chan struct{}
	reapTimer           Timer
	reapAt              time.Time
	reapGen             uint64
	// The groups with queued waiters, in the order memory goes to them
	// and in the order launch slots do.
	byMemory, bySlots groupHeap[I]
	sim               []simGroup[I] // scratch for firstInSlotOrder
	simGen            uint64        // tells firstInSlotOrder's scratch in keys apart

	// afterUnlock lets tests wait for any state change without sleeping.
	afterUnlock func()
}

func entryByKey[I Instance](e *entry[I]) *links[entry[I]]        { return &e.byKey }
func entryByAge[I Instance](e *entry[I]) *links[entry[I]]        { return &e.byAge }
func waiterByKey[I Instance](w *waiter[I]) *links[waiter[I]]     { return &w.byKey }
func waiterInQueue[I Instance](w *waiter[I]) *links[waiter[I]]   { return &w.inQueue }
func keyWarming[I Instance](ks *keyState[I]) *links[keyState[I]] { return &ks.warm.links }

// New returns an empty pool.
func New[I Instance](cfg Config) *Pool[I] {
	p := &Pool[I]{
		capacityMB:    max(cfg.CapacityMB, 0),
		maxQueue:      cfg.MaxQueue,
		launchTimeout: cmp.Or(cfg.LaunchTimeout, DefaultLaunchTimeout),
		closeTimeout:  cmp.Or(cfg.CloseTimeout, DefaultCloseTimeout),
		clock:         cfg.Clock,
		hooks:         cfg.Hooks,
		keys:          make(map[string]*keyState[I]),
		retired:       make(map[*keyState[I]]struct{}),
		groups:        make(map[groupID]*group[I]),
		fns:           make(map[fnID]*fnCounts),
		live:          make(map[*entry[I]]struct{}),
		launches:      make(map[*launchOp[I]]struct{}),
		shutdown:      make(chan struct{}),
	}
	switch {
	case p.maxQueue == 0:
		p.maxQueue = DefaultMaxQueue
	case p.maxQueue < 0:
		p.maxQueue = 0
	}
	switch {
	case cfg.MaxLaunches == 0:
		p.maxLaunches = max(4, 2*runtime.GOMAXPROCS(0))
	case cfg.MaxLaunches < 0:
		p.maxLaunches = math.MaxInt
	default:
		p.maxLaunches = cfg.MaxLaunches
	}
	if p.clock == nil {
		p.clock = RealClock{}
	}
	p.idle.at = entryByAge[I]
	p.warming.at = keyWarming[I]
	p.byMemory = groupHeap[I]{less: lessMemory[I], at: memoryAt[I]}
	p.bySlots = groupHeap[I]{less: lessSlots[I], at: slotsAt[I]}
	if h := p.hooks.MemoryUsed; h != nil {
		h(0, p.capacityMB)
	}
	return p
}
