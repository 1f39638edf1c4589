'use strict'
// Server-sent events: answers text/event-stream and sends "data: event N"
// five times, 200 ms apart. The handler is an async generator, so each
// event reaches the client as soon as it is yielded in the http and
// http-stream formats; in the others all five come at the end. The request
// headers X-Events and X-Gap-Ms change the count and the gap (in ms).

function number (ctx, name, fallback) {
  const n = Number.parseInt(ctx.header(name), 10)
  return Number.isInteger(n) && n >= 0 ? n : fallback
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

module.exports = async function * sse (ctx) {
  const count = number(ctx, 'X-Events', 5)
  const gap = number(ctx, 'X-Gap-Ms', 200)
  ctx.setContentType('text/event-stream')
  // Proxies between kiln and the client must not hold events back.
  ctx.setHeader('Cache-Control', 'no-cache')
  for (let i = 1; i <= count; i++) {
    if (i > 1) await sleep(gap)
    yield `data: event ${i}\n\n`
  }
}
