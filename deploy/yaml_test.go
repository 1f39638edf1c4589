package deploy_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// parseYAML reads the subset of YAML the deployment files are written
// in: block mappings and sequences, plain and quoted scalars, one-line
// flow sequences, comments. The module has no YAML library and the tests
// may not add one, so anything outside the subset (anchors, tags,
// multi-line strings, flow mappings) is an error rather than a silent
// misreading. Scalars stay strings: the checks compare text.
//
// The result is built of map[string]any, []any, string and nil.
func parseYAML(src string) (any, error) {
	lines, err := yamlLines(src)
	if err != nil {
		return nil, err
	}
	if len(lines) == 0 {
		return nil, nil
	}
	p := &yamlParser{lines: lines}
	v, next, err := p.block(0, lines[0].indent)
	if err != nil {
		return nil, err
	}
	if next < len(lines) {
		return nil, fmt.Errorf("line %d: unexpected indentation", lines[next].n)
	}
	return v, nil
}

type yamlLine struct {
	n      int // 1-based, for errors
	indent int
	text   string // without indentation and comment
}

func yamlLines(src string) ([]yamlLine, error) {
	var out []yamlLine
	for i, raw := range strings.Split(src, "\n") {
		n := i + 1
		raw = strings.TrimRight(raw, " \r")
		body := strings.TrimLeft(raw, " ")
		if strings.HasPrefix(body, "\t") {
			return nil, fmt.Errorf("line %d: tab in indentation", n)
		}
		text := strings.TrimRight(stripYAMLComment(body), " ")
		if text == "" {
			continue
		}
		if text == "---" {
			if len(out) > 0 {
				return nil, fmt.Errorf("line %d: a second document is not supported", n)
			}
			continue
		}
		if text == "..." {
			return nil, fmt.Errorf("line %d: document end marker not supported", n)
		}
		out = append(out, yamlLine{n: n, indent: len(raw) - len(body), text: text})
	}
	return out, nil
}

// stripYAMLComment cuts a # that starts a comment: at the start or after
// a space, outside quotes.
func stripYAMLComment(s string) string {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || s[i-1] == ' '):
			return s[:i]
		}
	}
	return s
}

type yamlParser struct{ lines []yamlLine }

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

func (p *yamlParser) block(i, indent int) (any, int, error) {
	if isSeqItem(p.lines[i].text) {
		return p.seq(i, indent)
	}
	return p.mapping(i, indent)
}

// keySplit finds the ": " (or final ":") that ends a mapping key,
// outside quotes; ok is false for a line that is not "key: value".
func keySplit(text string) (key, rest string, ok bool) {
	var quote byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case quote == '"' && c == '\\':
			i++
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case (c == '"' || c == '\'') && i == 0:
			quote = c
		case c == '[' || c == '{':
			if i == 0 {
				return "", "", false
			}
		case c == ':' && (i+1 == len(text) || text[i+1] == ' '):
			return strings.TrimSpace(text[:i]), strings.TrimSpace(text[i+1:]), true
		}
	}
	return "", "", false
}

func (p *yamlParser) mapping(i, indent int) (any, int, error) {
	m := map[string]any{}
	for i < len(p.lines) {
		l := p.lines[i]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, i, fmt.Errorf("line %d: unexpected indentation", l.n)
		}
		if isSeqItem(l.text) {
			return nil, i, fmt.Errorf("line %d: sequence item where a mapping key was expected", l.n)
		}
		rawKey, rest, ok := keySplit(l.text)
		if !ok {
			return nil, i, fmt.Errorf("line %d: expected \"key: value\", got %q", l.n, l.text)
		}
		key, err := yamlScalar(rawKey)
		if err != nil {
			return nil, i, fmt.Errorf("line %d: key: %w", l.n, err)
		}
		ks, isStr := key.(string)
		if !isStr {
			return nil, i, fmt.Errorf("line %d: key %q is not a scalar", l.n, rawKey)
		}
		if _, dup := m[ks]; dup {
			return nil, i, fmt.Errorf("line %d: duplicate key %q", l.n, ks)
		}
		i++
		var v any
		switch {
		case rest != "":
			if v, err = yamlScalar(rest); err != nil {
				return nil, i, fmt.Errorf("line %d: %w", l.n, err)
			}
		case i < len(p.lines) && p.lines[i].indent > indent:
			if v, i, err = p.block(i, p.lines[i].indent); err != nil {
				return nil, i, err
			}
		case i < len(p.lines) && p.lines[i].indent == indent && isSeqItem(p.lines[i].text):
			// "key:" followed by "- item" at the key's own indentation.
			if v, i, err = p.seq(i, indent); err != nil {
				return nil, i, err
			}
		}
		m[ks] = v
	}
	return m, i, nil
}

