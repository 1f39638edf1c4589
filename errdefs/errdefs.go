// Package errdefs holds the sentinel errors that cross kiln's layers, and
// nothing else: every package below api wraps one of them with %w and a
// quoted id, and api alone turns them into HTTP statuses (one table, in
// api/errors.go), so the rest of kiln never thinks in status codes.
//
// pool and protocol keep their own few sentinels, because they import
// nothing of kiln's; the calls package translates pool's into these.
package errdefs

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound: the thing named does not exist (app, fn, trigger,
	// call, image).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the caller's input is wrong.
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the request contradicts what exists (a taken name, an
	// image still in use).
	ErrConflict = errors.New("conflict")
	// ErrTooLarge: a request body over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnauthorized: no credentials, or wrong ones.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: valid credentials that do not cover this request.
	ErrForbidden = errors.New("forbidden")
	// ErrTooManyRequests: the fn is at its max_concurrency; the caller
	// may retry shortly.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrUnavailable: kiln cannot serve right now (no capacity before the
	// deadline, a full queue, containerd down, shutting down); the caller
	// may retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout: the function did not answer before its deadline.
	ErrTimeout = errors.New("function timed out")
	// ErrFunction: the function failed: it crashed (however early), wrote
	// a bad frame, or was killed for memory. The message says which.
	ErrFunction = errors.New("function failed")
	// ErrUpstream: a service kiln depends on for this request (an image
	// registry) failed.
	ErrUpstream = errors.New("upstream failed")
)

// Errorf returns an error whose message is exactly the formatted text
// (which may wrap another error with %w) and which also matches kind, so
// a message need not repeat the sentinel's words to carry its status.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
