package protocol

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// The http format parses HTTP/1.1 itself rather than with net/http:
// http.ReadRequest and http.ReadResponse read header lines without a bound
// and a body without Content-Length until EOF, and on a stream shared by
// every call of a hot container either one is a way for a function to take
// kilnd's memory or to desynchronise it.

// Headers the http format adds to a request, in canonical form.
const (
	hdrCallID     = "Fn_call_id"
	hdrDeadline   = "Fn_deadline"
	hdrMethod     = "Fn_method"
	hdrRequestURL = "Fn_request_url"
)

// maxChunkLine bounds a chunk-size line, extensions included.
const maxChunkLine = 4 << 10

type httpCodec struct {
	limits Limits
}

func (c *httpCodec) Format() string { return HTTP }

func (c *httpCodec) WriteRequest(w io.Writer, req *Request) error {
	streamed := req.BodyStream != nil
	if n := int64(len(req.Body)); !streamed && n > c.limits.MaxBody {
		return tooLarge(false, "request body", n, c.limits.MaxBody)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return fmt.Errorf("protocol: invalid method %q", method)
	}
	u, err := url.Parse(req.URL)
	if err != nil {
		return fmt.Errorf("protocol: request URL: %w", err)
	}
	if !validValue(req.URL) || !validValue(req.CallID) || !validValue(u.Host) || strings.ContainsAny(u.Host, " \t") {
		return fmt.Errorf("protocol: request URL or call id holds control characters")
	}
	err = writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, method...)
		b = append(b, ' ')
		b = appendTarget(b, u.RequestURI())
		b = append(b, " HTTP/1.1\r\nHost: "...)
		b = append(b, u.Host...)
		b = append(b, "\r\n"...)
		b, err := appendHTTPHeaders(b, req.Header, hdrCallID, hdrDeadline, hdrMethod, hdrRequestURL)
		if err != nil {
			return b, err
		}
		b = appendField(b, hdrCallID, req.CallID)
		b = append(b, hdrDeadline+": "...)
		b = appendDeadline(b, req.Deadline)
		b = append(b, "\r\n"...)
		b = appendField(b, hdrMethod, method)
		b = appendField(b, hdrRequestURL, req.URL)
		switch {
		case !streamed:
			b = append(b, "Content-Length: "...)
			b = appendInt(b, int64(len(req.Body)))
			b = append(b, "\r\n\r\n"...)
			return append(b, req.Body...), nil
		case req.BodyLength >= 0:
			b = append(b, "Content-Length: "...)
			b = appendInt(b, req.BodyLength)
			return append(b, "\r\n\r\n"...), nil
		}
		return append(b, "Transfer-Encoding: chunked\r\n\r\n"...), nil
	})
	if err != nil || !streamed {
		return err
	}
	if req.BodyLength >= 0 {
		return copyExactly(w, req.BodyStream, req.BodyLength)
	}
	_, err = writeChunked(w, req.BodyStream)
	return err
}

// copyExactly copies a body of announced length n: fewer bytes from the
// source is its failure (a BodyError), and so is more.
func copyExactly(w io.Writer, body io.Reader, n int64) error {
	written, err := io.CopyN(w, &sourceReader{body}, n)
	if err != nil {
		var be *BodyError
		if errors.As(err, &be) {
			return err
		}
		if err == io.EOF {
			return &BodyError{Err: fmt.Errorf("body ended after %d of %d bytes", written, n)}
		}
		return err
	}
	return nil
}

// sourceReader marks read errors as the body source's, so a caller can
// tell them from a failed write to the function.
type sourceReader struct{ r io.Reader }

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &BodyError{Err: err}
	}
	return n, err
}

