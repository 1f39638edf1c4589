// Package test holds kiln's end-to-end tests and benchmarks. They build
// kilnd and the test function images, start a private containerd under a
// temp dir (never a system one), run kilnd as a process against it, and
// talk to it over HTTP on loopback.
package test
