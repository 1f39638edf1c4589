package test

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

var profileOut = flag.String("profile-out", "", "TestProfileKilnd writes kilnd's CPU profile under load (c=16, json-http) to this file")

// TestProfileKilnd is not a test of behaviour: it records where kilnd's
// CPU goes per hot call, for docs/PERFORMANCE.md. It runs only with
// -profile-out.
func TestProfileKilnd(t *testing.T) {
	if *profileOut == "" {
		t.Skip("run with -args -profile-out FILE")
	}
	pprofAddr := freeAddr(t)
	k := startKilnd(t, withArgs("--pprof", pprofAddr, "--max-memory", "4096", "--log-level", "warn"))
	d := k.deploy("prof", "echo", testfnImage, "json-http", map[string]any{"memory": 64, "idle_timeout": 600})
	growPool(t, k, d.FnID, 16)
	client := newBenchClient()
	body := benchBody()
	url := k.url + "/invoke/" + d.FnID
	call := func(int) error { return postEcho(client, url, body, nil) }
	drive(t, 16, 3*time.Second, call)
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/profile?seconds=10")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{b, err}
	}()
	cpu0 := procCPU(k.cmd.Process.Pid)
	n, took := drive(t, 16, 11*time.Second, call)
	cpu := procCPU(k.cmd.Process.Pid) - cpu0
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := os.WriteFile(*profileOut, r.b, 0o644); err != nil {
		t.Fatal(err)
	}
	msg := fmt.Sprintf("%d calls in %s (%.0f/s), kilnd CPU %.1f µs per call", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), us(cpu)/float64(n))
	t.Log(msg)
	fmt.Println(msg)
}
