package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
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

// jwtClaims is tokenClaims as golang-jwt reads and writes them.
type jwtClaims struct {
	AppID string `json:"app_id"`
	FnID  string `json:"fn_id,omitempty"`
	jwt.RegisteredClaims
}

// signToken makes an HS256 JWT of c.
func signToken(key []byte, c tokenClaims) (string, error) {
	claims := jwtClaims{AppID: c.AppID, FnID: c.FnID, RegisteredClaims: jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(time.Unix(c.Expires, 0)),
	}}
	if c.IssuedAt != 0 {
		claims.IssuedAt = jwt.NewNumericDate(time.Unix(c.IssuedAt, 0))
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
}

// verifyToken checks an HS256 JWT signed with key and returns its claims.
// Only HS256 is accepted, whatever the header says (the classic forged
// "alg": "none" token); exp is required; base64 must be canonical, so a
// token has one spelling. The errors say which check failed, in words an
// API client can act on.
func verifyToken(key []byte, tok string, now time.Time) (*tokenClaims, error) {
	if len(tok) > maxTokenLen {
		return nil, fmt.Errorf("malformed token: longer than %d bytes", maxTokenLen)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var c jwtClaims
	t, err := p.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515: extensions marked critical must be understood;
			// kiln knows none.
			return nil, errCritical
		}
		return key, nil
	})
	if err != nil {
		return nil, tokenError(t, &c, err)
	}
	if c.AppID == "" {
		return nil, errors.New("malformed token: no app_id claim")
	}
	return &tokenClaims{AppID: c.AppID, FnID: c.FnID, Expires: c.ExpiresAt.Unix()}, nil
}

var errCritical = errors.New("malformed token: unsupported critical header")

func tokenError(t *jwt.Token, c *jwtClaims, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("malformed token: %v", err)
	case t != nil && t.Header["alg"] != jwt.SigningMethodHS256.Alg():
		alg, _ := t.Header["alg"].(string)
		return fmt.Errorf("token alg %q is not accepted: kiln signs and accepts HS256 only", alg)
	case errors.Is(err, errCritical):
		return errCritical
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return errors.New("token signature is invalid (tampered with, or signed with another key)")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return errors.New("malformed token: no exp claim")
	case errors.Is(err, jwt.ErrTokenExpired) && c.ExpiresAt != nil:
		return fmt.Errorf("token expired at %s", c.ExpiresAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet) && c.NotBefore != nil:
		return fmt.Errorf("token is not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("malformed token: %v", err)
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
