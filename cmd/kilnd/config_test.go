package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(Config) bool
		wantErr bool
	}{
		{name: "defaults", check: func(c Config) bool {
			return c.Listen == "127.0.0.1:8080" && c.Namespace == "kiln" && c.LogFormat == "text" &&
				c.Containerd == "" && c.MaxBody == 6<<20 && c.GroupShims && !c.AllowHostNetwork
		}},
		{name: "env", env: map[string]string{"KILN_LISTEN": ":9", "KILN_NAMESPACE": "ns", "KILN_MAX_MEMORY": "512", "KILN_ADMIN_TOKEN": "t"},
			check: func(c Config) bool {
				return c.Listen == ":9" && c.Namespace == "ns" && c.MaxMemoryMB == 512 && c.AdminToken == "t"
			}},
		{name: "flags beat env", args: []string{"--listen", ":10", "--log-format", "json", "--call-max-age", "1h"},
			env:   map[string]string{"KILN_LISTEN": ":9"},
			check: func(c Config) bool { return c.Listen == ":10" && c.LogFormat == "json" && c.CallMaxAge == time.Hour }},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: true},
		{name: "bad env number", env: map[string]string{"KILN_MAX_MEMORY": "lots"}, wantErr: true},
		{name: "stray argument", args: []string{"serve"}, wantErr: true},
		{name: "negative memory", args: []string{"--max-memory", "-1"}, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := parseFlags(c.args, func(k string) string { return c.env[k] })
			if c.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", cfg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
}

func TestParseFlagsDurationsFromEnv(t *testing.T) {
	cfg, err := parseFlags(nil, func(k string) string {
		return map[string]string{"KILN_CALL_MAX_AGE": "2h", "KILN_CALLS_PER_FN": "7"}[k]
	})
	if err != nil || cfg.CallMaxAge != 2*time.Hour || cfg.CallsPerFn != 7 {
		t.Fatalf("%+v %v", cfg, err)
	}
	if _, err := parseFlags(nil, func(k string) string {
		return map[string]string{"KILN_CALL_MAX_AGE": "soon"}[k]
	}); err == nil {
		t.Fatal("bad duration accepted")
	}
}

func TestPprofOnlyOnLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:6060": true, "[::1]:6060": true, "0.0.0.0:6060": false, ":6060": false, "example:1": false} {
		_, err := parseFlags([]string{"--pprof", addr}, func(string) string { return "" })
		if (err == nil) != ok {
			t.Errorf("--pprof %s: err %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestProcsFor(t *testing.T) {
	cases := []struct {
		flag, goDefault int
		goEnv           string
		want            int
	}{
		{0, 2, "", 1},
		{0, 1, "", 1},
		{0, 16, "", 8},
		{0, 7, "", 3},
		{0, 4, "4", 4}, // the operator's GOMAXPROCS stands
		{3, 16, "", 3},
		{3, 16, "8", 3}, // --procs is the more specific
	}
	for _, c := range cases {
		if got := procsFor(c.flag, c.goDefault, c.goEnv); got != c.want {
			t.Errorf("procsFor(%d, %d, %q) = %d, want %d", c.flag, c.goDefault, c.goEnv, got, c.want)
		}
	}
	if _, err := parseFlags([]string{"--procs", "-1"}, func(string) string { return "" }); err == nil {
		t.Error("--procs -1 accepted")
	}
	if c, err := parseFlags(nil, func(k string) string { return map[string]string{"KILN_PROCS": "2"}[k] }); err != nil || c.Procs != 2 {
		t.Errorf("KILN_PROCS=2: %+v %v", c.Procs, err)
	}
}

func TestKilnInitPath(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "kilnd")
	exe := func() (string, error) { return self, nil }
	if p, err := kilnInitPath("", exe); err != nil || p != "" {
		t.Errorf("no kiln-init beside kilnd: %q %v, want none (the shim copies)", p, err)
	}
	beside := filepath.Join(dir, "kiln-init")
	if err := os.WriteFile(beside, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := kilnInitPath("", exe); err != nil || p != beside {
		t.Errorf("kiln-init beside kilnd: %q %v", p, err)
	}
	if p, err := kilnInitPath("off", exe); err != nil || p != "" {
		t.Errorf("off: %q %v", p, err)
	}
	if p, err := kilnInitPath(beside, exe); err != nil || p != beside {
		t.Errorf("explicit path: %q %v", p, err)
	}
	if _, err := kilnInitPath(filepath.Join(dir, "missing"), exe); err == nil {
		t.Error("a missing --kiln-init was accepted")
	}
}
