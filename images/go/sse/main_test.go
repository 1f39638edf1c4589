package main

import (
	"os"
	"testing"

	"github.com/kiln-run/kiln/images/internal/fdktest"
)

// TestMain lets this test binary be the function fdktest starts.
func TestMain(m *testing.M) {
	fdktest.ServeChild(map[string]func(){"sse": main})
	os.Exit(m.Run())
}

func TestSSE(t *testing.T) {
	fdktest.Runtime{Command: fdktest.SelfCommand, SSE: "sse"}.CheckSSE(t)
}