// appendTarget percent-encodes what must not appear in a request line;
// url.URL.RequestURI leaves a raw query as it came.
func appendTarget(b []byte, target string) []byte {
	if target == "" {
		return append(b, '/')
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f {
			b = append(b, '%', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return b
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ':', ' ')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

func appendHTTPHeaders(b []byte, h http.Header, skip ...string) ([]byte, error) {
	for _, k := range headerKeys(h, skip...) {
		vs := h[k]
		if err := checkHeader(k, vs); err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		for _, v := range vs {
			b = appendField(b, k, v)
		}
	}
	return b, nil
}

func (c *httpCodec) WriteResponse(w io.Writer, resp *Response) error {
	status, err := normStatus(resp.Status)
	if err != nil {
		return fmt.Errorf("protocol: %w", err)
	}
	body := resp.Body
	if !bodyAllowed(status) {
		body = nil
	}
	if n := int64(len(body)); n > c.limits.MaxBody {
		return tooLarge(false, "response body", n, c.limits.MaxBody)
	}
	return writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, "HTTP/1.1 "...)
		b = appendInt(b, int64(status))
		b = append(b, ' ')
		b = append(b, http.StatusText(status)...)
		b = append(b, "\r\n"...)
		b, err := appendHTTPHeaders(b, resp.Header)
		if err != nil {
			return b, err
		}
		if bodyAllowed(status) {
			b = append(b, "Content-Length: "...)
			b = appendInt(b, int64(len(body)))
			b = append(b, "\r\n"...)
		}
		b = append(b, "\r\n"...)
		return append(b, body...), nil
	})
}

// bodyAllowed follows RFC 9112 section 6.3: 204 and 304 answers end with
// their headers whatever they claim, as net/http also reads them.
func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

func (c *httpCodec) ReadRequest(r *bufio.Reader) (*Request, error) {
	budget := maxHeaderBytes
	line, err := readStartLine(r, &budget)
	if err != nil {
		return nil, err
	}
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !validToken(method) || target == "" || !validValue(target) ||
		strings.ContainsAny(target, " \t") || !httpVersion(proto) {
		return nil, protoErrorf("http request line %q", clip(line))
	}
	h, err := readHeader(r, &budget)
	if err != nil {
		return nil, err
	}
	body, err := c.readBody(r, h, false)
	if err != nil {
		return nil, err
	}
	req := &Request{
		CallID: h.Get(hdrCallID),
		Method: method,
		URL:    h.Get(hdrRequestURL),
		Body:   body,
	}
	if req.Deadline, err = parseDeadline(h.Get(hdrDeadline)); err != nil {
		return nil, protoErrorf("http request: %v", err)
	}
	if req.URL == "" {
		req.URL = "http://" + h.Get("Host") + target
	}
	for _, k := range []string{hdrCallID, hdrDeadline, hdrMethod, hdrRequestURL} {
		delete(h, k)
	}
	req.Header = cleanHeader(h)
	return req, nil
}

func (c *httpCodec) ReadResponse(r *bufio.Reader) (*Response, error) {
	status, h, err := c.readResponseHead(r)
	if err != nil {
		return nil, err
	}
	var body []byte
	if bodyAllowed(status) {
		if body, err = c.readBody(r, h, true); err != nil {
			return nil, err
		}
	}
	return &Response{Status: status, Header: cleanHeader(h), Body: body}, nil
}

