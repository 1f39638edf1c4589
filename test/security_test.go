package test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/kiln-run/kiln/executor"
)

// secCall invokes fn with testfn's X-Test-Action and returns the status
// and body (for kilnd's own errors, the message).
func secCall(k *kilnd, fnID, action string) (int, string) {
	k.t.Helper()
	resp, body := k.do("POST", "/invoke/"+fnID, strings.NewReader(""), http.Header{"X-Test-Action": {action}})
	if resp.StatusCode >= 400 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(body, &e) == nil && e.Message != "" {
			return resp.StatusCode, e.Message
		}
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// fnContainers lists the containers kilnd runs for fnID.
func fnContainers(t *testing.T, k *kilnd, fnID string) []containerd.Container {
	t.Helper()
	var found []containerd.Container
	for _, c := range k.containers() {
		labels, err := c.Labels(k.ctrCtx())
		if err == nil && labels[executor.LabelFnID] == fnID {
			found = append(found, c)
		}
	}
	return found
}

// fnContainer returns the one container of fnID and its task's PID on
// the node.
func fnContainer(t *testing.T, k *kilnd, fnID string) (containerd.Container, uint32) {
	t.Helper()
	found := fnContainers(t, k, fnID)
	if len(found) != 1 {
		t.Fatalf("%d containers of fn %s, want 1", len(found), fnID)
	}
	task, err := found[0].Task(k.ctrCtx(), nil)
	if err != nil {
		t.Fatalf("task of %s: %v", found[0].ID(), err)
	}
	return found[0], task.Pid()
}

// TestSecurityHardening checks what a function can and cannot do from
// inside its container, with kilnd's default settings.
func TestSecurityHardening(t *testing.T) {
	k := startKilnd(t)
	deploy := func(name string, extra map[string]any) string {
		return k.deploy("sec", name, testfnImage, "json-http", extra).FnID
	}

	t.Run("no way to kilnd", func(t *testing.T) {
		fn := deploy("netprobe", nil)
		// 127.0.0.1 inside is the container's own loopback: kilnd
		// listens on the node's, so the port is closed there.
		status, body := secCall(k, fn, "connect="+k.addr)
		if status != 200 || strings.Contains(body, "connected") || !strings.Contains(body, "refused") {
			t.Fatalf("dial kilnd at %s from the function: %d %q, want connection refused", k.addr, status, body)
		}
		// Nor anything else: the function's network namespace holds only
		// loopback and has no routes, read from the node through the
		// task's /proc (no traffic leaves loopback in this test).
		_, pid := fnContainer(t, k, fn)
		dev, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
		if err != nil {
			t.Fatal(err)
		}
		var ifaces []string
		for _, line := range strings.Split(string(dev), "\n")[2:] {
			if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				ifaces = append(ifaces, name)
			}
		}
		if len(ifaces) != 1 || ifaces[0] != "lo" {
			t.Fatalf("interfaces in the function's network namespace: %v, want only lo", ifaces)
		}
		routes, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/route", pid))
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(strings.TrimSpace(string(routes)), "\n"); len(lines) > 1 {
			t.Fatalf("the function's network namespace has routes:\n%s", routes)
		}
	})

	t.Run("read-only root, writable tmp", func(t *testing.T) {
		fn := deploy("fsprobe", nil)
		status, body := secCall(k, fn, "write-root")
		if status != 200 || !strings.Contains(body, "read-only file system") {
			t.Fatalf("write-root: %d %q, want a read-only file system error", status, body)
		}
		// testfn has no action that writes /tmp, so look at the mount
		// from the node through the task's root.
		_, pid := fnContainer(t, k, fn)
		tmp := fmt.Sprintf("/proc/%d/root/tmp", pid)
		var fs syscall.Statfs_t
		if err := syscall.Statfs(tmp, &fs); err != nil {
			t.Fatal(err)
		}
		const tmpfsMagic = 0x01021994
		if fs.Type != tmpfsMagic {
			t.Fatalf("/tmp is filesystem type %#x, want tmpfs", fs.Type)
		}
		st, err := os.Stat(tmp)
		if err != nil {
			t.Fatal(err)
		}
		// 1777: any uid (the function runs as nobody) may create files.
		if st.Mode().Perm() != 0o777 || st.Mode()&os.ModeSticky == 0 {
			t.Fatalf("/tmp mode %v, want drwxrwxrwt", st.Mode())
		}
		probe := filepath.Join(tmp, "kiln-probe")
		if err := os.WriteFile(probe, []byte("x"), 0o600); err != nil {
			t.Fatalf("/tmp is not writable: %v", err)
		}
		os.Remove(probe)
		// The same write on the root fails even for the node's root:
		// the mount itself is read-only, not just its permissions.
		err = os.WriteFile(fmt.Sprintf("/proc/%d/root/kiln-probe", pid), []byte("x"), 0o600)
		if !errors.Is(err, syscall.EROFS) {
			t.Fatalf("write to the container root from the node: %v, want EROFS", err)
		}
	})

	t.Run("pids limit", func(t *testing.T) {
		fn := deploy("forkbomb", nil)
		if status, body := secCall(k, fn, "echo"); status != 200 {
			t.Fatalf("first call: %d %q", status, body)
		}
		_, pid := fnContainer(t, k, fn)
		if max := pidsMax(t, pid); max != "128" {
			t.Fatalf("pids.max of the container's cgroup = %q, want 128", max)
		}
		resp, raw := k.do("POST", "/invoke/"+fn, strings.NewReader(""), http.Header{"X-Test-Action": {"fork=200"}})
		body := strings.TrimSpace(string(raw))
		switch resp.StatusCode {
		case 200:
			var started, asked int
			if _, err := fmt.Sscanf(body, "started %d of %d", &started, &asked); err != nil {
				t.Fatalf("fork=200: %q", body)
			}
			if started >= 128 || !strings.Contains(body, "resource temporarily unavailable") {
				t.Fatalf("fork=200: %q, want fewer than 128 and EAGAIN", body)
			}
			t.Logf("fork=200: %s", body)
		case 502:
			// Threads count against the limit too: testfn's Go runtime
			// may itself fail to get one and die before it answers. The
			// limit held all the same, as its stderr says.
			callID := resp.Header.Get("Fn-Call-Id")
			var log string
			waitFor(t, 5*time.Second, "the call's log", func() bool {
				r, b := k.do("GET", "/v2/fns/"+fn+"/calls/"+callID+"/log", nil, nil)
				log = string(b)
				return r.StatusCode == 200 && len(b) > 0
			})
			if !strings.Contains(log, "resource temporarily unavailable") && !strings.Contains(log, "errno=11") {
				t.Fatalf("fork=200: 502 %s, and the log does not show EAGAIN:\n%.2000s", body, log)
			}
			t.Logf("fork=200: testfn died of EAGAIN itself (502 %s)", body)
		default:
			t.Fatalf("fork=200: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("nobody without capabilities", func(t *testing.T) {
		fn := deploy("whoami", nil)
		status, body := secCall(k, fn, "id")
		if status != 200 {
			t.Fatalf("id: %d %q", status, body)
		}
		if !strings.Contains(body, "uid=65534 gid=65534") {
			t.Errorf("identity %q, want uid=65534 gid=65534", body)
		}
		if !strings.Contains(body, "CapEff:\t0000000000000000") {
			t.Errorf("identity %q, want no effective capabilities", body)
		}
	})

	t.Run("memory limit", func(t *testing.T) {
		fn := deploy("hog", map[string]any{"memory": 64})
		if status, body := secCall(k, fn, "echo"); status != 200 {
			t.Fatalf("first call: %d %q", status, body)
		}
		first, _ := fnContainer(t, k, fn)
		status, body := secCall(k, fn, "alloc=200")
		if status != http.StatusBadGateway || !strings.Contains(body, "memory") {
			t.Fatalf("alloc=200 in 64 MB: %d %q, want 502 naming memory", status, body)
		}
		if status, body := secCall(k, fn, "echo"); status != 200 {
			t.Fatalf("call after the OOM kill: %d %q", status, body)
		}
		waitFor(t, 10*time.Second, "the OOM-killed container replaced", func() bool {
			list := fnContainers(t, k, fn)
			for _, c := range list {
				if c.ID() == first.ID() {
					return false
				}
			}
			return len(list) > 0
		})
	})
}

// TestPrivateFunctions: a private fn answers only to a token for it,
// from POST /v2/tokens, and the token does not reach the function.
func TestPrivateFunctions(t *testing.T) {
	k := startKilnd(t)
	private := map[string]any{"annotations": map[string]any{"kiln.io/private": "true"}}
	mine := k.deploy("vault", "mine", testfnImage, "json-http", private)
	theirs := k.deploy("vault", "theirs", testfnImage, "json-http", private)

	token := func(fnID string) string {
		var ans struct {
			Token     string `json:"token"`
			ExpiresAt string `json:"expires_at"`
		}
		k.doJSON("POST", "/v2/tokens", map[string]any{"app_id": mine.AppID, "fn_id": fnID, "ttl": 300}, &ans)
		if ans.Token == "" {
			t.Fatal("no token in the answer")
		}
		return ans.Token
	}
	own, other := token(mine.FnID), token(theirs.FnID)

	// The claims rewritten for this fn, the signature kept.
	parts := strings.Split(other, ".")
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(claims), theirs.FnID, mine.FnID, 1)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2]

	call := func(path, tok string) (*http.Response, []byte) {
		h := http.Header{"X-Test-Action": {"echo"}}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
		return k.do("POST", path, strings.NewReader("secret work"), h)
	}
	for _, tt := range []struct {
		name, token string
		status      int
	}{
		{"no token", "", 401},
		{"another fn's token", other, 403},
		{"tampered token", tampered, 401},
		{"own token", own, 200},
	} {
		for _, path := range []string{"/invoke/" + mine.FnID, "/t/vault/mine"} {
			resp, body := call(path, tt.token)
			if resp.StatusCode != tt.status {
				t.Errorf("%s on %s: %d %s, want %d", tt.name, path, resp.StatusCode, body, tt.status)
				continue
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s on %s: 401 without a Bearer challenge", tt.name, path)
			}
			if tt.status == 200 {
				if string(body) != "secret work" {
					t.Errorf("%s on %s: body %q", tt.name, path, body)
				}
				if h := decodeEcho(t, resp).Headers["Authorization"]; len(h) > 0 {
					t.Errorf("the function saw the token: %q", h)
				}
			}
		}
	}
}

// pidsMax reads pids.max of the cgroup pid is in, on cgroup v1 or v2.
func pidsMax(t *testing.T, pid uint32) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	dir := ""
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[1] == "pids":
			dir = filepath.Join("/sys/fs/cgroup/pids", parts[2])
		case parts[0] == "0" && parts[1] == "" && dir == "":
			dir = filepath.Join("/sys/fs/cgroup", parts[2])
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "pids.max"))
	if err != nil {
		t.Fatalf("pids.max of pid %d: %v", pid, err)
	}
	return strings.TrimSpace(string(b))
}
