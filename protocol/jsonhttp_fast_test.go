package protocol

import (
	"encoding/json"
	"reflect"
	"testing"
)

var fastHeadSeeds = []string{
	`{"status_code":200,"headers":{"Content-Type":["text/plain"]},"content_length":14}`,
	`{"status_code":201,"headers":{},"content_length":0}`,
	`{"content_length":3,"status_code":404}`,
	`{ "status_code" : 200 , "headers" : { "X-A" : [ "1" , "2" ] } , "content_length" : 2 }`,
	`{"status_code":200,"headers":{"content-type":["x"]},"content_length":1}`,
	`{"status_code":200,"headers":{"X":["a\"b"]},"content_length":1}`,
	`{"status_code":2e2,"content_length":1}`,
	`{"status_code":200,"status_code":201}`,
	`{"status_code":200,"headers":{"X":"single"}}`,
	`{"status_code":200,"headers":{"X":null}}`,
	`{"status_code":200,"headers":{"X":[]}}`,
	`{"status_code":-1,"content_length":-5}`,
	`{"status_code":007}`,
	`{}`,
	`{"extra":1}`,
	`{"status_code":200,"headers":{"X-Echo-Info":["{\"a\":\"b\\\\c\/d\"}"]},"content_length":1}`,
	`{"status_code":200,"headers":{"X":["tab\there"]}}`,
	`{"status_code":200,"headers":{"X":["\u0041"]}}`,
}

// TestJSONHTTPHeadFastMatchesFull: where the fast path answers, it
// answers what encoding/json would.
func TestJSONHTTPHeadFastMatchesFull(t *testing.T) {
	took := 0
	for _, s := range fastHeadSeeds {
		if checkFastHead(t, []byte(s)) {
			took++
		}
	}
	if took < 5 {
		t.Fatalf("the fast path took only %d of the common heads", took)
	}
}

func checkFastHead(t *testing.T, line []byte) bool {
	fast, ok := parseJSONHTTPHeadFast(line)
	if !ok {
		return false
	}
	var full jsonHTTPResponseHead
	if err := json.Unmarshal(line, &full); err != nil {
		t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", line, err)
	}
	if !reflect.DeepEqual(fast, full) {
		t.Fatalf("%q: fast %+v, full %+v", line, fast, full)
	}
	return true
}

func FuzzJSONHTTPHeadFast(f *testing.F) {
	for _, s := range fastHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) { checkFastHead(t, line) })
}
