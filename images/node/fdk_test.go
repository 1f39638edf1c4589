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

// echoFunc is fdktest's EchoFunc.
const echoFunc = `
module.exports = (ctx, data) => {
  ctx.setContentType('application/octet-stream')
  ctx.setHeader('X-Call-Id', ctx.callId)
  ctx.setHeader('X-Deadline', ctx.deadline)
  ctx.setHeader('X-Method', ctx.method)
  ctx.setHeader('X-Url', ctx.requestURL)
  ctx.setHeader('X-Format', ctx.format)
  ctx.setHeader('X-Config', ctx.config.ENV1 || '')
  ctx.setHeader('X-Content-Type', ctx.header('Content-Type') || '')
  ctx.setHeader('X-Got-Header', ctx.headers.getAll('X-Test').join('|'))
  ctx.addHeader('X-Multi', '1')
  ctx.addHeader('X-Multi', '2')
  if (ctx.header('X-Status')) ctx.setStatus(Number(ctx.header('X-Status')))
  return data
}
`

// streamFunc is fdktest's StreamFunc: an async generator streams, one
// piece per yield; a string is a whole body.
const streamFunc = `
const fs = require('fs')

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

module.exports = (ctx) => {
  const gate = ctx.header('X-Gate')
  if (!gate) return 'whole'
  ctx.setStatus(201)
  ctx.setHeader('X-Stream', 'yes')
  ctx.setContentType('text/event-stream')
  return (async function * () {
    yield 'data: event 0\n\n'
    while (!fs.existsSync(gate)) await sleep(10)
    yield Buffer.from('data: event 1\n\n')
    yield 'data: event 2\n\n'
  })()
}
`

func TestFDK(t *testing.T) {
	rt := fdktest.Runtime{Bin: "node", FDK: "fdk.js", Env: []string{"NODE_PATH=."},
		Conformance: "conformance/func.js", SSE: "sse/func.js", Embedded: FDK()}
	rt.StatusFunc = fdktest.Func{Name: "func.js", Source: statusFunc}
	rt.EchoFunc = fdktest.Func{Name: "func.js", Source: echoFunc}
	rt.StreamFunc = fdktest.Func{Name: "func.js", Source: streamFunc}
	fdktest.Run(t, rt)
}
