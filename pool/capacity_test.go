package pool

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestDetectCapacityMB(t *testing.T) {
	const meminfo = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n"
	gib := func(n int64) string { return strconv.FormatInt(n<<30, 10) + "\n" }
	tests := []struct {
		name     string
		files    map[string]string
		headroom int64
		want     int64
		wantErr  bool
	}{
		{
			name: "cgroup v2 limit",
			files: map[string]string{
				"proc/self/cgroup": "0::/kiln.slice/kilnd.service\n",
				"sys/fs/cgroup/kiln.slice/kilnd.service/memory.max": gib(4),
				"proc/meminfo": meminfo,
			},
			headroom: 512,
			want:     4096 - 512,
		},
		{
			name: "cgroup v2 limit on a parent is tighter",
			files: map[string]string{
				"proc/self/cgroup": "0::/kiln.slice/kilnd.service\n",
				"sys/fs/cgroup/kiln.slice/kilnd.service/memory.max": "max\n",
				"sys/fs/cgroup/kiln.slice/memory.max":               gib(2),
				"proc/meminfo":                                      meminfo,
			},
			want: 2048,
		},
		{
			name: "cgroup v2 without a limit uses MemAvailable",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": "max\n",
				"proc/meminfo":             meminfo,
			},
			headroom: 1000,
			want:     8000 - 1000,
		},
		{
			name: "container: host path missing, mount root is ours",
			files: map[string]string{
				"proc/self/cgroup":         "0::/docker/abc123\n",
				"sys/fs/cgroup/memory.max": gib(1),
				"proc/meminfo":             meminfo,
			},
			want: 1024,
		},
		{
			name: "cgroup v1 limit",
			files: map[string]string{
				"proc/self/cgroup": "12:cpu,cpuacct:/x\n11:memory:/docker/abc\n0::/\n",
				"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": gib(3),
				"proc/meminfo": meminfo,
			},
			want: 3072,
		},
		{
			name: "cgroup v1 unlimited is a huge number",
			files: map[string]string{
				"proc/self/cgroup":                           "11:memory:/\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
				"proc/meminfo":                               meminfo,
			},
			want: 8000,
		},
		{
			name: "limit above the machine's memory is no limit",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": gib(64),
				"proc/meminfo":             meminfo,
			},
			want: 8000,
		},
		{
			name: "headroom larger than the memory",
			files: map[string]string{
				"proc/self/cgroup":         "0::/\n",
				"sys/fs/cgroup/memory.max": gib(1),
				"proc/meminfo":             meminfo,
			},
			headroom: 2048,
			wantErr:  true,
		},
		{
			name:    "nothing readable",
			files:   map[string]string{},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tt.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := detectCapacityMB(root, tt.headroom)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %d MB, want an error", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %d MB, %v; want %d MB", got, err, tt.want)
			}
		})
	}
}

func TestDetectCapacityMBOnThisMachine(t *testing.T) {
	mb, err := DetectCapacityMB(0)
	if err != nil {
		t.Skipf("no memory information here: %v", err)
	}
	if mb <= 0 {
		t.Fatalf("DetectCapacityMB(0) = %d", mb)
	}
}
