package api

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/kiln-run/kiln/calls"
	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/protocol"
	"github.com/kiln-run/kiln/store"
)

// Limits of fn resources. The timeout cap matches Fn's so fns move between
// the two unchanged; memory and cpus bound what one container may claim
// from the pool's admission control.
const (
	minMemory      = 8
	maxMemory      = 8192
	maxCPUs        = 64000
	maxTimeout     = 300
	maxIdleTimeout = 3600
	maxTmpfsSize   = 4096
	maxNameLen     = 255
	maxSourceLen   = 1024
	maxAnnKeyLen   = 128
	maxConcurrency = 100000
	maxInstances   = 10000
	maxMinWarm     = 1000
	maxRequests    = 1 << 30
)

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

	// Image reference grammar, after the distribution spec: lowercase path
	// components joined by ".", "_", "__" or runs of "-".
	imgComponentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	imgHostRE      = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$`)
	imgTagRE       = regexp.MustCompile(`^\w[\w.-]{0,127}$`)
	imgDigestRE    = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// invalid builds the 400 every validation failure answers with; the
// message starts with the resource and field so a client knows what to fix,
// e.g. "invalid fn memory: must be between 8 and 8192 MB".
func invalid(kind, field, format string, args ...any) error {
	return fmt.Errorf("%w %s %s: %s", errdefs.ErrInvalid, kind, field, fmt.Sprintf(format, args...))
}

func validateName(kind, name string) error {
	switch {
	case name == "":
		return invalid(kind, "name", "required")
	case len(name) > maxNameLen:
		return invalid(kind, "name", "must be at most %d characters", maxNameLen)
	case !nameRE.MatchString(name):
		return invalid(kind, "name", "%q may contain only letters, digits, '_', '-' and '.'", name)
	}
	return nil
}

// validateImageRef checks [host[:port]/]path[:tag][@sha256:hex] without
// contacting a registry, so a typo fails at create time, not at first call.
func validateImageRef(ref string) error {
	if ref == "" {
		return invalid("fn", "image", "required")
	}
	name, digest, hasDigest := strings.Cut(ref, "@")
	if hasDigest && !imgDigestRE.MatchString(digest) {
		return invalid("fn", "image", "%q: digest must be sha256: followed by 64 lowercase hex digits", ref)
	}
	// A colon after the last slash starts the tag; one before it belongs
	// to the registry's port.
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		var tag string
		name, tag = name[:i], name[i+1:]
		if !imgTagRE.MatchString(tag) {
			return invalid("fn", "image", "%q: tag must be 1-128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'", ref)
		}
	}
	if len(name) > maxNameLen {
		return invalid("fn", "image", "%q: name must be at most %d characters", ref, maxNameLen)
	}
	parts := strings.Split(name, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		if !imgHostRE.MatchString(parts[0]) {
			return invalid("fn", "image", "%q: bad registry host %q", ref, parts[0])
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if !imgComponentRE.MatchString(p) {
			return invalid("fn", "image", "%q: path component %q must be lowercase letters and digits, separated by '.', '_' or '-'", ref, p)
		}
	}
	return nil
}

func validateConfig(kind string, cfg map[string]string) error {
	for k, v := range cfg {
		if !envKeyRE.MatchString(k) {
			return invalid(kind, "config", "key %q is not a valid environment variable name", k)
		}
		// The config becomes the container's environment, where NUL
		// cannot be represented.
		if strings.ContainsRune(v, 0) {
			return invalid(kind, "config", "value of %q contains NUL", k)
		}
	}
	return nil
}

func validateAnnotations(kind string, ann map[string]any) error {
	for k := range ann {
		if k == "" || len(k) > maxAnnKeyLen {
			return invalid(kind, "annotations", "key %q must be 1-%d characters", k, maxAnnKeyLen)
		}
	}
	return nil
}

func validateApp(a *store.App) error {
	if err := validateName("app", a.Name); err != nil {
		return err
	}
	if err := validateConfig("app", a.Config); err != nil {
		return err
	}
	return validateAnnotations("app", a.Annotations)
}

func validateFn(f *store.Fn) error {
	if err := validateName("fn", f.Name); err != nil {
		return err
	}
	if f.AppID == "" {
		return invalid("fn", "app_id", "required")
	}
	if err := validateImageRef(f.Image); err != nil {
		return err
	}
	if !protocol.Valid(f.Format) {
		return invalid("fn", "format", "%q is not one of %s", f.Format, strings.Join(protocol.Formats(), ", "))
	}
	if f.Memory < minMemory || f.Memory > maxMemory {
		return invalid("fn", "memory", "must be between %d and %d MB", minMemory, maxMemory)
	}
	if f.CPUs < 0 || f.CPUs > maxCPUs {
		return invalid("fn", "cpus", "must be 0 (no limit) or between 1 and %d milli-CPUs", maxCPUs)
	}
	if f.Timeout < 1 || f.Timeout > maxTimeout {
		return invalid("fn", "timeout", "must be between 1 and %d seconds", maxTimeout)
	}
	if f.IdleTimeout < 1 || f.IdleTimeout > maxIdleTimeout {
		return invalid("fn", "idle_timeout", "must be between 1 and %d seconds", maxIdleTimeout)
	}
	if f.TmpfsSize < 0 || f.TmpfsSize > maxTmpfsSize {
		return invalid("fn", "tmpfs_size", "must be between 1 and %d MB", maxTmpfsSize)
	}
	if err := validateScaling(f); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, name := range f.Secrets {
		if err := validateSecretName(name); err != nil {
			return invalid("fn", "secrets", "%v", err)
		}
		if seen[name] {
			return invalid("fn", "secrets", "%q is named twice", name)
		}
		seen[name] = true
	}
	if v, ok := f.Annotations[calls.AnnotationNetwork]; ok && v != "host" && v != "none" {
		return invalid("fn", "annotations", "%s must be \"host\" or \"none\"", calls.AnnotationNetwork)
	}
	if err := validateConfig("fn", f.Config); err != nil {
		return err
	}
	return validateAnnotations("fn", f.Annotations)
}

// validateScaling checks the scaling knobs. Only max_concurrency means
// anything for the default format: it keeps no container to bound,
// warm or retire.
func validateScaling(f *store.Fn) error {
	for _, k := range []struct {
		name  string
		v     int
		limit int
	}{
		{"max_concurrency", f.MaxConcurrency, maxConcurrency},
		{"max_instances", f.MaxInstances, maxInstances},
		{"min_warm", f.MinWarm, maxMinWarm},
		{"max_requests", f.MaxRequests, maxRequests},
	} {
		if k.v < 0 || k.v > k.limit {
			return invalid("fn", k.name, "must be between 0 (no limit) and %d", k.limit)
		}
		if k.v > 0 && k.name != "max_concurrency" && !protocol.Hot(f.Format) {
			return invalid("fn", k.name, "applies to hot formats only; format %q starts a container per call", f.Format)
		}
	}
	if f.MaxInstances > 0 && f.MinWarm > f.MaxInstances {
		return invalid("fn", "min_warm", "%d is more than max_instances (%d)", f.MinWarm, f.MaxInstances)
	}
	return nil
}

func validateTrigger(t *store.Trigger) error {
	if err := validateName("trigger", t.Name); err != nil {
		return err
	}
	if t.FnID == "" {
		return invalid("trigger", "fn_id", "required")
	}
	if t.AppID == "" {
		return invalid("trigger", "app_id", "required")
	}
	switch t.Type {
	case store.TriggerHTTP:
		if err := validateHTTPSource(t.Source); err != nil {
			return err
		}
	case store.TriggerCron:
		if strings.TrimSpace(t.Source) == "" {
			return invalid("trigger", "source", "required: a cron schedule")
		}
		if len(t.Source) > maxSourceLen {
			return invalid("trigger", "source", "must be at most %d characters", maxSourceLen)
		}
		if err := calls.ValidateCronSchedule(t.Source); err != nil {
			return err
		}
	default:
		return invalid("trigger", "type", "%q is not one of http, cron", t.Type)
	}
	return validateAnnotations("trigger", t.Annotations)
}

// validateHTTPSource rejects paths a request URL can never match: the
// query and fragment are not part of the path, and whitespace would have
// been escaped.
func validateHTTPSource(src string) error {
	switch {
	case !strings.HasPrefix(src, "/"):
		return invalid("trigger", "source", "%q must start with '/'", src)
	case len(src) > maxSourceLen:
		return invalid("trigger", "source", "must be at most %d characters", maxSourceLen)
	case strings.ContainsAny(src, "?#"):
		return invalid("trigger", "source", "%q must not contain '?' or '#'", src)
	case strings.IndexFunc(src, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return invalid("trigger", "source", "%q must not contain whitespace or control characters", src)
	}
	return nil
}
