package shell

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// busybox runs run.awk the way a shell image does: busybox's awk and sh,
// not the host's, since their handling of odd variable names is the point.
func busybox(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("busybox not installed")
	return ""
}

func run(t *testing.T, script, stdin string, env ...string) (string, int) {
	t.Helper()
	bb := busybox(t)
	dir := t.TempDir()
	// Scripts find busybox's applets on PATH, as in the image.
	for _, applet := range []string{"sh", "awk", "cat"} {
		if err := os.Symlink(bb, filepath.Join(dir, applet)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bb, "awk", "-f", "run.awk", script)
	cmd.Env = append([]string{"PATH=" + dir}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return out.String(), code
}

func TestConformance(t *testing.T) {
	tests := []struct {
		body    string
		env     []string
		payload any
		env1    any
		header  any
	}{
		{`{"a": [1, "x"]}`, []string{"ENV1=v1", "FN_HEADER_X-Test=it's here"}, map[string]any{"a": []any{1.0, "x"}}, "v1", "it's here"},
		{"line one\nsaid \"hi\"\\", nil, "line one\nsaid \"hi\"\\", nil, nil},
		{"", []string{"FN_HEADER_X-Test="}, "", nil, ""},
		{"42", nil, 42.0, nil, nil},
	}
	for i, tt := range tests {
		out, code := run(t, "conformance/func.sh", tt.body, tt.env...)
		if code != 0 {
			t.Fatalf("case %d: exit %d", i, code)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("case %d: %q: %v", i, out, err)
		}
		want := map[string]any{"normal": "Hello World!", "env1": tt.env1, "payload": tt.payload, "header": tt.header}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("case %d: got %v, want %v", i, got, want)
		}
	}
}

func TestLauncherPassesExitStatusAndStdin(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "s.sh")
	if err := os.WriteFile(script, []byte("cat; echo \"[$FN_HEADER_Content_Type]\"; exit 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, script, "body\n", "FN_HEADER_Content-Type=text/plain")
	if code != 7 || out != "body\n[text/plain]\n" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
}

func TestEmbeddedLauncherIsTheFile(t *testing.T) {
	b, err := os.ReadFile("run.awk")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Launcher()) {
		t.Error("Launcher() differs from run.awk")
	}
}
