package main

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
)

func TestTokensCreate(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantBody map[string]any
		wantOut  string
	}{
		{"fn token", []string{"tokens", "create", "myapp", "hello", "--ttl", "90m"},
			map[string]any{"app_id": "app1", "fn_id": "fn1", "ttl": float64(5400)}, "tok.en.sig\n"},
		{"app token, server's default ttl", []string{"tokens", "create", "myapp"},
			map[string]any{"app_id": "app1"}, "tok.en.sig\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.withApp()
			api.json("POST /v2/tokens", 200, map[string]any{"token": "tok.en.sig", "expires_at": "2030-01-01T00:00:00Z"})
			res := api.run(nil, tt.args...)
			if res.code != 0 {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			req := api.only("POST", "/v2/tokens")
			if got := decodeBody(t, req.Body); !reflect.DeepEqual(got, tt.wantBody) {
				t.Errorf("body = %v, want %v", got, tt.wantBody)
			}
			if req.Header.Get("Authorization") != "Bearer s3cret" {
				t.Errorf("Authorization = %q", req.Header.Get("Authorization"))
			}
			if res.stdout != tt.wantOut {
				t.Errorf("stdout = %q, want %q", res.stdout, tt.wantOut)
			}
		})
	}
}

func TestTokensCreateJSON(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.json("POST /v2/tokens", 200, map[string]any{"token": "tok.en.sig", "expires_at": "2030-01-01T00:00:00Z"})
	res := api.run(nil, "-o", "json", "tokens", "create", "myapp", "hello")
	var got tokenResource
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || got.Token != "tok.en.sig" || got.ExpiresAt != "2030-01-01T00:00:00Z" {
		t.Fatalf("stdout %q (%v)", res.stdout, err)
	}
}

func TestTokensCreateErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"sub-second ttl", []string{"tokens", "create", "myapp", "--ttl", "1500ms"}, "bad --ttl"},
		{"zero ttl", []string{"tokens", "create", "myapp", "--ttl", "0s"}, "bad --ttl"},
		{"unknown fn", []string{"tokens", "create", "myapp", "nope"}, `fn "nope" not found`},
		{"unknown app", []string{"tokens", "create", "other"}, `app "other" not found`},
		{"server refuses", []string{"tokens", "create", "myapp", "--ttl", "9999h"}, "ttl must be"},
		{"no app", []string{"tokens", "create"}, "accepts between 1 and 2 arg(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t)
			api.withApp()
			api.json("POST /v2/tokens", http.StatusBadRequest, map[string]any{"message": "invalid token ttl: ttl must be between 1 and 2592000 seconds", "code": 400})
			res := api.run(nil, tt.args...)
			if res.code != 1 || res.stdout != "" {
				t.Fatalf("exit %d, stdout %q", res.code, res.stdout)
			}
			wantContains(t, "stderr", res.stderr, tt.stderr)
		})
	}
}
