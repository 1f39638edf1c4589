package protocol

import (
	"net/http"
	"net/textproto"
)

// parseJSONHTTPHeadFast decodes the common shape of a json-http response
// head, {"status_code":N,"headers":{"K":["v",...]},"content_length":N},
// without encoding/json, which scans such a line three times over (the
// object, the header map, each value). It accepts only a plain subset:
// canonical header names, printable ASCII strings with simple escapes,
// integers without exponents, no repeated keys. Anything else answers
// ok=false and the caller takes the full decoder, so the two never
// disagree on what they both accept (FuzzJSONHTTPHeadFast checks this).
func parseJSONHTTPHeadFast(line []byte) (head jsonHTTPResponseHead, ok bool) {
	p := fastScanner{b: line}
	if !p.byte('{') {
		return head, false
	}
	seen := 0
	if p.peek() == '}' {
		p.i++
		return head, p.end()
	}
	for {
		key, ok := p.str()
		if !ok || !p.byte(':') {
			return head, false
		}
		var bit int
		switch string(key) {
		case "status_code":
			bit = 1
			n, ok := p.int()
			if !ok || n < -1<<31 || n > 1<<31-1 {
				return head, false
			}
			head.StatusCode = int(n)
		case "content_length":
			bit = 2
			if head.ContentLength, ok = p.int(); !ok {
				return head, false
			}
		case "headers":
			bit = 4
			if head.Headers, ok = p.headers(); !ok {
				return head, false
			}
		default:
			return head, false
		}
		if seen&bit != 0 {
			return head, false
		}
		seen |= bit
		switch p.next() {
		case ',':
			continue
		case '}':
			return head, p.end()
		default:
			return head, false
		}
	}
}

type fastScanner struct {
	b []byte
	i int
}

func (p *fastScanner) skipSpace() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *fastScanner) peek() byte {
	p.skipSpace()
	if p.i >= len(p.b) {
		return 0
	}
	return p.b[p.i]
}

func (p *fastScanner) next() byte {
	c := p.peek()
	if c != 0 {
		p.i++
	}
	return c
}

func (p *fastScanner) byte(c byte) bool { return p.next() == c }

func (p *fastScanner) end() bool {
	p.skipSpace()
	return p.i == len(p.b)
}

// str reads a string of printable ASCII. The escapes \" \\ and \/ are
// taken (a header value holding JSON is common); any other escape, a
// control byte or a non-ASCII byte sends the line to the full decoder.
// The result may alias the line.
func (p *fastScanner) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	var out []byte // set once an escape forces a copy
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			if out != nil {
				s = append(out, s...)
			}
			p.i++
			return s, true
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return nil, false
			}
			e := p.b[p.i+1]
			if e != '"' && e != '\\' && e != '/' {
				return nil, false
			}
			out = append(append(out, p.b[start:p.i]...), e)
			p.i += 2
			start = p.i
			continue
		case c < 0x20 || c > 0x7e:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// int reads a JSON integer (no fraction, no exponent) of at most 18 digits.
func (p *fastScanner) int() (int64, bool) {
	p.skipSpace()
	neg := false
	if p.i < len(p.b) && p.b[p.i] == '-' {
		neg = true
		p.i++
	}
	start := p.i
	var n int64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		n = n*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	digits := p.i - start
	if digits == 0 || digits > 18 || (digits > 1 && p.b[start] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	if neg {
		n = -n
	}
	return n, true
}

// headers reads {"K": ["v", ...], ...} with canonical, distinct names.
func (p *fastScanner) headers() (jsonHeader, bool) {
	if !p.byte('{') {
		return nil, false
	}
	if p.peek() == '}' {
		p.i++
		return nil, true
	}
	h := make(http.Header, 4)
	for {
		k, ok := p.str()
		if !ok || !p.byte(':') || !p.byte('[') {
			return nil, false
		}
		key := string(k)
		if _, dup := h[key]; dup || key == "" || textproto.CanonicalMIMEHeaderKey(key) != key {
			return nil, false
		}
		var vs []string
		if p.peek() == ']' {
			p.i++
		} else {
			for {
				v, ok := p.str()
				if !ok {
					return nil, false
				}
				vs = append(vs, string(v))
				c := p.next()
				if c == ']' {
					break
				}
				if c != ',' {
					return nil, false
				}
			}
		}
		if len(vs) == 0 || checkHeader(key, vs) != nil {
			// The full decoder decides what empty or odd values mean.
			return nil, false
		}
		h[key] = vs
		switch p.next() {
		case ',':
			continue
		case '}':
			return jsonHeader(h), true
		default:
			return nil, false
		}
	}
}
