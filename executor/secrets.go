package executor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Secret is one secret a fn gets, as a file /run/secrets/<Name>.
type Secret struct {
	Name  string
	Value []byte
}

// secretsMount is where a fn's secrets appear in its containers.
const secretsMount = "/run/secrets"

// writeSecrets writes a container's secrets into their own dir under
// r.cfg.SecretDir (a tmpfs, so they never touch a disk), each file mode
// 0400 and owned by the user the container runs as, and returns the
// read-only mount that shows them at /run/secrets. Nothing of them goes
// into the spec's env or args, so neither `ps` nor the spec shows them.
func (r *Runtime) writeSecrets(id, imageUser string, secrets []Secret) (string, specs.Mount, error) {
	if len(secrets) == 0 {
		return "", specs.Mount{}, nil
	}
	if err := r.secretFS(); err != nil {
		return "", specs.Mount{}, err
	}
	uid, gid, mode := secretOwner(imageUser)
	dir := filepath.Join(r.cfg.SecretDir, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", specs.Mount{}, fmt.Errorf("secret dir: %w", err)
	}
	fail := func(err error) (string, specs.Mount, error) {
		_ = os.RemoveAll(dir)
		return "", specs.Mount{}, err
	}
	for _, s := range secrets {
		p := filepath.Join(dir, s.Name)
		if filepath.Dir(p) != dir || s.Name == "." || s.Name == ".." {
			return fail(fmt.Errorf("secret name %q is not a file name", s.Name))
		}
		if err := os.WriteFile(p, s.Value, mode); err != nil {
			return fail(fmt.Errorf("write secret %q: %w", s.Name, err))
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return fail(fmt.Errorf("secret %q: %w", s.Name, err))
		}
	}
	// The dir is the container's way in: its user must traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	return dir, specs.Mount{
		Destination: secretsMount,
		Type:        "bind",
		Source:      dir,
		Options:     []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
	}, nil
}

// secretOwner is who may read a container's secret files: the numeric
// user its image names, or 65534, which kiln runs an image that names no
// user as. A user given by name cannot be resolved without reading the
// image's /etc/passwd; its files are then readable by all in the
// container (0444), which holds that one user only.
func secretOwner(imageUser string) (uid, gid int, mode os.FileMode) {
	if imageUser == "" {
		return 65534, 65534, 0o400
	}
	u, g, hasGroup := strings.Cut(imageUser, ":")
	uid, err := strconv.Atoi(u)
	if err != nil {
		return 0, 0, 0o444
	}
	gid = uid
	if hasGroup {
		if n, err := strconv.Atoi(g); err == nil {
			gid = n
		}
	}
	return uid, gid, 0o400
}

// secretFS makes sure SecretDir is a tmpfs, mounting one the first time a
// container has secrets (not at start: a kilnd that never uses secrets
// leaves no mount behind). A tmpfs left by a kilnd that was killed is
// found and used as it is.
func (r *Runtime) secretFS() error {
	r.secretMu.Lock()
	defer r.secretMu.Unlock()
	if r.secretReady {
		return nil
	}
	dir := r.cfg.SecretDir
	if dir == "" {
		return fmt.Errorf("fn has secrets, but this kilnd has no secret dir")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secret dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("secret dir: %w", err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=64m"); err != nil {
			return fmt.Errorf("secrets need a tmpfs at %s (they must not reach a disk), and mounting one failed: %w", dir, err)
		}
		r.secretMounted = true
	}
	r.secretReady = true
	return nil
}

// unmountSecretFS undoes secretFS's mount, at Close. Secrets of
// containers still running would go with it, but Close comes after every
// container is removed.
func (r *Runtime) unmountSecretFS() {
	r.secretMu.Lock()
	defer r.secretMu.Unlock()
	if r.secretMounted {
		if err := unix.Unmount(r.cfg.SecretDir, unix.MNT_DETACH); err != nil {
			r.log.WithError(err).Warn("unmount the secrets tmpfs")
		}
		r.secretMounted, r.secretReady = false, false
	}
}
