// Command example is the smallest useful kiln function: it greets whoever
// the request body names.
//
//	echo -n kiln | kiln invoke myapp hello       -> Hello, kiln!
//	echo '{"name":"kiln"}' | kiln invoke ...     -> Hello, kiln!
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kiln-run/kiln/images/go/fdk"
)

func main() {
	fdk.Handle(fdk.HandlerFunc(hello))
}

func hello(ctx context.Context, in io.Reader, out io.Writer) {
	body, err := io.ReadAll(in)
	if err != nil {
		fdk.WriteStatus(out, 400)
		fmt.Fprintf(out, "reading body: %v\n", err)
		return
	}
	name := nameOf(body)
	fdk.SetHeader(out, "Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(out, "Hello, %s!", name)
	// stderr is the function's log; kiln files it under the call.
	fmt.Fprintf(os.Stderr, "hello: greeted %s\n", name)
}

// nameOf accepts either a bare name or {"name": "..."}, since clients
// of the Fn examples send both; a JSON object without a name greets the
// World rather than echoing JSON back.
func nameOf(body []byte) string {
	text := strings.TrimSpace(string(body))
	var v struct {
		Name *string `json:"name"`
	}
	if strings.HasPrefix(text, "{") && json.Unmarshal([]byte(text), &v) == nil {
		text = ""
		if v.Name != nil {
			text = strings.TrimSpace(*v.Name)
		}
	}
	if text == "" {
		return "World"
	}
	return text
}
