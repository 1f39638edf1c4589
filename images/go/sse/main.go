// Command sse streams server-sent events: it answers text/event-stream
// and sends "data: event N" five times, 200 ms apart, flushing each one so
// that the client sees it when it is written rather than when the call
// ends. The request headers X-Events and X-Gap-Ms change the count and
// the gap (in milliseconds).
//
//	curl -N http://127.0.0.1:8080/t/myapp/sse
//
// Events reach the client one by one in the http and http-stream formats;
// in the others the FDK cannot stream, and all five come at the end.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/kiln-run/kiln/images/go/fdk"
)

func main() {
	fdk.Handle(fdk.HandlerFunc(events))
}

func events(ctx context.Context, in io.Reader, out io.Writer) {
	h := fdk.GetContext(ctx).Header()
	n := intHeader(h, "X-Events", 5)
	gap := time.Duration(intHeader(h, "X-Gap-Ms", 200)) * time.Millisecond
	fdk.SetHeader(out, "Content-Type", "text/event-stream")
	// Proxies between kiln and the client must not hold events back.
	fdk.SetHeader(out, "Cache-Control", "no-cache")
	for i := 1; i <= n; i++ {
		if i > 1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap):
			}
		}
		fmt.Fprintf(out, "data: event %d\n\n", i)
		fdk.Flush(out)
	}
}

// intHeader is a request header as a non-negative number, or def.
func intHeader(h http.Header, key string, def int) int {
	if n, err := strconv.Atoi(h.Get(key)); err == nil && n >= 0 {
		return n
	}
	return def
}
