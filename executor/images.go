package executor

import (
	"context"
	"io"
	"sort"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/platforms"
)

// ImageInfo describes one image in kiln's namespace.
type ImageInfo struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Import reads an OCI layout or docker-save archive, stores its images in
// kiln's namespace and unpacks them, so the first call does not pay for it.
func (r *Runtime) Import(ctx context.Context, archive io.Reader) ([]string, error) {
	ctx = r.ctx(ctx)
	imgs, err := r.client.Import(ctx, archive, containerd.WithAllPlatforms(false))
	if err != nil {
		return nil, wrapContainerd("import image archive", err)
	}
	r.forgetDigests()
	names := make([]string, 0, len(imgs))
	for _, im := range imgs {
		img := containerd.NewImage(r.client, im)
		if err := r.ensureUnpacked(ctx, img); err != nil {
			return nil, err
		}
		names = append(names, im.Name)
	}
	return names, nil
}

// Images lists the images in kiln's namespace.
func (r *Runtime) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx = r.ctx(ctx)
	list, err := r.client.ImageService().List(ctx)
	if err != nil {
		return nil, wrapContainerd("list images", err)
	}
	out := make([]ImageInfo, 0, len(list))
	for _, im := range list {
		size, err := im.Size(ctx, r.client.ContentStore(), platforms.Default())
		if err != nil {
			size = -1
		}
		out = append(out, ImageInfo{Name: im.Name, Digest: im.Target.Digest.String(), Size: size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

