package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
)

func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// printFields prints one object as aligned "KEY  value" lines.
func printFields(w io.Writer, fields [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s\t%s\n", f[0], f[1])
	}
	return tw.Flush()
}

// printJSON prints the server's JSON indented; it is re-indented, never
// re-encoded, so fields the CLI does not know survive.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		_, err = w.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func fmtConfig(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseKVs reads repeated K=V flags. An empty value is kept: on update it
// asks kilnd to remove the key, as Fn does.
func parseKVs(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("bad config %q: want KEY=VALUE", kv)
		}
		m[k] = v
	}
	return m, nil
}

// printRaw prints a server answer in the chosen -o format: JSON
// re-indented, or the same document as YAML, keys in the server's order.
func (c *cli) printRaw(raw []byte) error {
	if c.output == outYAML {
		return printYAML(c.stdout, raw)
	}
	return printJSON(c.stdout, raw)
}

// printItems prints all pages of a list as one list, in the server's shape.
func (c *cli) printItems(items []json.RawMessage) error {
	if items == nil {
		items = []json.RawMessage{}
	}
	raw, err := json.Marshal(struct {
		Items []json.RawMessage `json:"items"`
	}{items})
	if err != nil {
		return err
	}
	return c.printRaw(raw)
}

// printValue prints a value of the CLI's own (not the server's) as -o asks.
func (c *cli) printValue(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.printRaw(raw)
}

// printYAML converts JSON to YAML through yaml.v3's node tree: JSON is
// YAML, so parsing keeps key order and types, and clearing the flow and
// quoting styles makes the encoder write ordinary block YAML (quoting a
// string only where it would read as another type).
func printYAML(w io.Writer, raw []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(bytes.TrimSpace(raw), &doc); err != nil {
		_, err = w.Write(raw)
		return err
	}
	var plain func(n *yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		for _, k := range n.Content {
			plain(k)
		}
	}
	plain(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return enc.Close()
}

// parseAnnotations reads repeated KEY=VALUE flags. VALUE is a string; one
// that is a JSON object, array or quoted string is sent as that JSON value
// (annotations hold any JSON). An empty value is kept: on update it asks
// kilnd to remove the key.
func parseAnnotations(kvs []string) (map[string]any, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("bad annotation %q: want KEY=VALUE (VALUE may be JSON: KEY='{\"a\":1}')", kv)
		}
		m[k] = v
		if t := strings.TrimSpace(v); t != "" && strings.ContainsRune("{[\"", rune(t[0])) {
			var js any
			if err := json.Unmarshal([]byte(t), &js); err != nil {
				return nil, fmt.Errorf("bad annotation %q: the value looks like JSON but is not: %v", kv, err)
			}
			m[k] = js
		}
	}
	return m, nil
}

func fmtAnnotations(m map[string]any) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v, ok := m[k].(string)
		if !ok {
			b, _ := json.Marshal(m[k])
			v = string(b)
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ", ")
}
