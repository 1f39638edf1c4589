package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kiln-run/kiln/errdefs"
	"github.com/kiln-run/kiln/seal"
	"github.com/kiln-run/kiln/store"
)

// PrivateAnnotation on an app or a fn makes its calls need a token from
// POST /v2/tokens. Its value is true or "true"; false, "false" or no
// annotation leave the fn public.
const PrivateAnnotation = "kiln.io/private"

const (
	tokenKeySize    = 32
	defaultTokenTTL = time.Hour
	maxTokenTTL     = 30 * 24 * time.Hour
	// maxTokenLen bounds the work an unauthenticated client can ask of
	// the verifier; kiln's own tokens are a few hundred bytes.
	maxTokenLen = 4096
	// tokenHeader is the only JOSE header kiln issues. Verification
	// still parses the header it gets, so a token is refused for its
	// alg rather than for a byte difference.
	tokenHeader = `{"alg":"HS256","typ":"JWT"}`
)

// b64 is strict so that a token has exactly one encoding: otherwise the
// unused low bits of the last character would let one signature be
// written several ways.
var b64 = base64.RawURLEncoding.Strict()

// tokenClaims is what kiln signs: who may call (app, optionally one fn)
// and until when.
type tokenClaims struct {
	AppID    string `json:"app_id"`
	FnID     string `json:"fn_id,omitempty"`
	Expires  int64  `json:"exp"`
	IssuedAt int64  `json:"iat,omitempty"`
}

// isPrivate reads PrivateAnnotation. A value that is neither true nor
// false (a typo, "yes", 1) counts as private: a mistake must lock a fn,
// never open it.
func isPrivate(ann map[string]any) bool {
	v, ok := ann[PrivateAnnotation]
	if !ok {
		return false
	}
	switch v := v.(type) {
	case bool:
		return v
	case string:
		return !strings.EqualFold(strings.TrimSpace(v), "false")
	case nil:
		return false
	}
	return true
}

// authorize checks a call's right to invoke fn: public fns need nothing,
// private ones (by fn or app annotation) a valid token for the app and,
// if the token names one, the fn. The admin token opens every fn: its
// holder could mint a token anyway.
func (s *Server) authorize(r *http.Request, app *store.App, fn *store.Fn) error {
	// kiln's CLI sends the admin token on every request, invoke included.
	// Whatever the fn, it must not reach function code, nor the stored
	// request of a detached call.
	admin := s.isAdmin(r.Header)
	if admin {
		r.Header.Del("Authorization")
	}
	private := isPrivate(app.Annotations) || isPrivate(fn.Annotations)
	if !private || admin {
		return nil
	}
	if len(s.cfg.TokenKey) == 0 {
		return errdefs.Errorf(errdefs.ErrUnavailable, "fn %q is private, but private functions need a token key and kilnd has none", fn.Name)
	}
	raw, err := bearerToken(r.Header)
	if err != nil {
		return errdefs.Errorf(errdefs.ErrUnauthorized, "fn %q is private: %v", fn.Name, err)
	}
	claims, err := verifyToken(s.cfg.TokenKey, raw, time.Now())
	if err != nil {
		return errdefs.Errorf(errdefs.ErrUnauthorized, "fn %q is private: %v", fn.Name, err)
	}
	if claims.AppID != app.ID {
		return errdefs.Errorf(errdefs.ErrForbidden, "token is not valid for app %q", app.Name)
	}
	if claims.FnID != "" && claims.FnID != fn.ID {
		return errdefs.Errorf(errdefs.ErrForbidden, "token is for another fn, not %q", fn.Name)
	}
	// The token was for kiln. Passed on, a hostile function could keep
	// one caller's token for the next caller of its container (an app
	// token opens the sibling fns too), and detached calls would store
	// it at rest.
	r.Header.Del("Authorization")
	return nil
}

