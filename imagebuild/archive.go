package imagebuild

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Config is the runtime part of an image config: what a container started
// from the image runs, and as whom.
type Config struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Labels     map[string]string
}

// AnnotationImageName is the index annotation containerd's importer names an
// image by, in preference to the OCI ref name (which holds only the tag).
const AnnotationImageName = "io.containerd.image.name"

// WriteArchive writes an OCI image layout as a tar stream to w: one image,
// named ref, with one gzip layer per element of layers, for linux on the
// host's architecture. It returns the manifest digest ("sha256:..."), which
// is what containerd reports as the image's digest after import.
func WriteArchive(w io.Writer, ref string, cfg Config, layers ...[]File) (string, error) {
	blobs := make([]BlobLayer, 0, len(layers))
	for i, files := range layers {
		l, err := NewLayer(files)
		if err != nil {
			return "", fmt.Errorf("layer %d: %w", i, err)
		}
		blobs = append(blobs, MemoryLayer(l))
	}
	return WriteArchiveBlobs(w, ref, cfg, blobs...)
}

func imageConfig(cfg Config, layers []BlobLayer) ocispec.Image {
	created := epoch()
	img := ocispec.Image{
		Created: &created,
		Platform: ocispec.Platform{
			Architecture: runtime.GOARCH,
			OS:           "linux",
		},
		Config: ocispec.ImageConfig{
			User:       cfg.User,
			Env:        cfg.Env,
			Entrypoint: cfg.Entrypoint,
			Cmd:        cfg.Cmd,
			WorkingDir: cfg.WorkingDir,
			Labels:     cfg.Labels,
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: make([]digest.Digest, 0, len(layers))},
	}
	for i, l := range layers {
		img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, digest.Digest(l.DiffID))
		img.History = append(img.History, ocispec.History{
			Created:   &created,
			CreatedBy: fmt.Sprintf("kiln imagebuild: layer %d", i),
		})
	}
	return img
}

func descriptor(mediaType string, blob []byte) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: mediaType,
		Digest:    digest.FromBytes(blob),
		Size:      int64(len(blob)),
	}
}

func writeDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir,
		Name:     name,
		Mode:     0o755,
		ModTime:  epoch(),
		Format:   tar.FormatPAX,
	})
}

func writeFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     0o644,
		Size:     int64(len(data)),
		ModTime:  epoch(),
		Format:   tar.FormatPAX,
	}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// refTag checks ref and returns the tag the OCI ref name annotation carries:
// the part after the last ":" of the final path element, or "latest".
// References by digest are refused: a digest names content, and the content
// is not known until the archive is written.
func refTag(ref string) (string, error) {
	if ref == "" {
		return "", errors.New("image reference is empty")
	}
	if strings.ContainsAny(ref, " \t\r\n") {
		return "", fmt.Errorf("image reference %q contains whitespace", ref)
	}
	if strings.Contains(ref, "@") {
		return "", fmt.Errorf("image reference %q: a built image is named by tag, not digest", ref)
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if last == "" {
		return "", fmt.Errorf("image reference %q ends in /", ref)
	}
	if i := strings.LastIndex(last, ":"); i >= 0 {
		tag := last[i+1:]
		if tag == "" || last[:i] == "" {
			return "", fmt.Errorf("image reference %q has an empty name or tag", ref)
		}
		return tag, nil
	}
	return "latest", nil
}
