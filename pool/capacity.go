package pool

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DetectCapacityMB suggests Config.CapacityMB: the memory limit of this
// process's cgroup (v2 memory.max or v1 memory.limit_in_bytes, the tightest
// of its ancestors too), or MemAvailable from /proc/meminfo when there is
// no real limit, minus headroomMB for kilnd itself and the system.
func DetectCapacityMB(headroomMB int64) (int64, error) {
	return detectCapacityMB("/", headroomMB)
}

// detectCapacityMB reads its files under root, so tests can fake them.
func detectCapacityMB(root string, headroomMB int64) (int64, error) {
	total, avail, memErr := readMeminfo(filepath.Join(root, "proc/meminfo"))
	limit, ok := cgroupLimit(root, total)
	if !ok {
		if memErr != nil {
			return 0, fmt.Errorf("pool: no cgroup memory limit and %w", memErr)
		}
		limit = avail
	}
	mb := limit>>20 - headroomMB
	if mb <= 0 {
		return 0, fmt.Errorf("pool: %d MB of memory leaves nothing after %d MB headroom", limit>>20, headroomMB)
	}
	return mb, nil
}

// readMeminfo returns MemTotal and MemAvailable in bytes.
func readMeminfo(path string) (total, avail int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("reading meminfo: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		switch name {
		case "MemTotal":
			total = n
		case "MemAvailable":
			avail = n
		}
	}
	if avail == 0 {
		return total, 0, errors.New("meminfo has no MemAvailable")
	}
	return total, avail, nil
}

// cgroupLimit finds the tightest memory limit on this process's cgroup and
// its ancestors. Limits of "max", or at least the machine's memory, are no
// limit at all.
func cgroupLimit(root string, total int64) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, false
	}
	var best int64
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-id:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var base, file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			base, file = filepath.Join(root, "sys/fs/cgroup"), "memory.max"
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			base, file = filepath.Join(root, "sys/fs/cgroup/memory"), "memory.limit_in_bytes"
		default:
			continue
		}
		// In a container the path is often the host's and does not
		// exist under our mount; walking up reaches the mount's root,
		// which is then our own cgroup.
		for dir := filepath.Join(base, parts[2]); ; dir = filepath.Dir(dir) {
			if n, ok := readLimit(filepath.Join(dir, file), total); ok && (!found || n < best) {
				best, found = n, true
			}
			if len(dir) <= len(base) {
				break
			}
		}
	}
	return best, found
}

func readLimit(path string, total int64) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	// cgroup v1 writes "unlimited" as a huge page-rounded number.
	if err != nil || n <= 0 || n >= 1<<62 || (total > 0 && n >= total) {
		return 0, false
	}
	return n, true
}
