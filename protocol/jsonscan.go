package protocol

import (
	"bufio"
	"bytes"
	"io"
	"math"
)

// The json and cloudevent formats send one JSON object per frame, not
// necessarily on one line. A json.Decoder would read ahead into its own
// buffer and lose the bytes of the next frame (or hide excess output the
// executor must notice), so the object's extent is found here by scanning
// the bytes the shared bufio.Reader already holds, and only then decoded.

// jsonFrameLimit bounds the text of a JSON frame whose body travels as a
// JSON string: escaping can make a byte up to six ("\u001f"), and any body
// within MaxBody must fit, plus room for the headers.
func jsonFrameLimit(maxBody int64) int64 {
	if maxBody > (math.MaxInt64-maxHeaderBytes)/6 {
		return math.MaxInt64
	}
	return 6*maxBody + maxHeaderBytes
}

// jsonScanner tracks just enough JSON syntax to see where the top-level
// value closes; whether the text is valid is left to encoding/json.
type jsonScanner struct {
	depth    int
	inString bool
	escape   bool
}

// scan consumes b and returns the offset just past the end of the
// top-level value when it closes within b.
func (s *jsonScanner) scan(b []byte) (int, bool) {
	for i := 0; i < len(b); {
		if s.inString {
			if s.escape {
				s.escape = false
				i++
				continue
			}
			j := bytes.IndexAny(b[i:], `"\`)
			if j < 0 {
				return len(b), false
			}
			i += j
			if b[i] == '\\' {
				s.escape = true
			} else {
				s.inString = false
			}
			i++
			continue
		}
		j := bytes.IndexAny(b[i:], `"{}[]`)
		if j < 0 {
			return len(b), false
		}
		i += j
		switch b[i] {
		case '"':
			s.inString = true
		case '{', '[':
			s.depth++
		case '}', ']':
			s.depth--
			if s.depth <= 0 {
				return i + 1, true
			}
		}
		i++
	}
	return len(b), false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// readObject reads one JSON object of at most limit bytes (leading blank
// space included) and hands its text to decode, possibly aliasing r's
// buffer. Blank space already buffered after the object is consumed so a
// function ending its frame with a newline leaves nothing behind; blank
// space still to come is skipped by the next read instead, since waiting
// for it could block forever.
func readObject(r *bufio.Reader, limit int64, response bool, what string, decode func([]byte) error) error {
	var n int64
	for {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				if err == io.EOF {
					return io.EOF
				}
				return readError(what, err)
			}
		}
		buf, _ := r.Peek(r.Buffered())
		i := 0
		for i < len(buf) && isSpace(buf[i]) {
			i++
		}
		if n += int64(i); n > limit {
			return tooLarge(response, what, n, limit)
		}
		r.Discard(i)
		if i < len(buf) {
			if buf[i] != '{' {
				return protoErrorf("%s: want a JSON object, got %q", what, buf[i])
			}
			break
		}
	}
	var (
		sc  jsonScanner
		acc []byte
	)
	for {
		buf, _ := r.Peek(r.Buffered())
		end, done := sc.scan(buf)
		if n += int64(end); n > limit {
			return tooLarge(response, what, n, limit)
		}
		if !done {
			acc = append(acc, buf...)
			r.Discard(len(buf))
			if _, err := r.Peek(1); err != nil {
				return readError(what, err)
			}
			continue
		}
		val := buf[:end]
		if acc != nil {
			acc = append(acc, val...)
			val = acc
		}
		err := decode(val)
		r.Discard(end)
		skipBufferedSpace(r)
		if err != nil {
			return protoErrorf("%s: %v", what, err)
		}
		return nil
	}
}

func skipBufferedSpace(r *bufio.Reader) {
	buf, _ := r.Peek(r.Buffered())
	i := 0
	for i < len(buf) && isSpace(buf[i]) {
		i++
	}
	r.Discard(i)
}

// appendCompact appends valid JSON src without insignificant white space,
// which also puts it on one line.
func appendCompact(dst, src []byte) []byte {
	inString, escape := false, false
	for _, c := range src {
		switch {
		case escape:
			escape = false
		case inString:
			switch c {
			case '\\':
				escape = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case isSpace(c):
			continue
		}
		dst = append(dst, c)
	}
	return dst
}
