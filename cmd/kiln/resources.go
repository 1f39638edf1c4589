package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// The CLI keeps its own view of kilnd's resources rather than importing
// store: it speaks the HTTP contract, and fields it does not show are
// carried through -o json untouched.
type appResource struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Config      map[string]string `json:"config,omitempty"`
	Annotations map[string]any    `json:"annotations,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

type fnResource struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	AppID       string            `json:"app_id"`
	Image       string            `json:"image"`
	Format      string            `json:"format"`
	Memory      int64             `json:"memory"`
	CPUs        int64             `json:"cpus"`
	Timeout     int               `json:"timeout"`
	IdleTimeout int               `json:"idle_timeout"`
	Config      map[string]string `json:"config,omitempty"`
	Annotations map[string]any    `json:"annotations,omitempty"`
	// Secrets names the app's secrets the fn's containers get as files.
	Secrets []string `json:"secrets,omitempty"`
	// Scaling knobs; 0 is kilnd's default (no limit, none kept warm).
	MaxConcurrency int       `json:"max_concurrency,omitempty"`
	MaxInstances   int       `json:"max_instances,omitempty"`
	MinWarm        int       `json:"min_warm,omitempty"`
	MaxRequests    int       `json:"max_requests,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

type triggerResource struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	AppID       string         `json:"app_id"`
	FnID        string         `json:"fn_id"`
	Type        string         `json:"type"`
	Source      string         `json:"source"`
	Annotations map[string]any `json:"annotations,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
}

type callResource struct {
	ID          string    `json:"id"`
	Status      string    `json:"status"`
	AppID       string    `json:"app_id"`
	FnID        string    `json:"fn_id"`
	Error       string    `json:"error"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at"`
	CompletedAt time.Time `json:"completed_at"`
}

type imageResource struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// appByName finds an app by exact name. The server filters by name, but
// the CLI checks the match itself so a server that treats the filter as a
// prefix cannot point a delete at the wrong app.
// clientForApp is the API client and the app named name, which most
// commands start from.
func (c *cli) clientForApp(ctx context.Context, name string) (*client, appResource, error) {
	cl, err := c.client()
	if err != nil {
		return nil, appResource{}, err
	}
	app, _, err := cl.appByName(ctx, name)
	return cl, app, err
}

func (c *client) appByName(ctx context.Context, name string) (appResource, json.RawMessage, error) {
	apps, raw, err := listInto[appResource](ctx, c, "/v2/apps", url.Values{"name": {name}})
	if err != nil {
		return appResource{}, nil, err
	}
	for i, a := range apps {
		if a.Name == name {
			return a, raw[i], nil
		}
	}
	return appResource{}, nil, &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("app %q not found", name)}
}

func (c *client) fnByName(ctx context.Context, app appResource, name string) (fnResource, json.RawMessage, error) {
	fns, raw, err := listInto[fnResource](ctx, c, "/v2/fns", url.Values{"app_id": {app.ID}, "name": {name}})
	if err != nil {
		return fnResource{}, nil, err
	}
	for i, f := range fns {
		if f.Name == name && f.AppID == app.ID {
			return f, raw[i], nil
		}
	}
	return fnResource{}, nil, &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("fn %q not found in app %q", name, app.Name)}
}

// resolveFn turns the APP FN arguments most commands take into the fn.
func (c *client) resolveFn(ctx context.Context, appName, fnName string) (appResource, fnResource, json.RawMessage, error) {
	app, _, err := c.appByName(ctx, appName)
	if err != nil {
		return appResource{}, fnResource{}, nil, err
	}
	fn, raw, err := c.fnByName(ctx, app, fnName)
	if err != nil {
		return appResource{}, fnResource{}, nil, err
	}
	return app, fn, raw, nil
}
