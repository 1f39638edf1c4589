package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestNewClientURL(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080/v2/apps"},
		{in: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080/v2/apps"},
		{in: "localhost:8080", want: "http://localhost:8080/v2/apps"},
		{in: "https://kiln.example.com/prefix/", want: "https://kiln.example.com/prefix/v2/apps"},
		{in: "", bad: true},
		{in: "ftp://x", bad: true},
		{in: "http://", bad: true},
	}
	for _, tt := range tests {
		c, err := newClient(target{URL: tt.in}, nil)
		if tt.bad {
			if err == nil {
				t.Errorf("newClient(%q) accepted", tt.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("newClient(%q): %v", tt.in, err)
			continue
		}
		if got := c.url("/v2/apps", nil); got != tt.want {
			t.Errorf("newClient(%q).url = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestErrorFromBody(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{404, `{"message":"app \"x\" not found","code":404}`, `app "x" not found`},
		{400, `{"error":{"message":"old style"}}`, "old style"},
		{502, "upstream broke", "HTTP 502: upstream broke"},
		{500, "", "HTTP 500 Internal Server Error"},
		{503, "<html>\n<body>big page</body>\n</html>", "HTTP 503 Service Unavailable"},
	}
	for _, tt := range tests {
		if got := errorFromBody(tt.status, []byte(tt.body)).Error(); got != tt.want {
			t.Errorf("errorFromBody(%d, %q) = %q, want %q", tt.status, tt.body, got, tt.want)
		}
	}
}

func TestClientSendsTokenAndDecodesErrors(t *testing.T) {
	var gotAuth, gotUA string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotUA = r.Header.Get("Authorization"), r.Header.Get("User-Agent")
		writeJSONBody(w, http.StatusConflict, map[string]any{"message": "app \"a\" already exists", "code": 409})
	}))
	defer srv.Close()
	c, err := newClient(target{URL: srv.URL, Token: "tok"}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.jsonCall(context.Background(), http.MethodPost, "/v2/apps", nil, map[string]string{"name": "a"}, nil)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Error() != `app "a" already exists` {
		t.Errorf("err = %#v", err)
	}
	if gotAuth != "Bearer tok" {
		t.Errorf("Authorization = %q", gotAuth)
	}
	if !strings.HasPrefix(gotUA, "kiln/") {
		t.Errorf("User-Agent = %q", gotUA)
	}
}

func TestClientListFollowsCursor(t *testing.T) {
	pages := map[string]string{
		"":   `{"items":[{"id":"1"},{"id":"2"}],"next_cursor":"c2"}`,
		"c2": `{"items":[{"id":"3"}],"next_cursor":"c3"}`,
		"c3": `{"items":[],"next_cursor":""}`,
	}
	var filters []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		filters = append(filters, r.URL.Query().Get("app_id"))
		w.Write([]byte(pages[r.URL.Query().Get("cursor")]))
	}))
	defer srv.Close()
	c, _ := newClient(target{URL: srv.URL}, srv.Client())
	items, err := c.list(context.Background(), "/v2/fns", url.Values{"app_id": {"a1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || string(items[2]) != `{"id":"3"}` {
		t.Errorf("items = %s", items)
	}
	if strings.Join(filters, ",") != "a1,a1,a1" {
		t.Errorf("app_id on each page = %v", filters)
	}
}

func TestClientListStopsOnRepeatedCursor(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"items":[{}],"next_cursor":"same"}`))
	}))
	defer srv.Close()
	c, _ := newClient(target{URL: srv.URL}, srv.Client())
	if _, err := c.list(context.Background(), "/v2/apps", nil); err == nil || !strings.Contains(err.Error(), "repeated cursor") {
		t.Errorf("err = %v", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	c, _ := newClient(target{URL: u}, nil)
	_, err := c.jsonCall(context.Background(), http.MethodGet, "/v2/apps", nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot reach kilnd") {
		t.Errorf("err = %v", err)
	}
}

func TestParseMilliCPU(t *testing.T) {
	tests := map[string]int64{"500": 500, "500m": 500, "0.5": 500, "1.25": 1250, "2000m": 2000}
	for in, want := range tests {
		if got, err := parseMilliCPU(in); err != nil || got != want {
			t.Errorf("parseMilliCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5.5", "m"} {
		if _, err := parseMilliCPU(in); err == nil {
			t.Errorf("parseMilliCPU(%q) accepted", in)
		}
	}
}
