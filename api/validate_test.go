package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/kiln-run/kiln/errdefs"
)

func TestValidateImageRef(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		ref     string
		ok      bool
		mention string
	}{
		{"alpine", true, ""},
		{"alpine:3.19", true, ""},
		{"library/alpine:latest", true, ""},
		{"registry.example/library/alpine", true, ""},
		{"localhost/fn", true, ""},
		{"localhost:5000/team/fn:v1.2_3-rc", true, ""},
		{"registry.example.com:443/a/b/c", true, ""},
		{"Registry.Example.com/a", true, ""},
		{"team/a.b-c__d---e", true, ""},
		{"a.b-c__d---e/f", false, "registry host"}, // a dot makes it a host
		{"fn@" + digest, true, ""},
		{"registry.example:5000/x/fn:tag@" + digest, true, ""},
		{"localhost:5000", true, ""}, // name localhost, tag 5000
		{"_tag_ok:_x", false, "path component"},
		{"fn:_tag", true, ""},
		{"", false, "required"},
		{"Alpine", false, `"Alpine"`},
		{"team/Fn", false, `"Fn"`},
		{"fn:", false, "tag"},
		{"fn:.bad", false, "tag"},
		{"fn:" + strings.Repeat("x", 129), false, "tag"},
		{"fn:" + strings.Repeat("x", 128), true, ""},
		{":tag", false, "path component"},
		{"fn/", false, "path component"},
		{"/fn", false, "path component"},
		{"a//b", false, "path component"},
		{"fn-", false, "path component"},
		{"fn..x", false, "path component"},
		{"fn___x", false, "path component"},
		{"fn@sha256:abc", false, "digest"},
		{"fn@md5:" + strings.Repeat("a", 32), false, "digest"},
		{"fn@" + strings.ToUpper(digest), false, "digest"},
		{"bad_host.com:x/fn", false, "registry host"},
		{"-bad.com/fn", false, "registry host"},
		{"fn with space", false, ""},
		{strings.Repeat("a", 256), false, "255"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			err := validateImageRef(tt.ref)
			if tt.ok {
				if err != nil {
					t.Fatalf("validateImageRef(%q) = %v", tt.ref, err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("validateImageRef(%q) = %v, want errdefs.ErrInvalid", tt.ref, err)
			}
			if !strings.Contains(err.Error(), "invalid fn image") || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("validateImageRef(%q) = %q, want it to mention %q", tt.ref, err, tt.mention)
			}
		})
	}
}

