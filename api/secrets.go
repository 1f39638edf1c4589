package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/store"
)

// Secrets are write-only: a value goes in with PUT and never comes back
// out of the API; lists and answers carry names and times only.
func (s *Server) registerSecrets(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v2/apps/{app_id}/secrets/{name}", s.putSecret)
	mux.HandleFunc("GET /v2/apps/{app_id}/secrets", s.listSecrets)
	mux.HandleFunc("DELETE /v2/apps/{app_id}/secrets/{name}", s.deleteSecret)
}

// secretView is a secret as the API shows it: never its value.
type secretView struct {
	Name      string `json:"name"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

func viewSecret(sec *store.Secret) secretView {
	const layout = "2006-01-02T15:04:05.000Z07:00"
	return secretView{Name: sec.Name, CreatedAt: sec.CreatedAt.UTC().Format(layout), UpdatedAt: sec.UpdatedAt.UTC().Format(layout)}
}

func validateSecretName(name string) error {
	if err := validateName("secret", name); err != nil {
		return err
	}
	if name == "." || name == ".." {
		return invalid("secret", "name", "%q is not a file name", name)
	}
	return nil
}

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := validateSecretName(name); err != nil {
		writeError(w, err)
		return
	}
	var body struct {
		Value *string `json:"value"`
	}
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.Value == nil {
		writeError(w, invalid("secret", "value", "required"))
		return
	}
	sec, err := s.calls.PutSecret(r.Context(), r.PathValue("app_id"), name, []byte(*body.Value))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewSecret(sec))
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	secs, err := s.calls.ListSecrets(r.Context(), r.PathValue("app_id"))
	if err != nil {
		writeError(w, err)
		return
	}
	views := make([]secretView, len(secs))
	for i, sec := range secs {
		views[i] = viewSecret(sec)
	}
	writeList(w, views, "")
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) {
	appID, name := r.PathValue("app_id"), r.PathValue("name")
	if err := s.calls.DeleteSecret(r.Context(), appID, name); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("secret %q of app %q %w", name, appID, errdefs.ErrNotFound)
		}
		writeError(w, err)
		return
	}
	deleted(w, "secret", name)
}
