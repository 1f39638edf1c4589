package protocol

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// cloudEventCodec is Fn's CloudEvents 0.1 format. The body is the event's
// data: JSON bodies are embedded as JSON, anything else as a JSON string.
type cloudEventCodec struct {
	limits Limits
	// now stamps eventTime; nil means time.Now. Tests fix it.
	now func() time.Time
}

func (c *cloudEventCodec) Format() string { return CloudEvent }

func (c *cloudEventCodec) WriteRequest(w io.Writer, req *Request) error {
	if n := int64(len(req.Body)); n > c.limits.MaxBody {
		return tooLarge(false, "request body", n, c.limits.MaxBody)
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	ct := req.Header.Get("Content-Type")
	return writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, `{"cloudEventsVersion":"0.1","eventID":`...)
		b = appendJSONString(b, req.CallID)
		b = append(b, `,"source":`...)
		b = appendJSONString(b, req.URL)
		b = append(b, `,"eventType":"http","eventTime":"`...)
		b = now().UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","contentType":`...)
		b = appendJSONString(b, ct)
		b = append(b, `,"extensions":{"deadline":"`...)
		b = appendDeadline(b, req.Deadline)
		b = append(b, `","protocol":{"type":"http","method":`...)
		b = appendJSONString(b, req.Method)
		b = append(b, `,"request_url":`...)
		b = appendJSONString(b, req.URL)
		b = append(b, `,"headers":`...)
		b, err := appendJSONHeaders(b, req.Header)
		if err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		b = append(b, `}},"data":`...)
		b = appendEventData(b, ct, req.Body)
		return append(b, "}\n"...), nil
	})
}

func (c *cloudEventCodec) WriteResponse(w io.Writer, resp *Response) error {
	status, err := normStatus(resp.Status)
	if err != nil {
		return fmt.Errorf("protocol: %w", err)
	}
	if n := int64(len(resp.Body)); n > c.limits.MaxBody {
		return tooLarge(false, "response body", n, c.limits.MaxBody)
	}
	ct := resp.Header.Get("Content-Type")
	return writeFrame(w, func(b []byte) ([]byte, error) {
		b = append(b, `{"cloudEventsVersion":"0.1","eventType":"http","contentType":`...)
		b = appendJSONString(b, ct)
		b = append(b, `,"extensions":{"protocol":{"status_code":`...)
		b = appendInt(b, int64(status))
		b = append(b, `,"headers":`...)
		b, err := appendJSONHeaders(b, resp.Header)
		if err != nil {
			return b, fmt.Errorf("protocol: %w", err)
		}
		b = append(b, `}},"data":`...)
		b = appendEventData(b, ct, resp.Body)
		return append(b, "}\n"...), nil
	})
}

// appendEventData embeds a JSON body as JSON, compacted so the frame stays
// one line, and sends everything else as a string. A body that is itself a
// JSON string goes as a string too: embedded raw it would read back
// without its quotes, since a string data field means "the body is this
// text".
func appendEventData(b []byte, ct string, body []byte) []byte {
	if len(body) > 0 && isJSONType(ct) && json.Valid(body) {
		i := 0
		for isSpace(body[i]) {
			i++
		}
		if body[i] != '"' {
			return appendCompact(b, body)
		}
	}
	return appendJSONBytes(b, body)
}

// eventBody inverts appendEventData. A null data is the JSON body "null"
// when the content type says JSON, and no body otherwise.
func eventBody(ct string, data json.RawMessage) ([]byte, error) {
	switch {
	case len(data) == 0:
		return nil, nil
	case data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, err
		}
		return bytesOf(s), nil
	case string(data) == "null" && !isJSONType(ct):
		return nil, nil
	}
	return data, nil
}

func isJSONType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

type eventProtocol struct {
	Method     string     `json:"method"`
	RequestURL string     `json:"request_url"`
	StatusCode int        `json:"status_code"`
	Headers    jsonHeader `json:"headers"`
}

type eventFrame struct {
	EventID     string `json:"eventID"`
	Source      string `json:"source"`
	ContentType string `json:"contentType"`
	Extensions  struct {
		Deadline string        `json:"deadline"`
		Protocol eventProtocol `json:"protocol"`
	} `json:"extensions"`
	Data json.RawMessage `json:"data"`
}

func (c *cloudEventCodec) read(r *bufio.Reader, response bool, what string) (*eventFrame, []byte, error) {
	var f eventFrame
	err := readObject(r, jsonFrameLimit(c.limits.MaxBody), response, what, func(b []byte) error {
		return json.Unmarshal(b, &f)
	})
	if err != nil {
		return nil, nil, err
	}
	body, err := eventBody(f.ContentType, f.Data)
	if err != nil {
		return nil, nil, protoErrorf("%s data: %v", what, err)
	}
	if n := int64(len(body)); n > c.limits.MaxBody {
		return nil, nil, tooLarge(response, what+" body", n, c.limits.MaxBody)
	}
	return &f, body, nil
}

func (c *cloudEventCodec) ReadRequest(r *bufio.Reader) (*Request, error) {
	f, body, err := c.read(r, false, "cloudevent request")
	if err != nil {
		return nil, err
	}
	deadline, err := parseDeadline(f.Extensions.Deadline)
	if err != nil {
		return nil, protoErrorf("cloudevent request: %v", err)
	}
	p := &f.Extensions.Protocol
	h, err := withContentType(http.Header(p.Headers), f.ContentType, false)
	if err != nil {
		return nil, protoErrorf("cloudevent request: %v", err)
	}
	url := p.RequestURL
	if url == "" {
		url = f.Source
	}
	return &Request{
		CallID:   f.EventID,
		Deadline: deadline,
		Method:   p.Method,
		URL:      url,
		Header:   h,
		Body:     body,
	}, nil
}

func (c *cloudEventCodec) ReadResponse(r *bufio.Reader) (*Response, error) {
	f, body, err := c.read(r, true, "cloudevent response")
	if err != nil {
		return nil, err
	}
	p := &f.Extensions.Protocol
	status, err := normStatus(p.StatusCode)
	if err != nil {
		return nil, protoErrorf("cloudevent response: %v", err)
	}
	h, err := withContentType(http.Header(p.Headers), f.ContentType, true)
	if err != nil {
		return nil, protoErrorf("cloudevent response: %v", err)
	}
	return &Response{Status: status, Header: h, Body: body}, nil
}
