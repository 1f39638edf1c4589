package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BlobLayer is a layer whose compressed blob lives somewhere it can be
// reopened, such as a cached base rootfs on disk: too big to hold in
// memory the way Layer does.
type BlobLayer struct {
	Digest string
	DiffID string
	Size   int64
	Open   func() (io.ReadCloser, error)
}

// MemoryLayer turns an in-memory layer into a BlobLayer.
func MemoryLayer(l Layer) BlobLayer {
	return BlobLayer{Digest: l.Digest, DiffID: l.DiffID, Size: int64(len(l.Blob)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l.Blob)), nil }}
}

// FileLayer is a BlobLayer read from a gzip tar on disk whose digests are
// already known.
func FileLayer(path, dgst, diffID string, size int64) BlobLayer {
	return BlobLayer{Digest: dgst, DiffID: diffID, Size: size,
		Open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

// WriteArchiveBlobs is WriteArchive for layers given as blobs: it writes
// an OCI image layout tar of one image named ref to w and returns the
// manifest digest. Each blob is copied once and checked against its size
// and digest on the way, so a corrupt cache cannot produce an image that
// containerd would refuse only at import.
func WriteArchiveBlobs(w io.Writer, ref string, cfg Config, layers ...BlobLayer) (string, error) {
	if _, err := refTag(ref); err != nil {
		return "", err
	}
	configBlob, err := json.Marshal(imageConfig(cfg, layers))
	if err != nil {
		return "", err
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    descriptor(ocispec.MediaTypeImageConfig, configBlob),
		Layers:    make([]ocispec.Descriptor, 0, len(layers)),
	}
	for _, l := range layers {
		manifest.Layers = append(manifest.Layers, ocispec.Descriptor{
			MediaType: ocispec.MediaTypeImageLayerGzip,
			Digest:    digest.Digest(l.Digest),
			Size:      l.Size,
		})
	}
	manifestBlob, err := json.Marshal(manifest)
	if err != nil {
		return "", err
	}
	mdesc := descriptor(ocispec.MediaTypeImageManifest, manifestBlob)
	// The manifest does not hold the name, so the name may come from it.
	ref = ResolveRef(ref, mdesc.Digest.String())
	tag, err := refTag(ref)
	if err != nil {
		return "", err
	}
	plat := cfg.platform()
	mdesc.Platform = &ocispec.Platform{Architecture: plat.Arch, Variant: plat.Variant, OS: "linux"}
	mdesc.Annotations = map[string]string{AnnotationImageName: ref, ocispec.AnnotationRefName: tag}
	indexBlob, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mdesc},
	})
	if err != nil {
		return "", err
	}
	layoutBlob, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := writeDir(tw, d); err != nil {
			return "", err
		}
	}
	written := map[string]bool{}
	for _, b := range [][]byte{configBlob, manifestBlob} {
		d := digest.FromBytes(b)
		written[d.String()] = true
		if err := writeFile(tw, "blobs/sha256/"+d.Encoded(), b); err != nil {
			return "", err
		}
	}
	for _, l := range layers {
		if written[l.Digest] {
			continue
		}
		written[l.Digest] = true
		if err := copyBlob(tw, l); err != nil {
			return "", err
		}
	}
	if err := writeFile(tw, ocispec.ImageLayoutFile, layoutBlob); err != nil {
		return "", err
	}
	if err := writeFile(tw, "index.json", indexBlob); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return mdesc.Digest.String(), nil
}

func copyBlob(tw *tar.Writer, l BlobLayer) error {
	d, err := digest.Parse(l.Digest)
	if err != nil {
		return fmt.Errorf("layer digest %q: %w", l.Digest, err)
	}
	rc, err := l.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     "blobs/sha256/" + d.Encoded(),
		Mode:     0o644,
		Size:     l.Size,
		ModTime:  epoch(),
		Format:   tar.FormatPAX,
	}); err != nil {
		return err
	}
	v := d.Verifier()
	n, err := io.Copy(tw, io.TeeReader(io.LimitReader(rc, l.Size), v))
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if n != l.Size || !v.Verified() {
		return fmt.Errorf("layer %s: blob does not match its digest or size (%d of %d bytes); remove it from the cache and build again", l.Digest, n, l.Size)
	}
	return nil
}

// TarDirLayer writes the tree at dir as a gzip layer to w and returns its
// digests and size. Unlike LayerFromDir it streams, keeps ownership (a
// Debian rootfs has files owned by other users and groups) and hard links,
// and leaves out device nodes, sockets and pipes, which a container gets
// from its runtime. Timestamps are clamped to the epoch, so an unchanged
// tree gives the same digest. The contents of skip (paths relative to
// dir) are left out, the directories themselves kept.
func TarDirLayer(w io.Writer, dir string, skip ...string) (dgst, diffID string, size int64, err error) {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[strings.Trim(filepath.ToSlash(s), "/")] = true
	}
	compressed := &countingHash{h: sha256.New()}
	zw, err := gzip.NewWriterLevel(io.MultiWriter(w, compressed), gzip.DefaultCompression)
	if err != nil {
		return "", "", 0, err
	}
	raw := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, raw))
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}

	walkErr := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
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
		name := filepath.ToSlash(rel)
		if skipped[path.Dir(name)] && !skipped[name] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		if mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket|fs.ModeNamedPipe|fs.ModeIrregular) != 0 {
			return nil
		}
		link := ""
		if mode&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch(), time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		hdr.PAXRecords = nil
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			if mode.IsRegular() && st.Nlink > 1 {
				key := inode{uint64(st.Dev), uint64(st.Ino)}
				if first, ok := links[key]; ok {
					hdr.Typeflag = tar.TypeLink
					hdr.Linkname = first
					hdr.Size = 0
				} else {
					links[key] = name
				}
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s changed size while being archived", name)
			}
		}
		return nil
	})
	if walkErr != nil {
		return "", "", 0, walkErr
	}
	if err := tw.Close(); err != nil {
		return "", "", 0, err
	}
	if err := zw.Close(); err != nil {
		return "", "", 0, err
	}
	return "sha256:" + hex.EncodeToString(compressed.h.Sum(nil)),
		"sha256:" + hex.EncodeToString(raw.Sum(nil)), compressed.n, nil
}

type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}
