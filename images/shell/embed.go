// Package shell carries the launcher of kiln's shell runtime (run.awk)
// into the kiln binary, so `kiln build --runtime shell` works without the
// source tree.
package shell

import _ "embed"

//go:embed run.awk
var launcher string

// Launcher returns the contents of run.awk, a fresh copy per call.
func Launcher() []byte { return []byte(launcher) }
