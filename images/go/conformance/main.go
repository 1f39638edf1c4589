// Command conformance is the Go side of kiln's FDK conformance check: every
// runtime has a function answering the same JSON, so one test can call
// each of them in every format it speaks and expect the same answer.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/kiln-run/kiln/images/go/fdk"
)

func main() {
	fdk.Handle(fdk.HandlerFunc(conformance))
}

// answer is the conformance response. Env1 and Header are pointers so an
// unset value is null, as in the other runtimes, not "".
type answer struct {
	Normal  string  `json:"normal"`
	Env1    *string `json:"env1"`
	Payload any     `json:"payload"`
	Header  *string `json:"header"`
}

func conformance(ctx context.Context, in io.Reader, out io.Writer) {
	body, err := io.ReadAll(in)
	if err != nil {
		fdk.WriteStatus(out, 400)
		fmt.Fprintf(out, "reading body: %v", err)
		return
	}
	a := answer{Normal: "Hello World!", Payload: string(body)}
	var v any
	if json.Valid(body) && json.Unmarshal(body, &v) == nil {
		a.Payload = v
	}
	if e, ok := fdk.GetContext(ctx).Config()["ENV1"]; ok {
		a.Env1 = &e
	}
	if vs := fdk.GetContext(ctx).Header().Values("X-Test"); len(vs) > 0 {
		a.Header = &vs[0]
	}
	fdk.SetHeader(out, "Content-Type", "application/json")
	if err := json.NewEncoder(out).Encode(a); err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
	}
}
