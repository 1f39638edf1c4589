package store

import (
	"time"
)

// Errors are errdefs' sentinels: ErrNotFound for a missing record,
// ErrConflict for a taken name or id, ErrInvalid for input the store
// refuses (an empty name, a malformed cursor, a fn of another app; the api
// validates first, so reaching it from HTTP means a bug or a race).

// App groups fns and carries config shared by them.
type App struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Config      map[string]string `json:"config,omitempty"`
	Annotations map[string]any    `json:"annotations,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// Fn is a function: an image, a format and its limits.
type Fn struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	AppID       string `json:"app_id"`
	Image       string `json:"image"`
	Format      string `json:"format"`
	Memory      int64  `json:"memory"`         // MB
	CPUs        int64  `json:"cpus,omitempty"` // milli-CPU; 0 means no quota
	Timeout     int    `json:"timeout"`        // seconds
	IdleTimeout int    `json:"idle_timeout"`   // seconds
	// TmpfsSize is the size of the fn's writable /tmp in MB (default 64).
	TmpfsSize int64 `json:"tmpfs_size,omitempty"`
	// Scaling knobs; 0 means no limit (none warm).
	// MaxConcurrency bounds calls running or waiting at once (429 past it).
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// MaxInstances bounds the fn's containers at once.
	MaxInstances int `json:"max_instances,omitempty"`
	// MinWarm containers are kept warm even when idle.
	MinWarm int `json:"min_warm,omitempty"`
	// MaxRequests retires a container after that many calls.
	MaxRequests int `json:"max_requests,omitempty"`
	// Secrets names the app's secrets the fn's containers get, as files
	// under /run/secrets.
	Secrets     []string          `json:"secrets,omitempty"`
	Config      map[string]string `json:"config,omitempty"`
	Annotations map[string]any    `json:"annotations,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// Trigger maps an app-relative path (type http) to a fn.
type Trigger struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	AppID       string         `json:"app_id"`
	FnID        string         `json:"fn_id"`
	Type        string         `json:"type"`
	Source      string         `json:"source"`
	Annotations map[string]any `json:"annotations,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

// ListOptions selects one page of a list. Cursor is opaque to callers:
// it is the NextCursor of the previous page.
type ListOptions struct {
	Name    string
	AppID   string
	FnID    string
	Cursor  string
	PerPage int
}

// Defaults of a fn's fields, in the fields' units, defined once: the api
// applies them when a fn is created, and the calls package falls back to
// them for a record that lacks one.
const (
	DefaultFormat      = "default"
	DefaultMemoryMB    = 128
	DefaultTimeout     = 30 // seconds
	DefaultIdleTimeout = 30 // seconds
	DefaultTmpfsMB     = 64
)
