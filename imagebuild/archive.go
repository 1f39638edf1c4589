package imagebuild

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
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
	// Platform the image runs on; the zero value means this machine's.
	Platform Platform
}

func (c Config) platform() Platform {
	if c.Platform.Arch == "" {
		return HostPlatform()
	}
	return c.Platform
}

// AnnotationImageName is the index annotation containerd's importer names an
// image by, in preference to the OCI ref name (which holds only the tag).
const AnnotationImageName = "io.containerd.image.name"

// WriteArchive writes an OCI image layout as a tar stream to w: one image,
// named ref, with one gzip layer per element of layers, for cfg.Platform
// (linux on the host's architecture unless set). It returns the manifest digest ("sha256:..."), which
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
			Architecture: cfg.platform().Arch,
			Variant:      cfg.platform().Variant,
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

// DigestTag in a reference is replaced by the first 12 hex digits of the
// image's manifest digest, as in "kiln.local/app/fn:{digest}": the same
// content always gets the same name, and new content a new one, so a
// deploy can tell whether the image changed from its name alone.
const DigestTag = "{digest}"

const digestTagLen = 12

// ResolveRef is ref with DigestTag replaced for the manifest digest dgst.
func ResolveRef(ref, dgst string) string {
	if !strings.Contains(ref, DigestTag) {
		return ref
	}
	hex := strings.TrimPrefix(dgst, "sha256:")
	if len(hex) > digestTagLen {
		hex = hex[:digestTagLen]
	}
	return strings.ReplaceAll(ref, DigestTag, hex)
}

// displayRef is ref for progress lines, before its digest is known.
func displayRef(ref string) string {
	return strings.ReplaceAll(ref, DigestTag, "<digest>")
}

// refTag checks ref and returns the tag the OCI ref name annotation carries:
// the part after the last ":" of the final path element, or "latest".
// References by digest are refused: a digest names content, and the content
// is not known until the archive is written.
func refTag(ref string) (string, error) {
	// The placeholder stands for hex digits, which any tag may hold.
	ref = strings.ReplaceAll(ref, DigestTag, strings.Repeat("0", digestTagLen))
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
