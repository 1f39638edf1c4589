package test

import (
	"flag"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestBenchProcs measures what kilnd's default --procs (half the CPUs)
// saves against a P per CPU (Go's default), in one run: two kilnds, each
// with 16 warm containers of the same fn, driven at c=16 in alternating
// slices so the machine's noise falls on both alike. It prints kilnd's
// CPU per call and calls per second for each; part of make bench.
func TestBenchProcs(t *testing.T) {
	if !*benchE2E {
		t.Skip("run with make bench")
	}
	slices, slice := 6, 2*time.Second
	if testing.Short() {
		slices, slice = 1, 500*time.Millisecond
	}
	type side struct {
		name  string
		k     *kilnd
		url   string
		calls int64
		took  time.Duration
		cpu   time.Duration
	}
	all := strconv.Itoa(runtime.NumCPU())
	sides := []*side{
		{name: "--procs default (" + strconv.Itoa(max(1, runtime.NumCPU()/2)) + ")", k: startKilnd(t, withArgs("--max-memory", "4096"))},
		{name: "--procs " + all + " (a P per CPU)", k: startKilnd(t, withArgs("--max-memory", "4096", "--procs", all))},
	}
	for _, s := range sides {
		d := s.k.deploy("procs", "echo", testfnImage, "json-http", map[string]any{"memory": 64, "idle_timeout": 600})
		growPool(t, s.k, d.FnID, 16)
		s.url = s.k.url + "/invoke/" + d.FnID
	}
	client := newBenchClient()
	body := benchBody()
	load0 := loadAvg()
	for range slices {
		for _, s := range sides {
			call := func(int) error { return postEcho(client, s.url, body, nil) }
			drive(t, 16, 300*time.Millisecond, call)
			cpu0 := procCPU(s.k.cmd.Process.Pid)
			n, took := drive(t, 16, slice, call)
			s.cpu += procCPU(s.k.cmd.Process.Pid) - cpu0
			s.calls, s.took = s.calls+n, s.took+took
		}
	}
	out := fmt.Sprintf("kilnd --procs at c=16, %d slices of %s each, load average %s -> %s, %d CPUs:\n", slices, slice, load0, loadAvg(), runtime.NumCPU())
	for _, s := range sides {
		out += fmt.Sprintf("  %-28s kilnd CPU %6.1f µs per call, %5.0f calls/s (%d calls)\n", s.name, us(s.cpu)/float64(s.calls), float64(s.calls)/s.took.Seconds(), s.calls)
	}
	a, b := sides[0], sides[1]
	out += fmt.Sprintf("  default / a P per CPU: CPU per call %.2f, calls/s %.2f\n",
		(us(a.cpu)/float64(a.calls))/(us(b.cpu)/float64(b.calls)), (float64(a.calls)/a.took.Seconds())/(float64(b.calls)/b.took.Seconds()))
	t.Log("\n" + out)
	fmt.Print(out)
}

var abKilnd = flag.String("ab-kilnd", "", "TestBenchKilndAB compares this tree's kilnd with the kilnd binary at this path")

// TestBenchKilndAB measures kilnd's own CPU per call and calls per second
// at c=16 for this tree's kilnd and another kilnd binary (an older build,
// say), in one run with alternating slices: the way to tell what a change
// to kilnd saved on a machine whose speed varies by the hour. Run with
// go test -run '^TestBenchKilndAB$' -v ./test/ -args -ab-kilnd PATH.
func TestBenchKilndAB(t *testing.T) {
	if *abKilnd == "" {
		t.Skip("run with -args -ab-kilnd PATH")
	}
	this := startKilnd(t, withArgs("--max-memory", "4096"))
	saved := env.kilndBin
	env.kilndBin = *abKilnd
	other := startKilnd(t, withArgs("--max-memory", "4096"))
	env.kilndBin = saved
	type side struct {
		name  string
		k     *kilnd
		url   string
		calls int64
		took  time.Duration
		cpu   time.Duration
	}
	sides := []*side{{name: "this tree", k: this}, {name: *abKilnd, k: other}}
	for _, s := range sides {
		d := s.k.deploy("ab", "echo", testfnImage, "json-http", map[string]any{"memory": 64, "idle_timeout": 600})
		growPool(t, s.k, d.FnID, 16)
		s.url = s.k.url + "/invoke/" + d.FnID
	}
	client := newBenchClient()
	body := benchBody()
	load0 := loadAvg()
	for range 6 {
		for _, s := range sides {
			call := func(int) error { return postEcho(client, s.url, body, nil) }
			drive(t, 16, 300*time.Millisecond, call)
			cpu0 := procCPU(s.k.cmd.Process.Pid)
			n, took := drive(t, 16, 2*time.Second, call)
			s.cpu += procCPU(s.k.cmd.Process.Pid) - cpu0
			s.calls, s.took = s.calls+n, s.took+took
		}
	}
	out := fmt.Sprintf("kilnd A/B at c=16, 6 slices of 2s each, load average %s -> %s:\n", load0, loadAvg())
	for _, s := range sides {
		out += fmt.Sprintf("  %-40s kilnd CPU %6.1f µs per call, %5.0f calls/s\n", s.name, us(s.cpu)/float64(s.calls), float64(s.calls)/s.took.Seconds())
	}
	a, b := sides[0], sides[1]
	out += fmt.Sprintf("  this / other: CPU per call %.2f, calls/s %.2f\n",
		(us(a.cpu)/float64(a.calls))/(us(b.cpu)/float64(b.calls)), (float64(a.calls)/a.took.Seconds())/(float64(b.calls)/b.took.Seconds()))
	t.Log("\n" + out)
	fmt.Print(out)
}
