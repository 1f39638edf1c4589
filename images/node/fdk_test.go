package node

import (
	"testing"

	"github.com/kiln-run/kiln/images/internal/fdktest"
)

// statusFunc sets a status and headers, throws for "boom" and returns a
// Response object for "resp": what fdktest checks of every FDK.
const statusFunc = `
const fdk = require('fdk')

exports.handler = async (ctx, data) => {
  const s = data.toString('latin1')
  if (s === 'boom') throw new Error('boom')
  if (s === 'resp') {
    return new fdk.Response(Buffer.from([0, 0xff, 0x62, 0x69, 0x6e]), { status: 201, headers: { 'X-Multi': ['a', 'b'] }, contentType: 'application/octet-stream' })
  }
  console.log('this goes to stderr, not to kiln')
  ctx.setStatus(202)
  ctx.addHeader('X-Out', '1')
  ctx.addHeader('x-out', '2')
  return 'text ' + ctx.method + ' ' + ctx.requestURL + ' ' + ctx.callId
}
`

func TestFDK(t *testing.T) {
	rt := fdktest.Runtime{Bin: "node", FDK: "fdk.js", Env: []string{"NODE_PATH=."},
		Conformance: "conformance/func.js", Embedded: FDK()}
	rt.StatusFunc.Name, rt.StatusFunc.Source = "func.js", statusFunc
	fdktest.Run(t, rt)
}
