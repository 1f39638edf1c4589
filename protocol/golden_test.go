package protocol

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden frames in testdata/")

// TestGolden pins every frame byte for byte: other FDKs (and Fn's) parse
// these, so a change here is a wire change and must be deliberate.
func TestGolden(t *testing.T) {
	for _, format := range hotFormats {
		c := newCodec(t, format, Limits{})
		for _, tc := range []struct {
			kind  string
			frame []byte
		}{
			{"request", encodeRequest(t, c, sampleRequest())},
			{"response", encodeResponse(t, c, sampleResponse())},
		} {
			t.Run(format+"/"+tc.kind, func(t *testing.T) {
				checkGolden(t, filepath.Join("testdata", format+"."+tc.kind), tc.frame)
			})
		}
	}
	t.Run("default/env", func(t *testing.T) {
		env := strings.Join(DefaultEnv(sampleRequest()), "\n") + "\n"
		checkGolden(t, filepath.Join("testdata", "default.env"), []byte(env))
	})
}

// TestGoldenDecode reads the golden frames back, so the files also serve
// as fixtures of what a conforming function sends.
func TestGoldenDecode(t *testing.T) {
	for _, format := range hotFormats {
		c := newCodec(t, format, Limits{})
		t.Run(format, func(t *testing.T) {
			b := readFile(t, filepath.Join("testdata", format+".request"))
			req, err := c.ReadRequest(reader(b))
			if err != nil {
				t.Fatal(err)
			}
			want := sampleRequest()
			want.Header = wantHeader(want.Header)
			if err := diffRequest(req, want); err != nil {
				t.Error(err)
			}
			b = readFile(t, filepath.Join("testdata", format+".response"))
			resp, err := c.ReadResponse(reader(b))
			if err != nil {
				t.Fatal(err)
			}
			if err := diffResponse(resp, sampleResponse()); err != nil {
				t.Error(err)
			}
		})
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readFile(t, path)
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test ./protocol -run TestGolden -update if the change is intended)\ngot:\n%q\nwant:\n%q", path, got, want)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
