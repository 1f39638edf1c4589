package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDirectStdio: with kiln-init beside kilnd (the default), a hot
// function's stdin, stdout and stderr are kilnd's FIFOs themselves, and
// the function, not kiln-init, is the container's process; with
// --kiln-init=off they are the shim's pipes. Either way calls work.
func TestDirectStdio(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		direct bool
	}{
		{"default", nil, true},
		{"off", []string{"--kiln-init", "off"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := startKilnd(t, withArgs(tc.args...))
			d := k.deploy("stdio", "echo", testfnImage, "json-http", nil)
			for _, body := range []string{"one", "two"} {
				resp, got := k.do("POST", "/invoke/"+d.FnID, strings.NewReader(body), nil)
				if resp.StatusCode != 200 || string(got) != body {
					t.Fatalf("call: %d %q", resp.StatusCode, got)
				}
			}
			list := k.containers()
			if len(list) != 1 {
				t.Fatalf("%d containers, want 1", len(list))
			}
			task, err := list[0].Task(k.ctrCtx(), nil)
			if err != nil {
				t.Fatal(err)
			}
			pid := int(task.Pid())
			exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(exe, "kiln-init") {
				t.Errorf("the container's process is still kiln-init (%s): it did not exec the function", exe)
			}
			for fd, name := range []string{"stdin", "stdout", "stderr"} {
				target, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "fd", strconv.Itoa(fd)))
				if err != nil {
					t.Fatal(err)
				}
				want := "/.kiln/stdio/" + name
				if tc.direct && target != want {
					t.Errorf("fd %d of the function is %s, want kilnd's FIFO %s", fd, target, want)
				}
				if !tc.direct && !strings.HasPrefix(target, "pipe:") {
					t.Errorf("fd %d of the function is %s, want the shim's pipe", fd, target)
				}
			}
		})
	}
}
