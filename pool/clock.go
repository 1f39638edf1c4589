package pool

import "time"

// Clock is the pool's only source of time, so tests can drive idle reaping
// deterministically.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// the returned Timer is stopped first. The pool never calls it with
	// its lock-protected state inconsistent, and f may take the pool lock,
	// so an implementation must not call f before AfterFunc returns.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface {
	// Stop reports whether it prevented the call. The pool copes with a
	// call that already started: a stale callback notices and does nothing.
	Stop() bool
}

// RealClock is the wall clock; the zero value is ready to use.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
