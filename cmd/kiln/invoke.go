package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) invokeCmd() *cobra.Command {
	var (
		body, contentType string
		headers           []string
		verbose, showLogs bool
		detached          bool
		logWait           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "invoke APP FN",
		Short: "Call a fn and print its response body",
		Long: "Call a fn and print its response body on stdout. The request body is --body,\n" +
			"or stdin when stdin is not a terminal. Exits 1 when the answer is not 2xx.",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			hdr := http.Header{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok || strings.TrimSpace(k) == "" {
					return fmt.Errorf("bad --header %q: want Name: value", h)
				}
				hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			if contentType != "" {
				hdr.Set("Content-Type", contentType)
			}
			if detached {
				hdr.Set("Fn-Invoke-Type", "detached")
			}

			var payload []byte
			switch {
			case cmd.Flags().Changed("body"):
				payload = []byte(body)
			case !isTerminal(c.stdin):
				// Read whole so the request has a Content-Length: function
				// bodies are bounded by kilnd anyway, and a length lets it
				// refuse an oversized body up front.
				b, err := io.ReadAll(c.stdin)
				if err != nil {
					return fmt.Errorf("reading body from stdin: %w", err)
				}
				payload = b
			}

			cl, err := c.client()
			if err != nil {
				return err
			}
			_, fn, _, err := cl.resolveFn(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			resp, err := cl.send(ctx, request{
				Method:        http.MethodPost,
				Path:          "/invoke/" + seg(fn.ID),
				Header:        hdr,
				Body:          bytes.NewReader(payload),
				ContentLength: int64(len(payload)),
			})
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if verbose {
				printResponseHead(c.stderr, resp)
			}
			callID := resp.Header.Get("Fn-Call-Id")
			ok := resp.StatusCode >= 200 && resp.StatusCode <= 299

			if detached && ok {
				raw, err := io.ReadAll(resp.Body)
				if err != nil {
					return err
				}
				if c.structured() {
					return c.printRaw(raw)
				}
				var d struct {
					CallID string `json:"call_id"`
				}
				if json.Unmarshal(raw, &d) == nil && d.CallID != "" {
					callID = d.CallID
				}
				if callID == "" {
					return fmt.Errorf("kilnd accepted the call but sent no call id")
				}
				fmt.Fprintln(c.stdout, callID)
				return nil
			}

			// The body goes out whatever the status: a function may answer
			// 4xx on purpose, and a script wants to see what it said.
			var head bytes.Buffer
			if _, err := io.Copy(c.stdout, io.TeeReader(resp.Body, &limitedBuffer{buf: &head, max: 4096})); err != nil {
				return fmt.Errorf("reading response: %w", err)
			}

			if showLogs && callID != "" {
				if err := c.printCallLog(ctx, cl, fn.ID, callID, logWait); err != nil {
					fmt.Fprintf(c.stderr, "kiln: cannot fetch the log of call %s: %v\n", callID, err)
				}
			}
			if !ok {
				msg := errorFromBody(resp.StatusCode, head.Bytes()).Message
				if msg == "" {
					msg = "no details"
				}
				fmt.Fprintf(c.stderr, "Error: call answered %s: %s\n", resp.Status, msg)
				return errSilent
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&body, "body", "", "request body (default: stdin when it is not a terminal)")
	f.StringVar(&contentType, "content-type", "", "Content-Type of the request body")
	f.StringArrayVarP(&headers, "header", "H", nil, "extra request header 'Name: value' (repeatable)")
	f.BoolVarP(&verbose, "verbose", "v", false, "print the response status and headers on stderr")
	f.BoolVar(&showLogs, "logs", false, "after the response, print the call's stderr on stderr")
	f.DurationVar(&logWait, "logs-wait", 2*time.Second, "how long --logs waits for the log to appear")
	f.BoolVar(&detached, "detached", false, "queue the call and print its id instead of waiting")
	return cmd
}

// printCallLog prints a call's log. kilnd may store it a moment after the
// response is sent, so a 404 is retried until wait has passed.
func (c *cli) printCallLog(ctx context.Context, cl *client, fnID, callID string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		raw, err := cl.do(ctx, request{
			Method: http.MethodGet,
			Path:   "/v2/fns/" + seg(fnID) + "/calls/" + seg(callID) + "/log",
		})
		if err == nil {
			_, err = c.stderr.Write(raw)
			return err
		}
		if !isNotFound(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printResponseHead(w io.Writer, resp *http.Response) {
	fmt.Fprintf(w, "%s %s\n", resp.Proto, resp.Status)
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			fmt.Fprintf(w, "%s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w)
}

// limitedBuffer keeps the first max bytes written to it; enough of a
// response body to find kilnd's error message without holding all of it.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

// isTerminal reports whether r is an interactive terminal, where reading
// a body would wait for the user instead of a pipe.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
