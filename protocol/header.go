package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// StripHopByHop removes the headers that describe one connection rather
// than the message (RFC 9110 section 7.6.1), including any named in
// Connection. Between kiln and a function there is no connection to
// describe, and passing them on would let a function's "Connection: close"
// or "Transfer-Encoding" confuse the HTTP server in front of it.
func StripHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for k := range h {
		if hopByHop(k) {
			delete(h, k)
		}
	}
}

func hopByHop(k string) bool {
	k = textproto.CanonicalMIMEHeaderKey(k)
	switch k {
	case "Connection", "Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return strings.HasPrefix(k, "Proxy-")
}

// framing reports headers that each side derives from the frame itself:
// the length, and for requests the host (from the URL) and Expect, which
// would make an HTTP server in the function answer "100 Continue" first.
func framing(k string) bool {
	switch textproto.CanonicalMIMEHeaderKey(k) {
	case "Content-Length", "Host", "Expect":
		return true
	}
	return false
}

// cleanHeader drops from a decoded header everything a frame must not
// carry through. It returns nil for an empty header so decoders agree.
func cleanHeader(h http.Header) http.Header {
	StripHopByHop(h)
	for k := range h {
		if framing(k) || len(h[k]) == 0 {
			delete(h, k)
		}
	}
	if len(h) == 0 {
		return nil
	}
	return h
}

// headerKeys lists, sorted for byte-stable frames, the keys of h that an
// encoder writes: not hop-by-hop, not framing, not in skip, with values.
func headerKeys(h http.Header, skip ...string) []string {
	var conn []string
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" {
				conn = append(conn, textproto.CanonicalMIMEHeaderKey(tok))
			}
		}
	}
	keys := make([]string, 0, len(h))
	for k, vs := range h {
		if len(vs) == 0 || hopByHop(k) || framing(k) {
			continue
		}
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if slices.Contains(conn, ck) || slices.Contains(skip, ck) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkHeader validates one field so that no encoder can be made to write
// a frame that splits into two (a CR or LF in a value) or that the other
// side cannot parse.
func checkHeader(k string, vs []string) error {
	if !validToken(k) {
		return fmt.Errorf("invalid header name %q", k)
	}
	for _, v := range vs {
		if !validValue(v) {
			return fmt.Errorf("invalid value for header %q", k)
		}
	}
	return nil
}

// validToken reports whether s is an RFC 9110 token (header names, methods).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validValue refuses control characters other than tab; bytes above 0x7f
// are allowed as obs-text.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// appendJSONHeaders appends h as {"Key":["v1","v2"]} with sorted keys.
func appendJSONHeaders(b []byte, h http.Header) ([]byte, error) {
	b = append(b, '{')
	for i, k := range headerKeys(h) {
		vs := h[k]
		if err := checkHeader(k, vs); err != nil {
			return b, err
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':', '[')
		for j, v := range vs {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// jsonHeader decodes a header object. Values may be lists, as kiln writes
// them, or single strings, as some Fn FDKs wrote them. Keys are put in
// canonical form so Header.Get works; clashing spellings merge in key
// order, keeping the result deterministic.
type jsonHeader http.Header

func (h *jsonHeader) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if len(m) == 0 {
		*h = nil
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(http.Header, len(m))
	for _, k := range keys {
		raw := m[k]
		var vs []string
		switch {
		case bytes.Equal(raw, []byte("null")):
			continue
		case len(raw) > 0 && raw[0] == '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			vs = []string{s}
		default:
			if err := json.Unmarshal(raw, &vs); err != nil {
				return fmt.Errorf("header %q: %v", k, err)
			}
		}
		if err := checkHeader(k, vs); err != nil {
			return err
		}
		ck := textproto.CanonicalMIMEHeaderKey(k)
		out[ck] = append(out[ck], vs...)
	}
	*h = jsonHeader(out)
	return nil
}
