package main

import (
	"os"
	"testing"

	"github.com/kiln-run/kiln/images/internal/fdktest"
)

// TestMain lets this test binary be the function fdktest starts, so the Go
// conformance function is called exactly as the Python and Node ones are.
func TestMain(m *testing.M) {
	fdktest.ServeChild(map[string]func(){"conformance": main})
	os.Exit(m.Run())
}

func TestConformance(t *testing.T) {
	fdktest.Runtime{Command: fdktest.SelfCommand, Conformance: "conformance"}.CheckConformance(t)
}
