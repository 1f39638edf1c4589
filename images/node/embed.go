// Package node carries kiln's Node.js FDK (fdk.js) into the kiln binary,
// so `kiln build --runtime node` works without the source tree.
package node

import _ "embed"

//go:embed fdk.js
var fdk string

// FDK returns the contents of fdk.js, a fresh copy per call.
func FDK() []byte { return []byte(fdk) }