func (c *httpCodec) readResponseHead(r *bufio.Reader) (int, http.Header, error) {
	budget := maxHeaderBytes
	line, err := readStartLine(r, &budget)
	if err != nil {
		return 0, nil, err
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	if !httpVersion(proto) || len(code) != 3 {
		return 0, nil, protoErrorf("http status line %q", clip(line))
	}
	status, err := strconv.Atoi(code)
	if err != nil || code[0] < '0' || code[0] > '9' {
		return 0, nil, protoErrorf("http status line %q", clip(line))
	}
	if status < 200 {
		return 0, nil, protoErrorf("http status %d is not a final status", status)
	}
	h, err := readHeader(r, &budget)
	if err != nil {
		return 0, nil, err
	}
	return status, h, nil
}

func httpVersion(s string) bool { return s == "HTTP/1.1" || s == "HTTP/1.0" }

// readStartLine skips blank lines before a message, as RFC 9112 section 2.2
// asks, and reports io.EOF only when the stream ended before any message.
func readStartLine(r *bufio.Reader, budget *int) (string, error) {
	for {
		line, err := readLine(r, *budget)
		if err == io.EOF {
			return "", io.EOF
		}
		if err != nil {
			return "", readError("http start line", err)
		}
		*budget -= len(line) + 1
		if len(line) > 0 {
			return string(line), nil
		}
	}
}

// readHeader reads header fields up to the empty line, within budget.
func readHeader(r *bufio.Reader, budget *int) (http.Header, error) {
	h := make(http.Header)
	var last string
	for {
		if *budget <= 0 {
			return nil, readError("http header", errLineTooLong)
		}
		line, err := readLine(r, *budget)
		if err != nil {
			return nil, readError("http header", err)
		}
		*budget -= len(line) + 1
		if len(line) == 0 {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: RFC 9112 section 5.2 lets a recipient replace it by a space.
			vs := h[last]
			if last == "" {
				return nil, protoErrorf("http header continues nothing")
			}
			v := textproto.TrimString(string(line))
			if !validValue(v) {
				return nil, protoErrorf("invalid value for header %q", last)
			}
			if prev := vs[len(vs)-1]; prev == "" {
				vs[len(vs)-1] = v
			} else if v != "" {
				vs[len(vs)-1] = prev + " " + v
			}
			continue
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return nil, protoErrorf("http header line %q", clip(string(line)))
		}
		k := string(line[:i])
		v := textproto.TrimString(string(line[i+1:]))
		if !validToken(k) {
			return nil, protoErrorf("invalid header name %q", clip(k))
		}
		if !validValue(v) {
			return nil, protoErrorf("invalid value for header %q", k)
		}
		last = textproto.CanonicalMIMEHeaderKey(k)
		h[last] = append(h[last], v)
	}
}

// readBody reads the body the header announces. A response must announce
// one (Content-Length or chunked): reading until EOF would consume the
// container's stdout for good. A request without either has none.
func (c *httpCodec) readBody(r *bufio.Reader, h http.Header, response bool) ([]byte, error) {
	if te, ok := h["Transfer-Encoding"]; ok {
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return nil, protoErrorf("unsupported transfer encoding %q", clip(strings.Join(te, ", ")))
		}
		return c.readChunked(r, response)
	}
	cl, ok := h["Content-Length"]
	if !ok {
		if response {
			return nil, protoErrorf("http response has neither Content-Length nor chunked encoding")
		}
		return nil, nil
	}
	n, err := parseContentLength(cl)
	if err != nil {
		return nil, err
	}
	if n > c.limits.MaxBody {
		return nil, tooLarge(response, "http body", n, c.limits.MaxBody)
	}
	body, err := readN(r, n)
	if err != nil {
		return nil, readError("http body", err)
	}
	return body, nil
}

func parseContentLength(vs []string) (int64, error) {
	for _, v := range vs[1:] {
		if v != vs[0] {
			return 0, protoErrorf("conflicting Content-Length values")
		}
	}
	v := vs[0]
	if v == "" || len(v) > 18 || strings.Trim(v, "0123456789") != "" {
		return 0, protoErrorf("invalid Content-Length %q", clip(v))
	}
	return strconv.ParseInt(v, 10, 64)
}

// readChunked reads a whole chunked body and its trailer section.
func (c *httpCodec) readChunked(r *bufio.Reader, response bool) ([]byte, error) {
	return io.ReadAll(newChunkedBody(r, c.limits.MaxBody, response))
}

// ReadResponseStream reads a response head; a chunked body is returned as
// a reader that ends with the frame, each Read returning bytes of one
// chunk as they arrive. Other bodies are read whole into the Response.
func (c *httpCodec) ReadResponseStream(r *bufio.Reader) (*Response, io.Reader, error) {
	status, h, err := c.readResponseHead(r)
	if err != nil {
		return nil, nil, err
	}
	if !bodyAllowed(status) {
		return &Response{Status: status, Header: cleanHeader(h)}, nil, nil
	}
	if te, ok := h["Transfer-Encoding"]; ok && len(te) == 1 && strings.EqualFold(te[0], "chunked") {
		return &Response{Status: status, Header: cleanHeader(h)}, newChunkedBody(r, c.limits.MaxStream, true), nil
	}
	body, err := c.readBody(r, h, true)
	if err != nil {
		return nil, nil, err
	}
	return &Response{Status: status, Header: cleanHeader(h), Body: body}, nil, nil
}

// clip shortens what an error message quotes from a frame.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
