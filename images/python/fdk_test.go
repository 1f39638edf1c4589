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

// echoFunc is fdktest's EchoFunc.
const echoFunc = `
def handler(ctx, data):
    ctx.set_content_type("application/octet-stream")
    ctx.set_header("X-Call-Id", ctx.call_id)
    ctx.set_header("X-Deadline", ctx.deadline)
    ctx.set_header("X-Method", ctx.method)
    ctx.set_header("X-Url", ctx.request_url)
    ctx.set_header("X-Format", ctx.format)
    ctx.set_header("X-Config", ctx.config.get("ENV1", ""))
    ctx.set_header("X-Content-Type", ctx.header("Content-Type", ""))
    ctx.set_header("X-Got-Header", "|".join(ctx.headers.get_all("X-Test")))
    ctx.add_header("X-Multi", "1")
    ctx.add_header("X-Multi", "2")
    if ctx.header("X-Status"):
        ctx.set_status(int(ctx.header("X-Status")))
    return data
`

// streamFunc is fdktest's StreamFunc: a generator streams, one piece per
// yield.
const streamFunc = `
import os
import time

import fdk

def handler(ctx, data):
    gate = ctx.header("X-Gate")
    if not gate:
        return "whole"

    def events():
        yield "data: event 0\n\n"
        while not os.path.exists(gate):
            time.sleep(0.01)
        yield b"data: event 1\n\n"
        yield "data: event 2\n\n"

    return fdk.Response(events(), status=201, headers={"X-Stream": "yes"}, content_type="text/event-stream")
`

func TestFDK(t *testing.T) {
	rt := fdktest.Runtime{Bin: "python3", FDK: "fdk.py", Env: []string{"PYTHONDONTWRITEBYTECODE=1"},
		Conformance: "conformance/func.py", SSE: "sse/func.py", Embedded: FDK()}
	rt.StatusFunc = fdktest.Func{Name: "func.py", Source: statusFunc}
	rt.EchoFunc = fdktest.Func{Name: "func.py", Source: echoFunc}
	rt.StreamFunc = fdktest.Func{Name: "func.py", Source: streamFunc}
	fdktest.Run(t, rt)
}