func (p *yamlParser) seq(i, indent int) (any, int, error) {
	var s []any
	for i < len(p.lines) {
		l := p.lines[i]
		if l.indent < indent || (l.indent == indent && !isSeqItem(l.text)) {
			break
		}
		if l.indent > indent {
			return nil, i, fmt.Errorf("line %d: unexpected indentation", l.n)
		}
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		var v any
		var err error
		switch {
		case rest == "":
			i++
			if i < len(p.lines) && p.lines[i].indent > indent {
				if v, i, err = p.block(i, p.lines[i].indent); err != nil {
					return nil, i, err
				}
			}
		case isSeqItem(rest) || func() bool { _, _, ok := keySplit(rest); return ok }():
			// "- key: value" or "- - x": the item is a block that starts
			// on this line, indented to where its text starts. Lines are
			// read once, front to back, so rewriting this one is safe.
			inner := indent + len(l.text) - len(rest)
			p.lines[i] = yamlLine{n: l.n, indent: inner, text: rest}
			if v, i, err = p.block(i, inner); err != nil {
				return nil, i, err
			}
		default:
			if v, err = yamlScalar(rest); err != nil {
				return nil, i, fmt.Errorf("line %d: %w", l.n, err)
			}
			i++
		}
		s = append(s, v)
	}
	return s, i, nil
}

// yamlScalar reads one scalar or a one-line flow sequence.
func yamlScalar(s string) (any, error) {
	switch s[0] {
	case '"':
		v, n, err := doubleQuoted(s)
		if err != nil {
			return nil, err
		}
		if n != len(s) {
			return nil, fmt.Errorf("text after quoted string: %q", s)
		}
		return v, nil
	case '\'':
		v, n, err := singleQuoted(s)
		if err != nil {
			return nil, err
		}
		if n != len(s) {
			return nil, fmt.Errorf("text after quoted string: %q", s)
		}
		return v, nil
	case '[':
		return flowSeq(s)
	case '{':
		if s == "{}" {
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("flow mappings are not supported: %q", s)
	case '&', '*', '!', '|', '>', '%', '@', '`':
		return nil, fmt.Errorf("unsupported YAML construct: %q", s)
	}
	if strings.Contains(s, ": ") || strings.Contains(s, " #") {
		return nil, fmt.Errorf("plain scalar %q holds \": \" or \" #\"; quote it", s)
	}
	return s, nil
}

func doubleQuoted(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 == len(s) {
				return "", 0, fmt.Errorf("unterminated escape in %q", s)
			}
			i++
			switch s[i] {
			case '"', '\\', '/':
				b.WriteByte(s[i])
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				return "", 0, fmt.Errorf("unsupported escape \\%c in %q", s[i], s)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("unterminated string %q", s)
}

func singleQuoted(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '\'' {
			if i+1 < len(s) && s[i+1] == '\'' {
				b.WriteByte('\'')
				i++
				continue
			}
			return b.String(), i + 1, nil
		}
		b.WriteByte(s[i])
	}
	return "", 0, fmt.Errorf("unterminated string %q", s)
}

func flowSeq(s string) (any, error) {
	if !strings.HasSuffix(s, "]") {
		return nil, fmt.Errorf("flow sequence must close on its line: %q", s)
	}
	inner := strings.TrimSpace(s[1 : len(s)-1])
	out := []any{}
	for inner != "" {
		var item string
		switch inner[0] {
		case '"', '\'':
			var n int
			var err error
			if inner[0] == '"' {
				item, n, err = doubleQuoted(inner)
			} else {
				item, n, err = singleQuoted(inner)
			}
			if err != nil {
				return nil, err
			}
			inner = strings.TrimSpace(inner[n:])
		case '[', '{':
			return nil, fmt.Errorf("nested flow collections are not supported: %q", s)
		default:
			end := strings.IndexByte(inner, ',')
			if end < 0 {
				end = len(inner)
			}
			item = strings.TrimSpace(inner[:end])
			inner = inner[end:]
		}
		out = append(out, item)
		if inner == "" {
			break
		}
		if inner[0] != ',' {
			return nil, fmt.Errorf("expected , in %q", s)
		}
		inner = strings.TrimSpace(inner[1:])
	}
	return out, nil
}

func TestParseYAML(t *testing.T) {
	src := `# comment
top:
  a: 1   # trailing
  b: "x: y # not a comment"
  c: 'it''s'
  list:
    - one
    - "two"
    - k: v
      k2: v2
    -
      nested: yes
  compact:
  - p
  - q
  flow: [a, "b c", 'd']
  empty:
  url: http://host:9090/x
`
	got, err := parseYAML(src)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"top": map[string]any{
		"a": "1", "b": "x: y # not a comment", "c": "it's",
		"list":    []any{"one", "two", map[string]any{"k": "v", "k2": "v2"}, map[string]any{"nested": "yes"}},
		"compact": []any{"p", "q"},
		"flow":    []any{"a", "b c", "d"},
		"empty":   nil,
		"url":     "http://host:9090/x",
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	for name, bad := range map[string]string{
		"duplicate key":  "a: 1\na: 2\n",
		"anchor":         "a: &x 1\n",
		"block scalar":   "a: |\n  text\n",
		"bad indent":     "a:\n    b: 1\n  c: 2\n",
		"tab":            "a:\n\tb: 1\n",
		"flow mapping":   "a: {b: 1}\n",
		"unquoted colon": "a: b: c\n",
		"not a mapping":  "a: 1\njust text\n",
	} {
		if _, err := parseYAML(bad); err == nil {
			t.Errorf("%s: parsed %q without error", name, bad)
		}
	}
}
