// Package errdefs holds the few sentinel errors that cross kiln's layers.
// Lower layers wrap them with %w and a quoted id; only api maps them to
// HTTP statuses, so the rest of kiln never thinks in status codes.
package errdefs

import "errors"

var (
	// ErrNotFound: the thing named does not exist (fn, app, image).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the caller's input is wrong.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable: kiln cannot serve right now (containerd down,
	// shutting down); the caller may retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout: the function did not answer before its deadline.
	ErrTimeout = errors.New("function timed out")
	// ErrFunction: the function failed: it crashed, wrote a bad frame, or
	// was killed for memory. The message says which.
	ErrFunction = errors.New("function failed")
)
