package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// client wraps kilnd's HTTP API. It knows paths, auth and the error shape;
// commands decide what to print.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
	// source says where the URL came from, for the hint when kilnd does
	// not answer.
	source string
}

func newClient(t target, hc *http.Client) (*client, error) {
	apiURL, token := t.URL, t.Token
	if apiURL == "" {
		return nil, errors.New("no API URL: set KILN_API_URL or --api-url")
	}
	// Accept "host:port" as people type it; url.Parse would read the host
	// as a scheme.
	if !strings.Contains(apiURL, "://") {
		apiURL = "http://" + apiURL
	}
	u, err := url.Parse(apiURL)
	if err != nil {
		return nil, fmt.Errorf("bad API URL %q: %w", apiURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("bad API URL %q: want http(s)://host:port", apiURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	u.RawQuery, u.Fragment = "", ""
	if hc == nil {
		hc = http.DefaultClient
	}
	return &client{base: u, token: token, http: hc, source: t.Source}, nil
}

// apiError is a non-2xx answer. Message comes from kilnd's
// {"message", "code"} body when there is one.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
}

// unreachableError is kilnd not answering at all: the commonest first
// error, so it says what to check.
type unreachableError struct {
	url, source string
	err         error
}

func (e *unreachableError) Error() string {
	src := ""
	if e.source != "" {
		src = ", " + e.source
	}
	return fmt.Sprintf("cannot reach kilnd: %v\nis kilnd running? set KILN_API_URL (now %s%s), or kiln context use NAME", e.err, e.url, src)
}

func (e *unreachableError) Unwrap() error { return e.err }

func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// url joins the base URL with a path whose segments the caller has already
// escaped, and a query.
func (c *client) url(path string, q url.Values) string {
	s := c.base.String() + path
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

// request is one API call. Body is streamed as is; set ContentLength when
// known so kilnd can refuse an oversized upload before reading it.
type request struct {
	Method        string
	Path          string
	Query         url.Values
	Header        http.Header
	Body          io.Reader
	ContentLength int64
}

// send performs r and returns the response whatever its status; the caller
// closes the body. Use it where non-2xx answers carry content (invoke).
func (c *client) send(ctx context.Context, r request) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, c.url(r.Path, r.Query), r.Body)
	if err != nil {
		return nil, err
	}
	if r.Body != nil && r.ContentLength > 0 {
		req.ContentLength = r.ContentLength
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("User-Agent", "kiln/"+Version)
	// The admin token is for the admin API only: sent on an invoke it
	// would reach the function, and it would override a caller's own
	// Authorization (a private fn's token).
	if c.token != "" && strings.HasPrefix(req.URL.Path, "/v2/") {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &unreachableError{url: c.base.String(), source: c.source, err: err}
	}
	return resp, nil
}

// do performs r and returns the body of a 2xx answer, or an *apiError.
func (c *client) do(ctx context.Context, r request) ([]byte, error) {
	resp, err := c.send(ctx, r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading response of %s %s: %w", r.Method, r.Path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, errorFromBody(resp.StatusCode, body)
	}
	return body, nil
}

func errorFromBody(status int, body []byte) *apiError {
	var e struct {
		Message string `json:"message"`
		// Fn v1 nested the message; older servers may still answer so.
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil {
		if e.Message != "" {
			return &apiError{Status: status, Message: e.Message}
		}
		if e.Error.Message != "" {
			return &apiError{Status: status, Message: e.Error.Message}
		}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 300 || strings.ContainsRune(msg, '\n') {
		msg = ""
	}
	if msg != "" {
		msg = fmt.Sprintf("HTTP %d: %s", status, msg)
	}
	return &apiError{Status: status, Message: msg}
}

// jsonCall sends in (when not nil) as JSON and decodes the answer into out
// (when not nil). It returns the raw answer for -o json.
func (c *client) jsonCall(ctx context.Context, method, path string, q url.Values, in, out any) ([]byte, error) {
	r := request{Method: method, Path: path, Query: q, Header: http.Header{}}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		r.Body = bytes.NewReader(b)
		r.ContentLength = int64(len(b))
		r.Header.Set("Content-Type", "application/json")
	}
	r.Header.Set("Accept", "application/json")
	raw, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
		}
	}
	return raw, nil
}

// maxPages bounds pagination so a server that repeats cursors cannot loop
// the CLI forever.
const maxPages = 10000

// list fetches every page of a list endpoint, following next_cursor.
func (c *client) list(ctx context.Context, path string, q url.Values) ([]json.RawMessage, error) {
	return c.listN(ctx, path, q, 0)
}

// listN is list stopping after limit items (0: no limit), asking for pages
// no bigger than needed.
func (c *client) listN(ctx context.Context, path string, q url.Values, limit int) ([]json.RawMessage, error) {
	var all []json.RawMessage
	seen := map[string]bool{}
	cursor := ""
	for range maxPages {
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		if cursor != "" {
			qq.Set("cursor", cursor)
		}
		if limit > 0 {
			qq.Set("per_page", fmt.Sprint(min(limit-len(all), 100)))
		}
		var page struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor"`
		}
		if _, err := c.jsonCall(ctx, http.MethodGet, path, qq, nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if limit > 0 && len(all) >= limit {
			return all[:limit], nil
		}
		if page.NextCursor == "" {
			return all, nil
		}
		if seen[page.NextCursor] {
			return nil, fmt.Errorf("listing %s: server repeated cursor %q", path, page.NextCursor)
		}
		seen[page.NextCursor] = true
		cursor = page.NextCursor
	}
	return nil, fmt.Errorf("listing %s: more than %d pages", path, maxPages)
}

// listInto is list plus decoding of each item, keeping the raw items for
// -o json.
func listInto[T any](ctx context.Context, c *client, path string, q url.Values) ([]T, []json.RawMessage, error) {
	return listLimit[T](ctx, c, path, q, 0)
}

func listLimit[T any](ctx context.Context, c *client, path string, q url.Values, limit int) ([]T, []json.RawMessage, error) {
	raw, err := c.listN(ctx, path, q, limit)
	if err != nil {
		return nil, nil, err
	}
	out := make([]T, 0, len(raw))
	for _, r := range raw {
		var v T
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, nil, fmt.Errorf("decoding item of %s: %w", path, err)
		}
		out = append(out, v)
	}
	return out, raw, nil
}

// seg escapes one path segment (ids and names come from users and servers).
func seg(s string) string { return url.PathEscape(s) }
