package test

import (
	"flag"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
)

var abKilnd = flag.String("ab-kilnd", "", "TestBenchKilndAB compares this tree's kilnd with the kilnd binary at this path")

// TestBenchProcs measures what kilnd's default --procs (half the CPUs)
// saves against a P per CPU (Go's default), in one run; part of make
// bench.
func TestBenchProcs(t *testing.T) {
	if !*benchE2E {
		t.Skip("run with make bench")
	}
	all := strconv.Itoa(runtime.NumCPU())
	compareKilnds(t, "kilnd --procs", []*abSide{
		{name: "--procs default (" + strconv.Itoa(max(1, runtime.NumCPU()/2)) + ")", k: startKilnd(t, withArgs("--max-memory", "4096"))},
		{name: "--procs " + all + " (a P per CPU)", k: startKilnd(t, withArgs("--max-memory", "4096", "--procs", all))},
	})
}

// TestBenchKilndAB measures this tree's kilnd against another kilnd
// binary (an older build, say) in one run: the way to tell what a change
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
	compareKilnds(t, "kilnd A/B", []*abSide{{name: "this tree", k: this}, {name: *abKilnd, k: other}})
}

// abSide is one kilnd of a comparison and what it did.
type abSide struct {
	name  string
	k     *kilnd
	url   string
	calls int64
	took  time.Duration
	cpu   time.Duration
}

// compareKilnds gives each kilnd 16 warm containers of the same fn and
// drives them at c=16 in alternating slices, so the machine's noise falls
// on both alike, then prints each one's own CPU per call and calls per
// second, and the first over the second.
func compareKilnds(t *testing.T, title string, sides []*abSide) {
	t.Helper()
	slices, slice := 6, 2*time.Second
	if testing.Short() {
		slices, slice = 1, 500*time.Millisecond
	}
	for _, s := range sides {
		d := s.k.deploy("ab", "echo", testfnImage, "json-http", map[string]any{"memory": 64, "idle_timeout": 600})
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
	out := fmt.Sprintf("%s at c=16, %d slices of %s each, load average %s -> %s, %d CPUs:\n", title, slices, slice, load0, loadAvg(), runtime.NumCPU())
	for _, s := range sides {
		out += fmt.Sprintf("  %-40s kilnd CPU %6.1f µs per call, %5.0f calls/s (%d calls)\n", s.name, s.cpuPerCall(), s.rate(), s.calls)
	}
	a, b := sides[0], sides[1]
	out += fmt.Sprintf("  first / second: CPU per call %.2f, calls/s %.2f\n", a.cpuPerCall()/b.cpuPerCall(), a.rate()/b.rate())
	t.Log("\n" + out)
	fmt.Print(out)
}

func (s *abSide) cpuPerCall() float64 { return us(s.cpu) / float64(s.calls) }
func (s *abSide) rate() float64       { return float64(s.calls) / s.took.Seconds() }
