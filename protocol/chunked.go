package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// chunkedBody reads a chunked body from a container's stdout as it
// arrives: each Read returns bytes of the current chunk only, so a reader
// that forwards every Read (and flushes) passes chunks on as the function
// wrote them. The terminating chunk and the trailer section are consumed
// before io.EOF, so the stream is left at the next frame. Nothing is read
// past the frame: the reader is the frame's, not the stream's.
type chunkedBody struct {
	r *bufio.Reader
	// left is what remains of the current chunk; -1 before the first.
	left int64
	// total counts body bytes against max (0: no limit).
	total, max int64
	response   bool
	err        error
}

func newChunkedBody(r *bufio.Reader, max int64, response bool) *chunkedBody {
	return &chunkedBody{r: r, left: -1, max: max, response: response}
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.left <= 0 {
		if c.left == 0 {
			// The CRLF that ends the chunk just read.
			if err := c.chunkEnd(); err != nil {
				c.err = err
				return 0, err
			}
		}
		size, err := c.chunkSize()
		if err != nil {
			c.err = err
			return 0, err
		}
		if size == 0 {
			if err := c.trailer(); err != nil {
				c.err = err
				return 0, err
			}
			c.err = io.EOF
			return 0, io.EOF
		}
		if c.max > 0 && c.total+size > c.max {
			c.err = tooLarge(c.response, "chunked http body", c.total+size, c.max)
			return 0, c.err
		}
		c.left = size
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	c.total += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.err = readError("http chunk", err)
		return n, c.err
	}
	return n, nil
}

func (c *chunkedBody) chunkSize() (int64, error) {
	line, err := readLine(c.r, maxChunkLine)
	if err != nil {
		return 0, readError("http chunk size", err)
	}
	hex, _, _ := bytes.Cut(line, []byte(";"))
	hex = bytes.TrimRight(hex, " \t")
	if len(hex) == 0 || len(hex) > 15 {
		return 0, protoErrorf("invalid chunk size %q", clip(string(line)))
	}
	size, err := strconv.ParseInt(string(hex), 16, 64)
	if err != nil || size < 0 || hex[0] == '+' || hex[0] == '-' {
		return 0, protoErrorf("invalid chunk size %q", clip(string(line)))
	}
	return size, nil
}

func (c *chunkedBody) chunkEnd() error {
	crlf, err := readLine(c.r, 2)
	if err != nil || len(crlf) != 0 {
		if err == nil || errors.Is(err, errLineTooLong) {
			return protoErrorf("http chunk not followed by CRLF")
		}
		return readError("http chunk", err)
	}
	return nil
}

// trailer reads the trailer section; the fields are dropped, since
// nothing downstream could use them.
func (c *chunkedBody) trailer() error {
	budget := maxHeaderBytes
	for {
		line, err := readLine(c.r, budget)
		if err != nil {
			return readError("http trailer", err)
		}
		if len(line) == 0 {
			return nil
		}
		budget -= len(line) + 1
	}
}

// writeChunked copies body to w in chunked encoding, one chunk per Read
// of body, so bytes reach the function as they reach kilnd, then writes
// the terminating chunk.
func writeChunked(w io.Writer, body io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		// Room for the size line before and the CRLF after the data, so
		// one chunk is one Write.
		n, rerr := body.Read(buf[18 : len(buf)-2])
		if n > 0 {
			head := strconv.AppendInt(buf[:0:18], int64(n), 16)
			head = append(head, '\r', '\n')
			start := 18 - len(head)
			copy(buf[start:], head)
			end := 18 + n
			buf[end], buf[end+1] = '\r', '\n'
			if _, err := w.Write(buf[start : end+2]); err != nil {
				return total, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			_, err := io.WriteString(w, "0\r\n\r\n")
			return total, err
		}
		if rerr != nil {
			return total, &BodyError{Err: rerr}
		}
	}
}

// BodyError is a failure to read the request body from its source (the
// client), as opposed to writing it to the function: the caller answers
// for it (a client that sent too much, or went away), not the function.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "read request body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }
