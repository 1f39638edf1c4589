package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strings"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// Image is one image fns can run from.
type Image struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// PullProgress is one update of a pull, as streamed to clients that ask
// for application/x-ndjson. Bytes and Total count layer bytes.
type PullProgress struct {
	Status      string `json:"status"`
	LayersDone  int    `json:"layers_done"`
	LayersTotal int    `json:"layers_total"`
	Bytes       int64  `json:"bytes"`
	Total       int64  `json:"total"`
}

// Images manages the images fns run from.
type Images interface {
	// Import stores the images of an OCI layout or docker-save archive.
	Import(ctx context.Context, archive io.Reader) ([]string, error)
	List(ctx context.Context) ([]Image, error)
	// Pull fetches ref from its registry and returns the stored image.
	// progress, when not nil, is called on the caller's goroutine.
	Pull(ctx context.Context, ref string, progress func(PullProgress)) (Image, error)
	// Get describes the local image ref names without pulling it; a
	// missing image is errdefs.ErrNotFound.
	Get(ctx context.Context, ref string) (Image, error)
	// Delete removes the local image ref names and returns what it was.
	Delete(ctx context.Context, ref string) (Image, error)
}

// maxImageArchive bounds an upload; function images are small, and an
// unbounded body would let one request fill the disk.
const maxImageArchive = 4 << 30

// ndjson is the media type of a streamed pull.
const ndjson = "application/x-ndjson"

func (s *Server) registerImages(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/images/import", s.importImage)
	mux.HandleFunc("POST /v2/images/pull", s.pullImage)
	mux.HandleFunc("GET /v2/images", s.listImages)
	mux.HandleFunc("DELETE /v2/images/{ref...}", s.deleteImage)
}

func (s *Server) images(w http.ResponseWriter) bool {
	if s.cfg.Images == nil {
		writeError(w, fmt.Errorf("images are not served by this kilnd: %w", errdefs.ErrUnavailable))
		return false
	}
	return true
}

func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	if !s.images(w) {
		return
	}
	names, err := s.cfg.Images.Import(r.Context(), http.MaxBytesReader(w, r.Body, maxImageArchive))
	if err != nil {
		writeError(w, fmt.Errorf("import: %v: %w", err, errdefs.ErrInvalid))
		return
	}
	s.log.WithField("images", names).Info("imported images")
	writeJSON(w, http.StatusOK, map[string]any{"images": names})
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	if !s.images(w) {
		return
	}
	list, err := s.cfg.Images.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": list, "next_cursor": ""})
}

// pullImage answers {"image", "digest"} once the image is stored. A client
// that accepts application/x-ndjson gets a progress line per update first.
// The status line is held back until the registry has answered with a
// manifest, so an unknown image or an unreachable registry still gets its
// own status code rather than a 200 with an error at the end.
func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	if !s.images(w) {
		return
	}
	var req struct {
		Ref string `json:"ref"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	req.Ref = strings.TrimSpace(req.Ref)
	if req.Ref == "" {
		writeError(w, fmt.Errorf("%w request: ref is required", errdefs.ErrInvalid))
		return
	}

	stream := acceptsNDJSON(r)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	started := false
	start := func() {
		if !started {
			w.Header().Set("Content-Type", ndjson)
			w.WriteHeader(http.StatusOK)
			started = true
		}
	}
	var progress func(PullProgress)
	if stream {
		progress = func(p PullProgress) {
			if !started && (p.Status == "" || p.Status == "resolving") {
				return
			}
			start()
			if enc.Encode(p) == nil && flusher != nil {
				flusher.Flush()
			}
		}
	}

	log := s.log.WithField("ref", req.Ref)
	img, err := s.cfg.Images.Pull(r.Context(), req.Ref, progress)
	if err != nil {
		err = pullFailure(req.Ref, err)
		log.WithError(err).Warn("pull failed")
		if started {
			status := statusOf(err)
			_ = enc.Encode(map[string]any{"message": err.Error(), "code": status})
			return
		}
		writeError(w, err)
		return
	}
	log.WithField("digest", img.Digest).Info("pulled image")
	result := map[string]string{"image": img.Name, "digest": img.Digest}
	if !stream {
		writeJSON(w, http.StatusOK, result)
		return
	}
	start()
	_ = enc.Encode(result)
}

// pullFailure gives a registry's own failures (refused connections, 5xx,
// bad credentials) 502: kilnd is a gateway to the registry there. kiln's
// sentinels keep their statuses: a missing image is 404, a malformed ref
// 400, containerd down 503.
func pullFailure(ref string, err error) error {
	if statusOf(err) != http.StatusInternalServerError {
		return err
	}
	return errdefs.Errorf(errdefs.ErrUpstream, "pulling %q: %v", ref, err)
}

func acceptsNDJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err == nil && mt == ndjson {
			return true
		}
	}
	return false
}

// deleteImage removes an image no fn uses. Fns are matched by the image
// their reference finds, so "team/fn" and its normalized name count as
// the same image.
func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	if !s.images(w) {
		return
	}
	ctx := r.Context()
	ref := r.PathValue("ref")
	if ref == "" {
		writeError(w, fmt.Errorf("%w request: image reference is required", errdefs.ErrInvalid))
		return
	}
	img, err := s.cfg.Images.Get(ctx, ref)
	if err != nil {
		writeError(w, err)
		return
	}
	users, err := s.fnsUsingImage(ctx, ref, img.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(users) > 0 {
		more := ""
		if len(users) > 5 {
			more = fmt.Sprintf(" and %d more", len(users)-5)
			users = users[:5]
		}
		writeError(w, errdefs.Errorf(errdefs.ErrConflict, "image %q is in use by fn %s%s; delete them or change their image first",
			img.Name, strings.Join(users, ", "), more))
		return
	}
	if _, err := s.cfg.Images.Delete(ctx, img.Name); err != nil {
		writeError(w, err)
		return
	}
	s.log.WithFields(map[string]any{"image": img.Name, "digest": img.Digest}).Info("deleted image")
	writeJSON(w, http.StatusOK, map[string]string{"message": fmt.Sprintf("deleted image %s", img.Name)})
}

// fnsUsingImage lists, as quoted "name" (id) strings, the fns whose image
// reference is ref or finds the image stored as name. Each distinct
// reference is looked up once.
func (s *Server) fnsUsingImage(ctx context.Context, ref, name string) ([]string, error) {
	matches := map[string]bool{ref: true, name: true}
	var users []string
	opts := store.ListOptions{PerPage: store.MaxPerPage}
	for {
		fns, next, err := s.store.ListFns(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, fn := range fns {
			same, known := matches[fn.Image]
			if !known {
				other, err := s.cfg.Images.Get(ctx, fn.Image)
				switch {
				case err == nil:
					same = other.Name == name
				case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrInvalid):
					same = false
				default:
					return nil, err
				}
				matches[fn.Image] = same
			}
			if same {
				users = append(users, fmt.Sprintf("%q (%s)", fn.Name, fn.ID))
			}
		}
		if next == "" {
			break
		}
		opts.Cursor = next
	}
	sort.Strings(users)
	return users, nil
}
