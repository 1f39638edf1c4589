package protocol

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// jsonHTTPCodec frames a call as a JSON header line, an empty line and the
// raw body, so bodies are binary safe and never escaped.
type jsonHTTPCodec struct {
	limits Limits
}

func (c *jsonHTTPCodec) Format() string { return JSONHTTP }

func (c *jsonHTTPCodec) WriteRequest(w io.Writer, req *Request) error {
	streamed := req.BodyStream != nil
	if streamed && req.BodyLength < 0 {
		return fmt.Errorf("protocol: json-http needs the body's length to stream it")
	}
	if n := int64(len(req.Body)); !streamed && n > c.limits.MaxBody {
		return tooLarge(false, "request body", n, c.limits.MaxBody)
	}
	err := writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, `{"call_id":`...)
		b = appendJSONString(b, req.CallID)
		b = append(b, `,"deadline":"`...)
		b = appendDeadline(b, req.Deadline)
		b = append(b, `","method":`...)
		b = appendJSONString(b, req.Method)
		b = append(b, `,"request_url":`...)
		b = appendJSONString(b, req.URL)
		b = append(b, `,"headers":`...)
		b, err := appendJSONHeaders(b, req.Header)
		if err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		b = append(b, `,"content_length":`...)
		if streamed {
			b = appendInt(b, req.BodyLength)
			return append(b, "}\n\n"...), nil
		}
		b = appendInt(b, int64(len(req.Body)))
		b = append(b, "}\n\n"...)
		return append(b, req.Body...), nil
	})
	if err != nil || !streamed {
		return err
	}
	return copyExactly(w, req.BodyStream, req.BodyLength)
}

func (c *jsonHTTPCodec) WriteResponse(w io.Writer, resp *Response) error {
	status, err := normStatus(resp.Status)
	if err != nil {
		return fmt.Errorf("protocol: %w", err)
	}
	if n := int64(len(resp.Body)); n > c.limits.MaxBody {
		return tooLarge(false, "response body", n, c.limits.MaxBody)
	}
	return writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, `{"status_code":`...)
		b = appendInt(b, int64(status))
		b = append(b, `,"headers":`...)
		b, err := appendJSONHeaders(b, resp.Header)
		if err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		b = append(b, `,"content_length":`...)
		b = appendInt(b, int64(len(resp.Body)))
		b = append(b, "}\n\n"...)
		return append(b, resp.Body...), nil
	})
}

type jsonHTTPRequestHead struct {
	CallID        string     `json:"call_id"`
	Deadline      string     `json:"deadline"`
	Method        string     `json:"method"`
	RequestURL    string     `json:"request_url"`
	Headers       jsonHeader `json:"headers"`
	ContentLength int64      `json:"content_length"`
}

func (c *jsonHTTPCodec) ReadRequest(r *bufio.Reader) (*Request, error) {
	var head jsonHTTPRequestHead
	if err := readHead(r, "json-http request", &head); err != nil {
		return nil, err
	}
	deadline, err := parseDeadline(head.Deadline)
	if err != nil {
		return nil, protoErrorf("json-http request: %v", err)
	}
	body, err := c.readBody(r, head.ContentLength, false)
	if err != nil {
		return nil, err
	}
	return &Request{
		CallID:   head.CallID,
		Deadline: deadline,
		Method:   head.Method,
		URL:      head.RequestURL,
		Header:   cleanHeader(http.Header(head.Headers)),
		Body:     body,
	}, nil
}

type jsonHTTPResponseHead struct {
	StatusCode    int        `json:"status_code"`
	Headers       jsonHeader `json:"headers"`
	ContentLength int64      `json:"content_length"`
}

func (c *jsonHTTPCodec) ReadResponse(r *bufio.Reader) (*Response, error) {
	var head jsonHTTPResponseHead
	if err := readHeadWith(r, "json-http response", &head, func(line []byte) bool {
		fast, ok := parseJSONHTTPHeadFast(line)
		if ok {
			head = fast
		}
		return ok
	}); err != nil {
		return nil, err
	}
	status, err := normStatus(head.StatusCode)
	if err != nil {
		return nil, protoErrorf("json-http response: %v", err)
	}
	body, err := c.readBody(r, head.ContentLength, true)
	if err != nil {
		return nil, err
	}
	return &Response{Status: status, Header: cleanHeader(http.Header(head.Headers)), Body: body}, nil
}

// readHead reads the JSON header line and the empty line after it. Blank
// lines before the header are skipped, as for the other formats.
func readHead(r *bufio.Reader, what string, v any) error {
	return readHeadWith(r, what, v, nil)
}

// readHeadWith is readHead with an optional fast decoder tried first; it
// reports whether it decoded the line into v itself.
func readHeadWith(r *bufio.Reader, what string, v any, fast func(line []byte) bool) error {
	budget := maxHeaderBytes
	var line []byte
	for {
		l, err := readLine(r, budget)
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return readError(what+" header", err)
		}
		budget -= len(l) + 1
		if len(l) > 0 {
			line = l
			break
		}
	}
	if line[0] != '{' {
		return protoErrorf("%s header: want a JSON object, got %q", what, clip(string(line)))
	}
	if fast == nil || !fast(line) {
		if err := json.Unmarshal(line, v); err != nil {
			return protoErrorf("%s header: %v", what, err)
		}
	}
	blank, err := readLine(r, 2)
	if err == nil && len(blank) != 0 || err == errLineTooLong {
		return protoErrorf("%s: header not followed by an empty line", what)
	}
	if err != nil {
		return readError(what, err)
	}
	return nil
}

func (c *jsonHTTPCodec) readBody(r *bufio.Reader, n int64, response bool) ([]byte, error) {
	if n < 0 {
		return nil, protoErrorf("json-http: negative content_length %d", n)
	}
	if n > c.limits.MaxBody {
		return nil, tooLarge(response, "json-http body", n, c.limits.MaxBody)
	}
	body, err := readN(r, n)
	if err != nil {
		return nil, readError("json-http body", err)
	}
	return body, nil
}
