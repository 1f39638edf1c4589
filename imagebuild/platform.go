package imagebuild

import (
	"debug/elf"
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// Platform is the OS/architecture an image is built for, as OCI spells
// it. Only linux images are built: kilnd runs linux containers.
type Platform struct {
	Arch    string // GOARCH spelling: amd64, arm64, arm, 386, ...
	Variant string // v7 for arm; empty elsewhere
}

// HostPlatform is the platform of the machine kiln runs on.
func HostPlatform() Platform {
	p := Platform{Arch: runtime.GOARCH}
	if p.Arch == "arm" {
		p.Variant = "v7"
	}
	return p
}

func (p Platform) String() string {
	s := "linux/" + p.Arch
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// goArches are the linux targets the Go toolchain cross-compiles to
// without cgo; arm variants map to GOARM.
var goArches = map[string][]string{
	"amd64": nil, "arm64": nil, "386": nil, "ppc64le": nil, "s390x": nil,
	"riscv64": nil, "arm": {"v6", "v7"}, "loong64": nil, "mips64le": nil,
}

// ParsePlatform reads "linux/ARCH[/VARIANT]" (or just "ARCH"); empty means
// the host's. Names the Go toolchain cannot target are refused.
func ParsePlatform(s string) (Platform, error) {
	if s == "" {
		return HostPlatform(), nil
	}
	parts := strings.Split(s, "/")
	if len(parts) == 1 {
		parts = append([]string{"linux"}, parts...)
	}
	if len(parts) > 3 || parts[0] != "linux" || parts[1] == "" {
		return Platform{}, fmt.Errorf("bad platform %q: want linux/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64", s)
	}
	p := Platform{Arch: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	// Docker's spellings of the same architectures.
	switch p.Arch {
	case "x86_64":
		p.Arch = "amd64"
	case "aarch64":
		p.Arch = "arm64"
	}
	if p.Arch == "arm64" && p.Variant == "v8" {
		p.Variant = ""
	}
	variants, ok := goArches[p.Arch]
	if !ok {
		return Platform{}, fmt.Errorf("unsupported platform %q: kiln builds linux/amd64, linux/arm64, linux/arm/v7, linux/386, linux/ppc64le, linux/s390x, linux/riscv64", s)
	}
	if p.Arch == "arm" && p.Variant == "" {
		p.Variant = "v7"
	}
	if p.Variant != "" && !slices.Contains(variants, p.Variant) {
		return Platform{}, fmt.Errorf("unsupported platform %q: %s has no variant %q", s, p.Arch, p.Variant)
	}
	return p, nil
}

// goEnv is the GOARCH (and GOARM) of a cross-compile to p.
func (p Platform) goEnv() []string {
	env := []string{"GOOS=linux", "GOARCH=" + p.Arch}
	if p.Arch == "arm" {
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	return env
}

// elfMachine is the ELF machine of binaries that run on p, so a base taken
// from this machine's files can be checked against the platform asked for.
func (p Platform) elfMachine() elf.Machine {
	switch p.Arch {
	case "amd64":
		return elf.EM_X86_64
	case "arm64":
		return elf.EM_AARCH64
	case "arm":
		return elf.EM_ARM
	case "386":
		return elf.EM_386
	case "ppc64le":
		return elf.EM_PPC64
	case "s390x":
		return elf.EM_S390
	case "riscv64":
		return elf.EM_RISCV
	case "loong64":
		return elf.EM_LOONGARCH
	case "mips64le":
		return elf.EM_MIPS
	}
	return elf.EM_NONE
}

// needHost refuses a build for another platform than this machine's where
// the image is made of this machine's own binaries.
func needHost(what string, p Platform) error {
	if h := HostPlatform(); p != h {
		return fmt.Errorf("cannot build %s for %s on this %s machine: its base is made of this machine's binaries; "+
			"build on a %s machine, or write the function in Go, which cross-compiles", what, p, h, p)
	}
	return nil
}
