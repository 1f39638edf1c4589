package deploy_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// PromQL words that are never metric names. Functions need no list: they
// are told by the "(" after them.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"inf": true, "nan": true, "atan2": true,
}

// Aggregations may be followed by "by (...)" or "without (...)" before
// their "(", so the "(" test alone would take them for metrics.
var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

// Modifiers whose parenthesised list holds label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlMetrics returns the metric names an expression selects. It is a
// tokenizer, not a parser (promtool checks syntax): it skips strings,
// label matchers, ranges, numbers, function names and label lists, and
// what is left are metric names.
func promqlMetrics(expr string) ([]string, error) {
	if strings.Contains(expr, "$") {
		return nil, fmt.Errorf("template variable in %q: the checks cannot resolve it", expr)
	}
	var names []string
	s := expr
	i := 0
	skipSpace := func(j int) int {
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n') {
			j++
		}
		return j
	}
	// skipTo returns the index after the close that matches the opener
	// at j, stepping over quoted strings.
	skipTo := func(j int, open, close byte) (int, error) {
		depth := 0
		for ; j < len(s); j++ {
			switch c := s[j]; c {
			case '"', '\'', '`':
				end := strings.IndexByte(s[j+1:], c)
				if end < 0 {
					return 0, fmt.Errorf("unterminated string in %q", expr)
				}
				j += end + 1
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	var err error
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '"' || c == '\'' || c == '`':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			i += end + 2
		case c == '{':
			if i, err = skipTo(i, '{', '}'); err != nil {
				return nil, err
			}
		case c == '[':
			if i, err = skipTo(i, '[', ']'); err != nil {
				return nil, err
			}
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			// Numbers, and durations after offset (5m, 1h30m).
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := s[i:j]
			next := skipSpace(j)
			nextWord := ""
			if k := next; k < len(s) && isIdentStart(s[k]) {
				for k < len(s) && isIdentChar(s[k]) {
					k++
				}
				nextWord = s[next:k]
			}
			switch {
			case promqlLabelLists[strings.ToLower(word)]:
				j = next
				if j < len(s) && s[j] == '(' {
					if j, err = skipTo(j, '(', ')'); err != nil {
						return nil, err
					}
				}
			case promqlKeywords[strings.ToLower(word)]:
			case next < len(s) && s[next] == '(':
				// a function or an aggregation
			case promqlAggregations[word] && (nextWord == "by" || nextWord == "without"):
			default:
				names = append(names, word)
			}
			i = j
		default:
			// operators, commas, parentheses, @
			i++
		}
	}
	return names, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func TestPromQLMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (app, fn) (rate(kiln_calls_total[1m]))`:                                                            {"kiln_calls_total"},
		`histogram_quantile(0.99, sum by (le, fn) (rate(kiln_call_duration_seconds_bucket[5m])))`:                  {"kiln_call_duration_seconds_bucket"},
		`sum(rate(a_total{status!="success",x=~"by (y)"}[1m] offset 5m)) without (fn) / on (app) group_left (z) b`: {"a_total", "b"},
		`go_goroutines{job="kilnd"} > 100 and process_resident_memory_bytes`:                                       {"go_goroutines", "process_resident_memory_bytes"},
		`count(up) by (job)`:         {"up"},
		`1.5e3 * sum  by(kind)  (x)`: {"x"},
	} {
		got, err := promqlMetrics(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", expr, got, want)
		}
	}
	if _, err := promqlMetrics(`rate(x[$__rate_interval])`); err == nil {
		t.Error("a template variable was accepted")
	}
}
