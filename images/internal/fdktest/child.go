package fdktest

import (
	"fmt"
	"os"
	"os/exec"
)

// childEnv names the function a test binary started by SelfCommand serves.
const childEnv = "FDKTEST_SERVE"

// SelfCommand is a Runtime.Command for a compiled FDK: it runs the test
// binary itself, which serves function fn once ServeChild sees it.
func SelfCommand(fn string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{childEnv + "=" + fn}
	return cmd
}

// ServeChild makes a test binary a function when SelfCommand started it:
// call it first in TestMain. It runs the main named by the environment,
// which is expected to serve and exit (as fdk.Handle does), and returns
// at once in a binary started by go test.
func ServeChild(mains map[string]func()) {
	fn, ok := os.LookupEnv(childEnv)
	if !ok {
		return
	}
	main := mains[fn]
	if main == nil {
		fmt.Fprintf(os.Stderr, "fdktest: no function %q in this binary\n", fn)
		os.Exit(2)
	}
	main()
	os.Exit(0)
}