// TestValidationRoutes drives every validation rule through the API, so
// the status and the field named in the message are what a client sees.
func TestValidationRoutes(t *testing.T) {
	e := newEnv(t, Config{})
	a := e.app("a")
	f := e.fn(a.ID, "f")
	fnWith := func(field string, v any) map[string]any {
		b := map[string]any{"app_id": a.ID, "name": "new", "image": "img"}
		if field != "" {
			b[field] = v
		}
		return b
	}
	trigWith := func(field string, v any) map[string]any {
		b := map[string]any{"fn_id": f.ID, "name": "trig", "source": "/s"}
		if field != "" {
			b[field] = v
		}
		return b
	}
	tests := []struct {
		name     string
		path     string
		body     any
		status   int
		mentions string
	}{
		{"app name missing", "/v2/apps", map[string]any{}, 400, "invalid app name: required"},
		{"app name too long", "/v2/apps", map[string]any{"name": strings.Repeat("a", 256)}, 400, "invalid app name"},
		{"app name 255", "/v2/apps", map[string]any{"name": strings.Repeat("a", 255)}, 200, ""},
		{"app name bad char", "/v2/apps", map[string]any{"name": "a b"}, 400, "invalid app name"},
		{"app name slash", "/v2/apps", map[string]any{"name": "a/b"}, 400, "invalid app name"},
		{"app name all allowed", "/v2/apps", map[string]any{"name": "Az09_.-"}, 200, ""},
		{"app config key", "/v2/apps", map[string]any{"name": "c1", "config": map[string]string{"1BAD": "x"}}, 400, "invalid app config"},
		{"app config key dash", "/v2/apps", map[string]any{"name": "c2", "config": map[string]string{"A-B": "x"}}, 400, "invalid app config"},
		{"app config NUL", "/v2/apps", map[string]any{"name": "c3", "config": map[string]string{"A": "x\x00y"}}, 400, "invalid app config"},
		{"app config ok", "/v2/apps", map[string]any{"name": "c4", "config": map[string]string{"_A1": "x"}}, 200, ""},
		{"app annotation key", "/v2/apps", map[string]any{"name": "c5", "annotations": map[string]any{"": 1}}, 400, "invalid app annotations"},

		{"fn name", "/v2/fns", fnWith("name", "bad name"), 400, "invalid fn name"},
		{"fn app_id missing", "/v2/fns", fnWith("app_id", ""), 400, "invalid fn app_id"},
		{"fn image missing", "/v2/fns", fnWith("image", ""), 400, "invalid fn image: required"},
		{"fn image syntax", "/v2/fns", fnWith("image", "Bad/Image"), 400, "invalid fn image"},
		{"fn format", "/v2/fns", fnWith("format", "grpc"), 400, "invalid fn format"},
		{"fn format json", "/v2/fns", fnWith("format", "json"), 200, ""},
		{"fn max_concurrency negative", "/v2/fns", fnWith("max_concurrency", -1), 400, "invalid fn max_concurrency"},
		{"fn max_concurrency on default", "/v2/fns", map[string]any{"app_id": a.ID, "name": "mc", "image": "img", "max_concurrency": 3}, 200, ""},
		{"fn min_warm on default", "/v2/fns", fnWith("min_warm", 1), 400, "invalid fn min_warm: applies to hot formats only"},
		{"fn max_instances on default", "/v2/fns", fnWith("max_instances", 1), 400, "invalid fn max_instances: applies to hot formats only"},
		{"fn max_requests huge", "/v2/fns", map[string]any{"app_id": a.ID, "name": "mr", "image": "img", "format": "http", "max_requests": 1 << 31}, 400, "invalid fn max_requests"},
		{"fn min_warm over max_instances", "/v2/fns", map[string]any{"app_id": a.ID, "name": "mw", "image": "img", "format": "http", "min_warm": 3, "max_instances": 2}, 400, "more than max_instances"},
		{"fn scaling ok", "/v2/fns", map[string]any{"app_id": a.ID, "name": "ok-scale", "image": "img", "format": "http-stream", "max_instances": 4, "max_requests": 100}, 200, ""},
		{"fn memory low", "/v2/fns", fnWith("memory", 7), 400, "invalid fn memory: must be between 8 and 8192 MB"},
		{"fn memory high", "/v2/fns", fnWith("memory", 8193), 400, "invalid fn memory"},
		{"fn memory negative", "/v2/fns", fnWith("memory", -1), 400, "invalid fn memory"},
		{"fn memory bounds ok", "/v2/fns", map[string]any{"app_id": a.ID, "name": "m8", "image": "i", "memory": 8}, 200, ""},
		{"fn memory fraction", "/v2/fns", fnWith("memory", 1.5), 400, "memory"},
		{"fn cpus negative", "/v2/fns", fnWith("cpus", -1), 400, "invalid fn cpus"},
		{"fn cpus high", "/v2/fns", fnWith("cpus", 64001), 400, "invalid fn cpus"},
		{"fn cpus max", "/v2/fns", map[string]any{"app_id": a.ID, "name": "c64", "image": "i", "cpus": 64000}, 200, ""},
		{"fn cpus string high", "/v2/fns", fnWith("cpus", "65"), 400, "invalid fn cpus"},
		{"fn timeout high", "/v2/fns", fnWith("timeout", 301), 400, "invalid fn timeout"},
		{"fn timeout negative", "/v2/fns", fnWith("timeout", -1), 400, "invalid fn timeout"},
		{"fn timeout max", "/v2/fns", map[string]any{"app_id": a.ID, "name": "t300", "image": "i", "timeout": 300}, 200, ""},
		{"fn idle_timeout high", "/v2/fns", fnWith("idle_timeout", 3601), 400, "invalid fn idle_timeout"},
		{"fn idle_timeout negative", "/v2/fns", fnWith("idle_timeout", -5), 400, "invalid fn idle_timeout"},
		{"fn config key", "/v2/fns", fnWith("config", map[string]string{"A=B": "x"}), 400, "invalid fn config"},
		{"fn annotation key", "/v2/fns", fnWith("annotations", map[string]any{strings.Repeat("k", 129): 1}), 400, "invalid fn annotations"},
		{"fn id given", "/v2/fns", fnWith("id", "x"), 400, "invalid fn id"},

		{"trigger name", "/v2/triggers", trigWith("name", ""), 400, "invalid trigger name"},
		{"trigger fn_id missing", "/v2/triggers", trigWith("fn_id", ""), 400, "invalid trigger fn_id"},
		{"trigger type", "/v2/triggers", trigWith("type", "kafka"), 400, "invalid trigger type"},
		{"trigger source slash", "/v2/triggers", trigWith("source", "s"), 400, "invalid trigger source"},
		{"trigger source missing", "/v2/triggers", trigWith("source", ""), 400, "invalid trigger source"},
		{"trigger source query", "/v2/triggers", trigWith("source", "/a?b"), 400, "invalid trigger source"},
		{"trigger source space", "/v2/triggers", trigWith("source", "/a b"), 400, "invalid trigger source"},
		{"trigger cron empty", "/v2/triggers", map[string]any{"fn_id": f.ID, "name": "c", "type": "cron", "source": " "}, 400, "invalid trigger source"},
		{"trigger cron any schedule", "/v2/triggers", map[string]any{"fn_id": f.ID, "name": "c", "type": "cron", "source": "@hourly"}, 200, ""},
		{"trigger annotation key", "/v2/triggers", trigWith("annotations", map[string]any{"": "x"}), 400, "invalid trigger annotations"},
		{"trigger id given", "/v2/triggers", trigWith("id", "x"), 400, "invalid trigger id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do("POST", tt.path, tt.body), tt.status, tt.mentions)
		})
	}

	// The same rules guard updates.
	tr := e.trigger(f, "t", "/t")
	updates := []struct {
		name, path, body, mentions string
	}{
		{"app name", "/v2/apps/" + a.ID, `{"name": "no spaces"}`, "invalid app name"},
		{"app config", "/v2/apps/" + a.ID, `{"config": {"9": "x"}}`, "invalid app config"},
		{"fn image", "/v2/fns/" + f.ID, `{"image": "UPPER"}`, "invalid fn image"},
		{"fn format", "/v2/fns/" + f.ID, `{"format": "xml"}`, "invalid fn format"},
		{"fn timeout", "/v2/fns/" + f.ID, `{"timeout": 1000}`, "invalid fn timeout"},
		{"trigger source", "/v2/triggers/" + tr.ID, `{"source": "nope"}`, "invalid trigger source"},
		{"trigger type", "/v2/triggers/" + tr.ID, `{"type": "mqtt"}`, "invalid trigger type"},
	}
	for _, tt := range updates {
		t.Run("update "+tt.name, func(t *testing.T) {
			wantStatus(t, e.do("PUT", tt.path, tt.body), 400, tt.mentions)
		})
	}
}

func TestMilliCPUs(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{`250`, 250, true},
		{`"250m"`, 250, true},
		{`"2"`, 2000, true},
		{`"0.1"`, 100, true},
		{`""`, 0, true},
		{`"m"`, 0, false},
		{`"-1"`, 0, false},
		{`1.5`, 0, false},
		{`true`, 0, false},
	}
	for _, tt := range tests {
		var m milliCPUs
		err := m.UnmarshalJSON([]byte(tt.in))
		if (err == nil) != tt.ok || (tt.ok && int64(m) != tt.want) {
			t.Errorf("milliCPUs(%s) = %d, %v; want %d, ok %v", tt.in, m, err, tt.want, tt.ok)
		}
	}
}
