package test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kiln runs the CLI against k and returns stdout, stderr and the exit code.
func (k *kilnd) kiln(stdin string, args ...string) (string, string, int) {
	k.t.Helper()
	cmd := exec.Command(env.kilnBin, args...)
	cmd.Env = append(cmd.Environ(), "KILN_API_URL="+k.url)
	if token := k.adminToken; token != "" {
		cmd.Env = append(cmd.Env, "KILN_ADMIN_TOKEN="+token)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		k.t.Fatalf("kiln %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (k *kilnd) mustKiln(stdin string, args ...string) string {
	k.t.Helper()
	out, errOut, code := k.kiln(stdin, args...)
	if code != 0 {
		k.t.Fatalf("kiln %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// TestCLIAgainstKilnd drives a whole life cycle through the kiln command
// against a real kilnd with an admin token, then restarts kilnd and finds
// everything still there.
func TestCLIAgainstKilnd(t *testing.T) {
	k := startKilnd(t, withAdminToken("s3cret"))
	k.mustKiln("", "apps", "create", "shop", "--config", "CURRENCY=EUR")
	if out := k.mustKiln("", "apps", "list"); !strings.Contains(out, "shop") {
		t.Fatalf("apps list:\n%s", out)
	}
	k.mustKiln("", "fns", "create", "shop", "echo", testfnImage, "--format", "json-http", "--memory", "64", "--config", "MODE=test")
	k.mustKiln("", "triggers", "create", "shop", "echo", "echo", "--source", "/echo")
	if out := k.mustKiln("body-from-stdin", "invoke", "shop", "echo"); out != "body-from-stdin" {
		t.Fatalf("invoke printed %q", out)
	}
	if out := k.mustKiln("", "invoke", "shop", "echo", "--body", "flag-body"); out != "flag-body" {
		t.Fatalf("invoke --body printed %q", out)
	}
	// The call's stderr comes back with --logs.
	_, errOut, code := k.kiln("", "invoke", "shop", "echo", "--body", "x", "--logs", "-H", "X-Test-Action: stderr=cli-log-line")
	if code != 0 || !strings.Contains(errOut, "cli-log-line") {
		t.Fatalf("invoke --logs: exit %d, stderr %q", code, errOut)
	}
	k.mustKiln("", "fns", "update", "shop", "echo", "--memory", "96")
	var fn struct {
		Memory int64             `json:"memory"`
		Config map[string]string `json:"config"`
	}
	if err := json.Unmarshal([]byte(k.mustKiln("", "-o", "json", "fns", "get", "shop", "echo")), &fn); err != nil {
		t.Fatal(err)
	}
	if fn.Memory != 96 || fn.Config["MODE"] != "test" {
		t.Fatalf("fn after update: %+v", fn)
	}
	// Errors print the server's message and exit non-zero.
	_, errOut, code = k.kiln("", "fns", "create", "shop", "bad", testfnImage, "--memory", "1")
	if code == 0 || !strings.Contains(errOut, "memory") {
		t.Fatalf("bad memory: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = k.kiln("", "apps", "create", "shop")
	if code == 0 || !strings.Contains(errOut, "Error:") {
		t.Fatalf("duplicate app: exit %d, stderr %q", code, errOut)
	}
	// Without the token the admin API refuses, with 401.
	k.anonymous = true
	resp, _ := k.do("GET", "/v2/apps", nil, nil)
	k.anonymous = false
	if resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}

	k.stop(syscall.SIGTERM, 20*time.Second)
	k.start()
	if out := k.mustKiln("", "fns", "list", "shop"); !strings.Contains(out, "echo") {
		t.Fatalf("fn lost across a restart:\n%s", out)
	}
	if out := k.mustKiln("after-restart", "invoke", "shop", "echo"); out != "after-restart" {
		t.Fatalf("invoke after restart printed %q", out)
	}
	k.mustKiln("", "apps", "delete", "shop")
	if out := k.mustKiln("", "apps", "list"); strings.Contains(out, "shop") {
		t.Fatalf("app still listed after delete:\n%s", out)
	}
}
