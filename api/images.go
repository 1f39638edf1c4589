package api

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/kiln-run/kiln/errdefs"
)

// Image is one image fns can run from.
type Image struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Images manages the images fns run from.
type Images interface {
	// Import stores the images of an OCI layout or docker-save archive.
	Import(ctx context.Context, archive io.Reader) ([]string, error)
	List(ctx context.Context) ([]Image, error)
}

// maxImageArchive bounds an upload; function images are small, and an
// unbounded body would let one request fill the disk.
const maxImageArchive = 4 << 30

func (s *Server) registerImages(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/images/import", s.importImage)
	mux.HandleFunc("GET /v2/images", s.listImages)
}

func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Images == nil {
		writeError(w, fmt.Errorf("images are not served by this kilnd: %w", errdefs.ErrUnavailable))
		return
	}
	names, err := s.cfg.Images.Import(r.Context(), http.MaxBytesReader(w, r.Body, maxImageArchive))
	if err != nil {
		writeError(w, fmt.Errorf("import: %v: %w", err, ErrInvalid))
		return
	}
	s.log.WithField("images", names).Info("imported images")
	writeJSON(w, http.StatusOK, map[string]any{"images": names})
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Images == nil {
		writeError(w, fmt.Errorf("images are not served by this kilnd: %w", errdefs.ErrUnavailable))
		return
	}
	list, err := s.cfg.Images.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": list, "next_cursor": ""})
}
