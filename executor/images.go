package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
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
	var unpackErrs []error
	for _, im := range imgs {
		names = append(names, im.Name)
		if err := r.ensureUnpacked(ctx, containerd.NewImage(r.client, im)); err != nil {
			unpackErrs = append(unpackErrs, err)
		}
	}
	if err := errors.Join(unpackErrs...); err != nil {
		// The images are stored and a first call unpacks them again; the
		// caller must still learn which names the archive replaced.
		return names, fmt.Errorf("stored %v, but unpacking failed: %w", names, err)
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
		out = append(out, r.imageInfo(ctx, im))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// imageInfo describes im; a size that cannot be computed (content not
// all present) is -1 rather than an error, so one broken image does not
// hide the others from a listing.
func (r *Runtime) imageInfo(ctx context.Context, im images.Image) ImageInfo {
	size, err := im.Size(ctx, r.client.ContentStore(), platforms.Default())
	if err != nil {
		size = -1
	}
	return ImageInfo{Name: im.Name, Digest: im.Target.Digest.String(), Size: size}
}

// LookupImage describes the local image ref names, as written or in its
// normalized form. It never pulls; a missing image is ErrNotFound.
func (r *Runtime) LookupImage(ctx context.Context, ref string) (ImageInfo, error) {
	ctx = r.ctx(ctx)
	img, err := r.lookupImage(ctx, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	return r.imageInfo(ctx, img.Metadata()), nil
}

// DeleteImage removes the local image ref names and waits for containerd
// to collect its content, so the space is free when it returns. Running
// containers keep their snapshots; only new ones would need a pull.
func (r *Runtime) DeleteImage(ctx context.Context, ref string) (ImageInfo, error) {
	ctx = r.ctx(ctx)
	img, err := r.lookupImage(ctx, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	info := r.imageInfo(ctx, img.Metadata())
	if err := r.client.ImageService().Delete(ctx, img.Name(), images.SynchronousDelete()); err != nil {
		return ImageInfo{}, wrapContainerd(fmt.Sprintf("delete image %q", img.Name()), err)
	}
	r.forgetDigests()
	return info, nil
}