// isAdmin reports whether any Authorization header is the admin token.
// Both sides are hashed first so the comparison takes the same time
// whatever the lengths.
func (s *Server) isAdmin(h http.Header) bool {
	if s.cfg.AdminToken == "" {
		return false
	}
	want := s.adminHash
	found := 0
	for _, v := range h.Values("Authorization") {
		got := sha256.Sum256([]byte(v))
		found |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return found == 1
}

// bearerToken extracts the token of an "Authorization: Bearer" header.
func bearerToken(h http.Header) (string, error) {
	vals := h.Values("Authorization")
	switch {
	case len(vals) == 0 || strings.TrimSpace(vals[0]) == "":
		return "", errors.New("send Authorization: Bearer <token> (tokens come from POST /v2/tokens)")
	case len(vals) > 1:
		// Which one a proxy or the function would read is anyone's guess.
		return "", errors.New("more than one Authorization header")
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", errors.New("Authorization must use the Bearer scheme")
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return "", errors.New("empty bearer token")
	}
	return tok, nil
}

// signToken makes an HS256 JWT of c.
func signToken(key []byte, c tokenClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString([]byte(tokenHeader)) + "." + b64.EncodeToString(payload)
	return signed + "." + b64.EncodeToString(tokenMAC(key, signed)), nil
}

func tokenMAC(key []byte, signed string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// verifyToken checks an HS256 JWT signed with key and returns its claims.
// The header is checked before the signature so that a token with a
// foreign alg says so; the payload is read only once the signature holds,
// so nothing an attacker wrote is parsed beyond the header.
func verifyToken(key []byte, tok string, now time.Time) (*tokenClaims, error) {
	if len(tok) > maxTokenLen {
		return nil, fmt.Errorf("malformed token: longer than %d bytes", maxTokenLen)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("malformed token: want a JWT of three dot-separated parts")
	}
	rawHeader, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, errors.New("malformed token: header is not base64url")
	}
	var header struct {
		Alg  string   `json:"alg"`
		Crit []string `json:"crit"`
	}
	if err := json.Unmarshal(rawHeader, &header); err != nil {
		return nil, errors.New("malformed token: header is not a JSON object")
	}
	if header.Alg != "HS256" {
		return nil, fmt.Errorf("token alg %q is not accepted: kiln signs and accepts HS256 only", header.Alg)
	}
	if header.Crit != nil {
		// RFC 7515: extensions marked critical must be understood; kiln
		// knows none.
		return nil, errors.New("malformed token: unsupported critical header")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("malformed token: signature is not base64url")
	}
	if !hmac.Equal(sig, tokenMAC(key, parts[0]+"."+parts[1])) {
		return nil, errors.New("token signature is invalid (tampered with, or signed with another key)")
	}
	rawClaims, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("malformed token: payload is not base64url")
	}
	// exp and nbf are NumericDates, which may carry fractions.
	var c struct {
		AppID     string   `json:"app_id"`
		FnID      string   `json:"fn_id"`
		Expires   *float64 `json:"exp"`
		NotBefore *float64 `json:"nbf"`
	}
	if err := json.Unmarshal(rawClaims, &c); err != nil {
		return nil, fmt.Errorf("malformed token: claims: %v", err)
	}
	if c.AppID == "" {
		return nil, errors.New("malformed token: no app_id claim")
	}
	if c.Expires == nil {
		return nil, errors.New("malformed token: no exp claim")
	}
	unix := float64(now.Unix())
	if unix >= *c.Expires {
		return nil, fmt.Errorf("token expired at %s", numericDate(*c.Expires))
	}
	if c.NotBefore != nil && unix < *c.NotBefore {
		return nil, fmt.Errorf("token is not valid before %s", numericDate(*c.NotBefore))
	}
	return &tokenClaims{AppID: c.AppID, FnID: c.FnID, Expires: int64(*c.Expires)}, nil
}

func numericDate(f float64) string {
	// Clamp so an absurd claim still prints as a date.
	const maxUnix = 253402300799 // 9999-12-31T23:59:59Z
	switch {
	case f > maxUnix:
		f = maxUnix
	case f < 0:
		f = 0
	}
	return time.Unix(int64(f), 0).UTC().Format(time.RFC3339)
}

func (s *Server) registerTokens(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/tokens", s.createToken)
}

type tokenRequest struct {
	AppID string `json:"app_id"`
	FnID  string `json:"fn_id"`
	// TTL is in seconds.
	TTL *int64 `json:"ttl"`
}

type tokenAnswer struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

// createToken issues a token for an app or one of its fns. It sits under
// /v2, behind the admin token: whoever may mint tokens may call every
// private fn.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if len(s.cfg.TokenKey) == 0 {
		writeError(w, errdefs.Errorf(errdefs.ErrUnavailable, "private functions need a token key and kilnd has none"))
		return
	}
	var body tokenRequest
	if err := decodeBody(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body.AppID == "" {
		writeError(w, invalid("token", "app_id", "required"))
		return
	}
	ttl := defaultTokenTTL
	if body.TTL != nil {
		if *body.TTL <= 0 || *body.TTL > int64(maxTokenTTL/time.Second) {
			writeError(w, invalid("token", "ttl", "must be between 1 and %d seconds (30 days)", int64(maxTokenTTL/time.Second)))
			return
		}
		ttl = time.Duration(*body.TTL) * time.Second
	}
	app, err := s.store.GetApp(ctx, body.AppID)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("app %q %w", body.AppID, errdefs.ErrNotFound)
		}
		writeError(w, err)
		return
	}
	if body.FnID != "" {
		fn, err := s.store.GetFn(ctx, body.FnID)
		if err != nil {
			writeError(w, err)
			return
		}
		if fn.AppID != app.ID {
			writeError(w, invalid("token", "fn_id", "fn %q is not in app %q", body.FnID, app.Name))
			return
		}
	}
	now := time.Now()
	exp := now.Add(ttl).Unix()
	tok, err := signToken(s.cfg.TokenKey, tokenClaims{AppID: app.ID, FnID: body.FnID, Expires: exp, IssuedAt: now.Unix()})
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.WithFields(logrus.Fields{"app": app.Name, "fn_id": body.FnID, "expires": exp}).Info("token issued")
	writeJSON(w, http.StatusOK, tokenAnswer{Token: tok, ExpiresAt: time.Unix(exp, 0).UTC().Format(time.RFC3339)})
}

// LoadOrCreateTokenKey returns the token signing key kept at path,
// creating a random one the first time (see seal.LoadOrCreateKey): anyone
// holding it can call every private fn.
func LoadOrCreateTokenKey(path string) ([]byte, error) {
	return seal.LoadOrCreateKey(path, "token key")
}
