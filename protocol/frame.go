package protocol

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	// maxHeaderBytes bounds an HTTP header section and a json-http header
	// line. Without it a function printing garbage with no newline would
	// make kilnd buffer until it runs out of memory.
	maxHeaderBytes = 1 << 20
	// maxPooledBuffer keeps one huge frame from pinning its buffer in the
	// pool; the body allocation dominates such a call anyway.
	maxPooledBuffer = 2 << 20
	// readStep is the largest allocation made for a body before its bytes
	// arrive, so a length field alone cannot make us allocate MaxBody.
	readStep = 1 << 20
)

// errLineTooLong is internal: callers turn it into a size or protocol error.
var errLineTooLong = errors.New("line too long")

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// writeFrame builds a frame with build into a pooled buffer and sends it in
// one Write: a frame split over several writes can be interleaved or seen
// half-written, and one syscall per call is measurably cheaper on a fifo.
func writeFrame(w io.Writer, build func([]byte) ([]byte, error)) error {
	bp := bufPool.Get().(*[]byte)
	b, err := build((*bp)[:0])
	if err == nil {
		_, err = w.Write(b)
	}
	if cap(b) <= maxPooledBuffer {
		*bp = b[:0]
		bufPool.Put(bp)
	}
	return err
}

// protoErrorf wraps ErrProtocol.
func protoErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// readError classifies an error met in the middle of a frame: the stream
// ending there is a protocol error (the frame is truncated), anything else
// is an I/O failure reported as is.
func readError(what string, err error) error {
	switch {
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s: %w", ErrProtocol, what, io.ErrUnexpectedEOF)
	case errors.Is(err, errLineTooLong):
		return fmt.Errorf("%w: %s: %w", ErrProtocol, what, err)
	case errors.Is(err, ErrProtocol), errors.Is(err, ErrBodyTooLarge):
		return err
	}
	return fmt.Errorf("protocol: reading %s: %w", what, err)
}

// tooLarge reports a body over the limit. For a response it also wraps
// ErrProtocol because the unread rest of the frame leaves the stream out of
// step; a request is refused by the side that reads it, which stops anyway.
func tooLarge(response bool, what string, n, limit int64) error {
	if response {
		return fmt.Errorf("%w: %w: %s of %d bytes, limit %d", ErrProtocol, ErrBodyTooLarge, what, n, limit)
	}
	return fmt.Errorf("%w: %s of %d bytes, limit %d", ErrBodyTooLarge, what, n, limit)
}

// readLine returns the next line without its line ending (LF or CRLF). The
// result may alias r's buffer and is valid only until the next read. max
// counts the line ending too. io.EOF is returned only when no byte was read.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		if len(line) > max {
			return nil, errLineTooLong
		}
		return trimEOL(line), nil
	}
	var full []byte
	for err == bufio.ErrBufferFull {
		if len(full)+len(line) > max {
			return nil, errLineTooLong
		}
		full = append(full, line...)
		line, err = r.ReadSlice('\n')
	}
	if len(full)+len(line) > max {
		return nil, errLineTooLong
	}
	full = append(full, line...)
	if err != nil {
		if err == io.EOF {
			if len(full) == 0 {
				return nil, io.EOF
			}
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return trimEOL(full), nil
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// readN reads exactly n bytes, n already checked against the limit. Small
// bodies get one exact allocation; big ones grow as bytes arrive, so a
// function that announces megabytes and sends nothing costs little.
func readN(r *bufio.Reader, n int64) ([]byte, error) {
	return appendN(r, nil, n)
}

// appendN appends exactly n bytes read from r to dst.
func appendN(r *bufio.Reader, dst []byte, n int64) ([]byte, error) {
	if n == 0 {
		return dst, nil
	}
	want := len(dst) + int(n)
	if cap(dst) < want {
		c := want
		if n > readStep {
			c = len(dst) + readStep
		}
		nb := make([]byte, len(dst), c)
		copy(nb, dst)
		dst = nb
	}
	for len(dst) < want {
		if len(dst) == cap(dst) {
			c := min(2*cap(dst), want)
			nb := make([]byte, len(dst), c)
			copy(nb, dst)
			dst = nb
		}
		m, err := r.Read(dst[len(dst):min(cap(dst), want)])
		dst = dst[:len(dst)+m]
		if err != nil && len(dst) < want {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return dst, err
		}
	}
	return dst, nil
}

// formatDeadline renders a deadline in RFC 3339 in UTC. Fractions of a
// second are kept: a function given a 1.5 s timeout should not see 1 s.
func formatDeadline(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func appendDeadline(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	return t.UTC().AppendFormat(b, time.RFC3339Nano)
}

func parseDeadline(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("deadline %q is not RFC 3339", s)
	}
	// Deadlines are written in UTC, and RFC 3339 has only years 0000-9999.
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return time.Time{}, fmt.Errorf("deadline %q out of range", s)
	}
	return t, nil
}

// normStatus maps the unset status to 200 and refuses codes that cannot be
// a final HTTP status: 1xx are interim answers, and net/http panics on
// codes outside 100-999 when kiln passes them on.
func normStatus(code int) (int, error) {
	switch {
	case code == 0:
		return http.StatusOK, nil
	case code < 200 || code > 999:
		return 0, fmt.Errorf("status %d is not a final HTTP status", code)
	}
	return code, nil
}

// appendJSONBytes appends b as a JSON string. Invalid UTF-8 becomes U+FFFD
// byte by byte, exactly as encoding/json would; the json and cloudevent
// formats are not binary safe (json-http is).
func appendJSONBytes(dst, b []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, b[start:i]...)
			dst = appendEscapedASCII(dst, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			dst = append(dst, b[start:i]...)
			dst = appendEscapedRune(dst, r)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, b[start:]...)
	return append(dst, '"')
}

// appendJSONString is appendJSONBytes for a string, kept separate so that
// header values are not copied into a byte slice first.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = appendEscapedASCII(dst, c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = appendEscapedRune(dst, r)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

func appendEscapedASCII(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}

// appendEscapedRune escapes U+2028 and U+2029 (which break JavaScript
// readers of a line) and turns an invalid byte into U+FFFD.
func appendEscapedRune(dst []byte, r rune) []byte {
	switch r {
	case '\u2028':
		return append(dst, `\u2028`...)
	case '\u2029':
		return append(dst, `\u2029`...)
	}
	return append(dst, `\ufffd`...)
}

func appendInt(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) }
