package protocol

import (
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// Environment variables that carry a call in the default format.
const (
	EnvCallID       = "FN_CALL_ID"
	EnvDeadline     = "FN_DEADLINE"
	EnvMethod       = "FN_METHOD"
	EnvRequestURL   = "FN_REQUEST_URL"
	EnvHeaderPrefix = "FN_HEADER_"
)

// DefaultEnv renders req as the per-call environment of the default
// format, sorted so that a container spec built from it is stable.
// Headers are filtered as in the hot formats' frames. A header whose name or value could not live in an environment variable
// (an '=' in the name, a NUL anywhere) is left out rather than allowed to
// break the exec of the container.
func DefaultEnv(req *Request) []string {
	env := make([]string, 0, 4+len(req.Header))
	env = append(env,
		EnvCallID+"="+req.CallID,
		EnvDeadline+"="+formatDeadline(req.Deadline),
		EnvMethod+"="+req.Method,
		EnvRequestURL+"="+req.URL,
	)
	for _, k := range headerKeys(req.Header) {
		if strings.ContainsAny(k, "=\x00") {
			continue
		}
		v := strings.Join(req.Header[k], ", ")
		if strings.ContainsRune(v, 0) {
			continue
		}
		env = append(env, EnvHeaderPrefix+textproto.CanonicalMIMEHeaderKey(k)+"="+v)
	}
	slices.Sort(env)
	return slices.Compact(env)
}

// RequestFromEnv is the function side of DefaultEnv: it rebuilds a call's
// request, without its body, from an environment such as os.Environ().
// Header values arrive joined with ", " and stay that way, since splitting
// them again would break values that contain commas.
func RequestFromEnv(environ []string) (*Request, error) {
	req := &Request{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		switch {
		case k == EnvCallID:
			req.CallID = v
		case k == EnvDeadline:
			t, err := parseDeadline(v)
			if err != nil {
				return nil, fmt.Errorf("protocol: %s: %w", EnvDeadline, err)
			}
			req.Deadline = t
		case k == EnvMethod:
			req.Method = v
		case k == EnvRequestURL:
			req.URL = v
		case strings.HasPrefix(k, EnvHeaderPrefix) && len(k) > len(EnvHeaderPrefix):
			if req.Header == nil {
				req.Header = make(http.Header)
			}
			req.Header.Add(k[len(EnvHeaderPrefix):], v)
		}
	}
	return req, nil
}
