package protocol

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// jsonCodec is Fn's json format: the body travels as a JSON string, so it
// is not binary safe (invalid UTF-8 arrives as U+FFFD); json-http is.
type jsonCodec struct {
	limits Limits
}

func (c *jsonCodec) Format() string { return JSON }

func (c *jsonCodec) WriteRequest(w io.Writer, req *Request) error {
	if n := int64(len(req.Body)); n > c.limits.MaxBody {
		return tooLarge(false, "request body", n, c.limits.MaxBody)
	}
	return writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, `{"call_id":`...)
		b = appendJSONString(b, req.CallID)
		b = append(b, `,"deadline":"`...)
		b = appendDeadline(b, req.Deadline)
		b = append(b, `","body":`...)
		b = appendJSONBytes(b, req.Body)
		b = append(b, `,"content_type":`...)
		b = appendJSONString(b, req.Header.Get("Content-Type"))
		b = append(b, `,"protocol":{"type":"http","method":`...)
		b = appendJSONString(b, req.Method)
		b = append(b, `,"request_url":`...)
		b = appendJSONString(b, req.URL)
		b = append(b, `,"headers":`...)
		b, err := appendJSONHeaders(b, req.Header)
		if err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		return append(b, "}}\n"...), nil
	})
}

func (c *jsonCodec) WriteResponse(w io.Writer, resp *Response) error {
	status, err := normStatus(resp.Status)
	if err != nil {
		return fmt.Errorf("protocol: %w", err)
	}
	if n := int64(len(resp.Body)); n > c.limits.MaxBody {
		return tooLarge(false, "response body", n, c.limits.MaxBody)
	}
	return writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, `{"body":`...)
		b = appendJSONBytes(b, resp.Body)
		b = append(b, `,"content_type":`...)
		b = appendJSONString(b, resp.Header.Get("Content-Type"))
		b = append(b, `,"protocol":{"status_code":`...)
		b = appendInt(b, int64(status))
		b = append(b, `,"headers":`...)
		b, err := appendJSONHeaders(b, resp.Header)
		if err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		return append(b, "}}\n"...), nil
	})
}

type jsonRequestFrame struct {
	CallID      string `json:"call_id"`
	Deadline    string `json:"deadline"`
	Body        string `json:"body"`
	ContentType string `json:"content_type"`
	Protocol    struct {
		Method     string     `json:"method"`
		RequestURL string     `json:"request_url"`
		Headers    jsonHeader `json:"headers"`
	} `json:"protocol"`
}

func (c *jsonCodec) ReadRequest(r *bufio.Reader) (*Request, error) {
	var f jsonRequestFrame
	err := readObject(r, jsonFrameLimit(c.limits.MaxBody), false, "json request", func(b []byte) error {
		return json.Unmarshal(b, &f)
	})
	if err != nil {
		return nil, err
	}
	if n := int64(len(f.Body)); n > c.limits.MaxBody {
		return nil, tooLarge(false, "json request body", n, c.limits.MaxBody)
	}
	deadline, err := parseDeadline(f.Deadline)
	if err != nil {
		return nil, protoErrorf("json request: %v", err)
	}
	h, err := withContentType(http.Header(f.Protocol.Headers), f.ContentType, false)
	if err != nil {
		return nil, protoErrorf("json request: %v", err)
	}
	return &Request{
		CallID:   f.CallID,
		Deadline: deadline,
		Method:   f.Protocol.Method,
		URL:      f.Protocol.RequestURL,
		Header:   h,
		Body:     bytesOf(f.Body),
	}, nil
}

type jsonResponseFrame struct {
	Body        string `json:"body"`
	ContentType string `json:"content_type"`
	Protocol    struct {
		StatusCode int        `json:"status_code"`
		Headers    jsonHeader `json:"headers"`
	} `json:"protocol"`
}

func (c *jsonCodec) ReadResponse(r *bufio.Reader) (*Response, error) {
	var f jsonResponseFrame
	err := readObject(r, jsonFrameLimit(c.limits.MaxBody), true, "json response", func(b []byte) error {
		return json.Unmarshal(b, &f)
	})
	if err != nil {
		return nil, err
	}
	if n := int64(len(f.Body)); n > c.limits.MaxBody {
		return nil, tooLarge(true, "json response body", n, c.limits.MaxBody)
	}
	status, err := normStatus(f.Protocol.StatusCode)
	if err != nil {
		return nil, protoErrorf("json response: %v", err)
	}
	h, err := withContentType(http.Header(f.Protocol.Headers), f.ContentType, true)
	if err != nil {
		return nil, protoErrorf("json response: %v", err)
	}
	return &Response{Status: status, Header: h, Body: bytesOf(f.Body)}, nil
}

// withContentType cleans a decoded header and applies a frame's separate
// content type field: on a response it is the function's stated answer and
// wins; on a request it only fills in what the headers lack.
func withContentType(h http.Header, ct string, override bool) (http.Header, error) {
	h = cleanHeader(h)
	if ct == "" || (!override && h.Get("Content-Type") != "") {
		return h, nil
	}
	if !validValue(ct) {
		return nil, fmt.Errorf("invalid content type %q", clip(ct))
	}
	if h == nil {
		h = make(http.Header, 1)
	}
	h.Set("Content-Type", ct)
	return h, nil
}

// bytesOf keeps an empty body nil, as every decoder returns it.
func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}
