package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// logLine is one line a function wrote to stderr, as kilnd streams it.
type logLine struct {
	Time   time.Time `json:"time"`
	AppID  string    `json:"app_id"`
	FnID   string    `json:"fn_id"`
	Fn     string    `json:"fn"`
	CallID string    `json:"call_id"`
	Line   string    `json:"line"`
}

func (c *cli) logsCmd() *cobra.Command {
	var (
		follow bool
		since  string
	)
	cmd := &cobra.Command{
		Use:   "logs APP [FN]",
		Short: "Print what an app's fns wrote to stderr, and follow it with -f",
		Long: "Print the stderr lines of an app's fns (or one fn's), oldest first, as\n" +
			"TIME FN CALL_ID LINE. -f keeps printing lines as the functions write them, until\n" +
			"Ctrl-C. --since takes a duration back from now (10m, 2h) or an RFC 3339 time.\n" +
			"-o json prints kilnd's JSON lines as they are.",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				q.Set("since", t.UTC().Format(time.RFC3339Nano))
			}
			if follow {
				q.Set("follow", "true")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			app, _, err := cl.appByName(ctx, args[0])
			if err != nil {
				return err
			}
			if len(args) == 2 {
				fn, _, err := cl.fnByName(ctx, app, args[1])
				if err != nil {
					return err
				}
				q.Set("fn_id", fn.ID)
			}
			resp, err := cl.send(ctx, request{
				Method: http.MethodGet,
				Path:   "/v2/apps/" + seg(app.ID) + "/logs",
				Query:  q,
				Header: http.Header{"Accept": {ndjson}},
			})
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				return routeErr(errorFromBody(resp.StatusCode, b), "logs")
			}
			err = c.printLogs(resp.Body)
			// Ctrl-C ends a follow: that is how it is meant to end.
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines as they are written")
	cmd.Flags().StringVar(&since, "since", "", "only lines from this long ago (10m) or since this time (RFC 3339)")
	return cmd
}

// printLogs copies kilnd's NDJSON stream to stdout line by line, flushing
// each, so a followed line shows as soon as it arrives.
func (c *cli) printLogs(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var l logLine
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("decoding log line %q: %w", clip(string(raw)), err)
		}
		// An error after the stream began comes as {"message", "code"}.
		if l.Line == "" && l.CallID == "" {
			var e struct {
				Message string `json:"message"`
				Code    int    `json:"code"`
			}
			if json.Unmarshal(raw, &e) == nil && e.Message != "" {
				return &apiError{Status: e.Code, Message: e.Message}
			}
		}
		switch c.output {
		case outJSON:
			fmt.Fprintf(c.stdout, "%s\n", raw)
		case outYAML:
			fmt.Fprintln(c.stdout, "---")
			if err := printYAML(c.stdout, raw); err != nil {
				return err
			}
		default:
			fmt.Fprintf(c.stdout, "%s %s %s %s\n", l.Time.Local().Format("2006-01-02T15:04:05.000Z07:00"),
				orDash(l.Fn), orDash(l.CallID), strings.TrimRight(l.Line, "\r\n"))
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("reading logs: %w", err)
	}
	return nil
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("bad --since %q: a duration back from now is positive", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad --since %q: want a duration (10m, 2h) or a time (2006-01-02T15:04:05Z)", s)
}
