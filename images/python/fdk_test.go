package python

import (
	"testing"

	"github.com/kiln-run/kiln/images/internal/fdktest"
)

// statusFunc sets a status and headers, raises for "boom" and returns a
// Response object for "resp": what fdktest checks of every FDK.
const statusFunc = `
import fdk

def handler(ctx, data):
    if data == b"boom":
        raise RuntimeError("boom")
    if data == b"resp":
        return fdk.Response(b"\x00\xffbin", status=201, headers={"X-Multi": ["a", "b"]}, content_type="application/octet-stream")
    print("this goes to stderr, not to kiln")
    ctx.set_status(202)
    ctx.add_header("X-Out", "1")
    ctx.add_header("x-out", "2")
    return "text " + ctx.method + " " + ctx.request_url + " " + ctx.call_id
`

func TestFDK(t *testing.T) {
	rt := fdktest.Runtime{Bin: "python3", FDK: "fdk.py", Env: []string{"PYTHONDONTWRITEBYTECODE=1"},
		Conformance: "conformance/func.py", Embedded: FDK()}
	rt.StatusFunc.Name, rt.StatusFunc.Source = "func.py", statusFunc
	fdktest.Run(t, rt)
}
