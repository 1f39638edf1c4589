package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestNameOf(t *testing.T) {
	for body, want := range map[string]string{
		"":                    "World",
		"  \n":                "World",
		"kiln\n":              "kiln",
		`{"name":"Ada"}`:      "Ada",
		` {"name": " Bob "} `: "Bob",
		`{"name":""}`:         "World",
		`{"other":1}`:         "World",
		`{not json`:           "{not json",
	} {
		if got := nameOf([]byte(body)); got != want {
			t.Errorf("nameOf(%q) = %q, want %q", body, got, want)
		}
	}
}

func TestHello(t *testing.T) {
	var out bytes.Buffer
	hello(context.Background(), strings.NewReader(`{"name":"kiln"}`), &out)
	if out.String() != "Hello, kiln!" {
		t.Errorf("got %q", out.String())
	}
}
