// Package python carries kiln's Python FDK (fdk.py) into the kiln binary,
// so `kiln build --runtime python` works without the source tree.
package python

import _ "embed"

//go:embed fdk.py
var fdk string

// FDK returns the contents of fdk.py, a fresh copy per call.
func FDK() []byte { return []byte(fdk) }
