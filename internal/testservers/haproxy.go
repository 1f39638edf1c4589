package testservers

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// HAProxyBin finds haproxy, failing t when it is missing: a check that
// quietly does not run looks the same as one that passed. Debian puts it
// in /usr/sbin, which a non-root PATH may lack.
func HAProxyBin(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	t.Fatal("haproxy is not installed: run scripts/install-deps.sh (it installs Debian's haproxy package, 2.6)")
	return ""
}

var (
	haproxyBind    = regexp.MustCompile(`(?m)^(\s+bind\s+)\S+`)
	haproxyServer  = regexp.MustCompile(`(?m)^(\s+server\s+(\S+)\s+)\S+`)
	haproxyResolv  = regexp.MustCompile(`(?m)^(\s+)parse-resolv-conf\s*$`)
	haproxyLastArg = regexp.MustCompile(`\S+$`)
)

// HAProxyConfig is src (deploy/haproxy.cfg) with its one bind at listen
// and each server line's address replaced by servers[name]; every other
// line stays the file's, so a test runs what users deploy. Every server
// name appears twice (the calls and the API backend). The resolvers would
// open sockets to this machine's name servers (nothing is looked up: the
// addresses are IPs); tests keep to loopback, so they get one there where
// nothing answers.
func HAProxyConfig(t testing.TB, src, listen string, servers map[string]string) string {
	t.Helper()
	binds := 0
	src = haproxyBind.ReplaceAllStringFunc(src, func(m string) string {
		binds++
		return haproxyLastArg.ReplaceAllString(m, listen)
	})
	if binds != 1 {
		t.Fatalf("haproxy.cfg: %d bind lines, want 1", binds)
	}
	rewritten := 0
	var missing []string
	src = haproxyServer.ReplaceAllStringFunc(src, func(m string) string {
		name := strings.Fields(m)[1]
		addr, ok := servers[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		rewritten++
		return haproxyLastArg.ReplaceAllString(m, addr)
	})
	if len(missing) > 0 || rewritten != 2*len(servers) {
		t.Fatalf("haproxy.cfg: servers %v not among the test's, %d server lines rewritten (want %d)", missing, rewritten, 2*len(servers))
	}
	if n := len(haproxyResolv.FindAllString(src, -1)); n != 1 {
		t.Fatalf("haproxy.cfg: %d parse-resolv-conf lines, want 1", n)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	return haproxyResolv.ReplaceAllString(src, fmt.Sprintf("${1}nameserver loopback 127.0.0.1:%d", udp))
}
