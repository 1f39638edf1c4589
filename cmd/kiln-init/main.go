// Command kiln-init is the first program in a kiln container that kilnd
// runs with direct stdio: it puts the FIFOs kilnd made for the container
// on its stdin, stdout and stderr, then execs the function's own command
// in its place, so the function is PID 1 as it would be without it.
//
// Why: containerd's runc shim copies a container's stdio between the
// FIFOs it is given and pipes of its own (every stdio scheme is copied),
// so each call would cross the shim twice. With the FIFOs bind-mounted
// into the container and opened here, kilnd and the function talk
// directly, and the shim is only the task's supervisor.
//
// Usage (kilnd writes it into the spec): kiln-init DIR -- COMMAND [ARG...]
// where DIR holds FIFOs named stdin, stdout and stderr. It uses only the
// standard library and stays small: it runs inside the function's memory
// limit, before the function.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

func main() {
	if len(os.Args) < 4 || os.Args[2] != "--" {
		fail(2, "usage: kiln-init DIR -- COMMAND [ARG...]")
	}
	dir, args := os.Args[1], os.Args[3:]
	// stderr first, so that what goes wrong after it reaches kilnd's log
	// of the call. Opening stdout blocks until kilnd's read end is open,
	// which it is before the task starts. Stdin is opened non-blocking:
	// kilnd may already have written a cold call's body and closed its
	// writer, and a blocking open would then wait for a writer forever;
	// the body is still in the FIFO (kilnd holds a read end), then EOF.
	for _, f := range []struct {
		name string
		fd   int
		mode int
	}{{"stderr", 2, syscall.O_WRONLY}, {"stdout", 1, syscall.O_WRONLY}, {"stdin", 0, syscall.O_RDONLY | syscall.O_NONBLOCK}} {
		fd, err := syscall.Open(filepath.Join(dir, f.name), f.mode|syscall.O_CLOEXEC, 0)
		if err != nil {
			fail(126, fmt.Sprintf("open %s: %v", f.name, err))
		}
		// The function gets the blocking stdin any program expects.
		if err := syscall.SetNonblock(fd, false); err != nil {
			fail(126, fmt.Sprintf("%s: %v", f.name, err))
		}
		// dup3 leaves the copy without O_CLOEXEC: it survives the exec.
		if err := syscall.Dup3(fd, f.fd, 0); err != nil {
			fail(126, fmt.Sprintf("dup %s: %v", f.name, err))
		}
		_ = syscall.Close(fd)
	}
	// Linux reports a FIFO's hang-up to poll only for writers that came
	// after the reader opened. A cold call's writer may be gone already,
	// and a function that polls (Node's libuv) would then wait for an EOF
	// that read(2) gives at once but poll never signals. A writer of our
	// own, opened and closed, comes after our reader.
	if w, err := syscall.Open(filepath.Join(dir, "stdin"), syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
		_ = syscall.Close(w)
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		fail(127, err.Error())
	}
	err = syscall.Exec(path, args, os.Environ())
	fail(126, fmt.Sprintf("exec %s: %v", path, err))
}

func fail(code int, msg string) {
	fmt.Fprintln(os.Stderr, "kiln-init:", msg)
	os.Exit(code)
}
