// Package imagebuild writes OCI image archives from files in memory, so kiln
// can build function images without Docker or a registry. Output is
// deterministic: the same files and config always give the same digests,
// which keeps rebuilt images from churning warm pools keyed by digest.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// File is one entry of a layer. Path is slash separated and taken relative
// to the image root (a leading "/" is allowed). A zero Mode means 0644 for
// files and 0755 for directories. Symlink, when set, makes the entry a
// symbolic link to that target and Data is ignored.
type File struct {
	Path    string
	Mode    fs.FileMode
	Data    []byte
	Dir     bool
	Symlink string
}

// Layer is a gzip-compressed tar of files, with the two digests an image
// needs: Digest names the blob, DiffID (of the uncompressed tar) goes into
// the image config's rootfs.
type Layer struct {
	Blob   []byte
	Digest string
	DiffID string
}

// epoch is the timestamp of every entry; a fixed one keeps digests stable.
func epoch() time.Time { return time.Unix(0, 0).UTC() }

// NewLayer builds a layer from files. Entries are sorted by path, owned by
// root and stamped with the Unix epoch; parent directories that are not
// listed are added with mode 0755 so extraction never depends on defaults.
func NewLayer(files []File) (Layer, error) { return newLayer(files, gzip.BestCompression) }

// newLayer is NewLayer at a gzip level: large layers built on the fly
// (a host base) trade a few percent of size for several times the speed.
func newLayer(files []File, level int) (Layer, error) {
	entries, err := normalize(files)
	if err != nil {
		return Layer{}, err
	}

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, f := range entries {
		hdr := &tar.Header{
			Name:    f.Path,
			Mode:    tarMode(f.Mode),
			ModTime: epoch(),
			Format:  tar.FormatPAX,
		}
		switch {
		case f.Dir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case f.Symlink != "":
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = f.Symlink
		default:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return Layer{}, fmt.Errorf("layer entry %q: %w", f.Path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return Layer{}, fmt.Errorf("layer entry %q: %w", f.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return Layer{}, err
	}

	var gz bytes.Buffer
	// The zero gzip header (no name, no mtime) is what makes the compressed
	// bytes reproducible, not only the tar inside.
	zw, err := gzip.NewWriterLevel(&gz, level)
	if err != nil {
		return Layer{}, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return Layer{}, err
	}
	if err := zw.Close(); err != nil {
		return Layer{}, err
	}
	return Layer{
		Blob:   gz.Bytes(),
		Digest: sha256Digest(gz.Bytes()),
		DiffID: sha256Digest(raw.Bytes()),
	}, nil
}

// normalize cleans paths, rejects duplicates and escapes, fills in default
// modes and missing parents, and sorts. Sorting by path alone puts every
// directory before its contents, since a prefix sorts first.
func normalize(files []File) ([]File, error) {
	byPath := make(map[string]File, len(files))
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("duplicate layer path %q", p)
		}
		f.Path = p
		if f.Symlink != "" {
			f.Dir = false
		}
		if f.Mode.Perm() == 0 && f.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) == 0 {
			switch {
			case f.Dir:
				f.Mode |= 0o755
			case f.Symlink != "":
				f.Mode |= 0o777
			default:
				f.Mode |= 0o644
			}
		}
		byPath[p] = f
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			parent, ok := byPath[dir]
			if !ok {
				byPath[dir] = File{Path: dir, Dir: true, Mode: 0o755}
				continue
			}
			if !parent.Dir {
				return nil, fmt.Errorf("layer path %q is inside %q, which is not a directory", p, dir)
			}
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func cleanPath(p string) (string, error) {
	if strings.Contains(p, "\x00") {
		return "", fmt.Errorf("layer path %q contains NUL", p)
	}
	clean := path.Clean("/" + p)
	if clean == "/" {
		return "", fmt.Errorf("layer path %q names the root", p)
	}
	// Cleaning against "/" already resolves "..", so what is left can only
	// escape if the original tried to; refuse rather than silently clamp.
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("layer path %q contains ..", p)
		}
	}
	return clean[1:], nil
}

// tarMode maps Go's FileMode to the Unix bits a tar header carries.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// LayerFromDir reads a directory tree into files, keeping permission bits
// and symlinks (targets are not followed). Ownership and timestamps are
// dropped on purpose: layers are always root-owned and epoch-stamped.
// Devices, sockets and pipes are refused.
// Top-level entries named in skip (with all they hold) are not read.
func LayerFromDir(dir string, skip ...string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if slices.Contains(skip, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: filepath.ToSlash(rel), Mode: info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
		switch t := info.Mode().Type(); {
		case t == 0:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			f.Data = data
		case t == fs.ModeDir:
			f.Dir = true
		case t == fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			f.Symlink = filepath.ToSlash(target)
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, t)
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}
