'use strict'
// kiln's Node.js function development kit.
//
// A function is `handler(ctx, data)`, sync or async: `data` is the request
// body (a Buffer) and the returned value the response body: a Buffer or
// string as is, an object as JSON, undefined for no body, or a Response
// to set everything at once. `ctx` tells about the call (callId, deadline,
// method, requestURL, headers, config, format) and sets the answer's status
// and headers (setStatus, setHeader, addHeader, setContentType).
//
// kiln sets FN_FORMAT to the fn's wire format and this module speaks it on
// stdin and stdout: default (one call per process), json, json-http and
// http (one process serves call after call, one call at a time); or, in
// Fn's http-stream, as HTTP/1.1 on the unix socket FN_LISTENER names,
// until SIGTERM. Stdout is the channel to kiln, so console.log goes to
// stderr, the call's log.
//
// To stream a body, return an async iterable or a generator (an
// `async function *` handler, typically) of Buffers or strings, or a
// Response with one as its body: each piece is sent as soon as it is
// produced, status and headers with the first, in http (as a chunked
// response) and http-stream. The other formats cannot stream: the pieces
// are joined and sent whole.
//
// Run it as `node fdk.js /function/func.js`, where func.js exports the
// handler (module.exports = handler, or exports.handler), or call
// require('fdk').handle(handler) from your own main.

const fs = require('fs')
const http = require('http')
const path = require('path')

const MAX_HEADER_BYTES = 1 << 20

function canonical (name) {
  return String(name).split('-').map(p => p.charAt(0).toUpperCase() + p.slice(1).toLowerCase()).join('-')
}

// Headers maps canonical names to arrays of values.
class Headers {
  constructor (init) {
    this.map = {}
    for (const [k, vs] of Object.entries(init || {})) {
      for (const v of (Array.isArray(vs) ? vs : [vs])) this.add(k, v)
    }
  }

  add (name, value) { (this.map[canonical(name)] = this.map[canonical(name)] || []).push(String(value)) }
  set (name, value) { this.map[canonical(name)] = [String(value)] }
  get (name) { const vs = this.map[canonical(name)]; return vs && vs.length ? vs[0] : undefined }
  getAll (name) { return (this.map[canonical(name)] || []).slice() }
  has (name) { return canonical(name) in this.map }
  delete (name) { delete this.map[canonical(name)] }
  toJSON () {
    const out = {}
    for (const [k, vs] of Object.entries(this.map)) if (k !== 'Content-Length') out[k] = vs.slice()
    return out
  }
}

class Response {
  constructor (body, { status = 200, headers = {}, contentType } = {}) {
    this.body = body
    this.status = status
    this.headers = new Headers(headers)
    if (contentType) this.headers.set('Content-Type', contentType)
  }
}

class Context {
  constructor (format, { callId = '', deadline = '', method = '', requestURL = '', headers = {} } = {}) {
    this.format = format
    this.callId = callId
    this.deadline = deadline
    this.method = method
    this.requestURL = requestURL
    this.headers = headers instanceof Headers ? headers : new Headers(headers)
    this.config = Object.assign({}, process.env)
    this.responseStatus = 200
    this.responseHeaders = new Headers()
  }

  header (name) { return this.headers.get(name) }
  setStatus (code) { this.responseStatus = Number(code) }
  setHeader (name, value) { this.responseHeaders.set(name, value) }
  addHeader (name, value) { this.responseHeaders.add(name, value) }
  setContentType (value) { this.responseHeaders.set('Content-Type', value) }
}

class ProtocolError extends Error {}

function bodyBytes (ctx, value) {
  if (value === undefined || value === null) return Buffer.alloc(0)
  if (Buffer.isBuffer(value)) return value
  if (value instanceof Uint8Array) return Buffer.from(value)
  if (typeof value === 'string') {
    if (!ctx.responseHeaders.has('Content-Type')) ctx.setContentType('text/plain; charset=utf-8')
    return Buffer.from(value, 'utf8')
  }
  if (!ctx.responseHeaders.has('Content-Type')) ctx.setContentType('application/json')
  return Buffer.from(JSON.stringify(value), 'utf8')
}

// isStream tells a streamed body from a whole one: Buffers, strings and
// arrays are iterable too, but they are not iterators.
function isStream (v) {
  return v !== null && typeof v === 'object' && !Buffer.isBuffer(v) &&
    (typeof v[Symbol.asyncIterator] === 'function' || (typeof v.next === 'function' && typeof v[Symbol.iterator] === 'function'))
}

function iteratorOf (v) {
  return typeof v[Symbol.asyncIterator] === 'function' ? v[Symbol.asyncIterator]() : v[Symbol.iterator]()
}

// piece is one piece of a streamed body as a Buffer.
function piece (ctx, item) {
  if (Buffer.isBuffer(item)) return item
  if (item instanceof Uint8Array) return Buffer.from(item)
  if (typeof item === 'string') {
    if (!ctx.responseHeaders.has('Content-Type')) ctx.setContentType('text/plain; charset=utf-8')
    return Buffer.from(item, 'utf8')
  }
  throw new TypeError(`a streamed body is made of Buffers or strings, not ${typeof item}`)
}

async function closeIterator (it) {
  if (it && typeof it.return === 'function') {
    try { await it.return() } catch (e) { /* it failed already; the call has its answer */ }
  }
}

// restOf yields the pieces after the first. Once the head is out a failure
// can only end the body early, cleanly, so that the container serves on.
async function * restOf (ctx, it) {
  try {
    for (;;) {
      const n = await it.next()
      if (n.done) return
      yield piece(ctx, n.value)
    }
  } catch (e) {
    console.error(e && e.stack ? e.stack : e)
    console.error('fdk: the handler failed after its response began; the body ends here')
  } finally {
    await closeIterator(it)
  }
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/

// checkAnswer refuses what cannot go into an HTTP head, as kiln's codecs
// do: a status that is not final, a header that would split the frame.
function checkAnswer (status, headers) {
  if (!Number.isInteger(status) || status < 200 || status > 999) throw new Error(`invalid status ${status}`)
  for (const [k, vs] of Object.entries(headers.map)) {
    if (!TOKEN.test(k)) throw new Error(`invalid header name ${JSON.stringify(k)}`)
    for (const v of vs) if (BAD_VALUE.test(v)) throw new Error(`invalid value for header ${JSON.stringify(k)}`)
  }
}

// call runs the handler: { status, headers, body, rest }. body is the
// body, or with stream set and a handler that streams, its first piece,
// and rest then yields the others (it is null otherwise). A failure before
// anything is sent becomes a 500, so one bad call does not take down a
// warm container.
async function call (handler, ctx, body, stream = false) {
  let it = null
  try {
    let value = await handler(ctx, body)
    if (value instanceof Response) {
      ctx.setStatus(value.status)
      for (const [k, vs] of Object.entries(value.headers.map)) ctx.responseHeaders.map[k] = vs.slice()
      value = value.body
    }
    let data = null
    let rest = null
    if (isStream(value)) {
      it = iteratorOf(value)
      if (stream) {
        // The head goes with the first piece: until then the handler may
        // still set status and headers.
        const first = await it.next()
        data = first.done ? Buffer.alloc(0) : piece(ctx, first.value)
        if (!first.done) rest = restOf(ctx, it)
      } else {
        const parts = []
        for (let n = await it.next(); !n.done; n = await it.next()) parts.push(piece(ctx, n.value))
        data = Buffer.concat(parts)
      }
    } else {
      data = bodyBytes(ctx, value)
    }
    const status = ctx.responseStatus
    checkAnswer(status, ctx.responseHeaders)
    return { status, headers: ctx.responseHeaders, body: data, rest }
  } catch (e) {
    console.error(e && e.stack ? e.stack : e)
    await closeIterator(it)
    return {
      status: 500,
      headers: new Headers({ 'Content-Type': 'text/plain; charset=utf-8' }),
      body: Buffer.from(`handler error: ${e && e.message ? e.message : e}`, 'utf8'),
      rest: null
    }
  }
}

// Input is the one buffer of stdin for the life of the process: a frame
// may arrive in the same chunk as the end of the previous one. Readers
// wait for bytes with need(); the stream ending wakes them with EOF.
class Input {
  constructor (stream) {
    this.buf = Buffer.alloc(0)
    this.ended = false
    this.waiter = null
    stream.on('data', chunk => { this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk; this.wake() })
    stream.on('end', () => { this.ended = true; this.wake() })
    stream.on('error', () => { this.ended = true; this.wake() })
  }

  wake () { const w = this.waiter; this.waiter = null; if (w) w() }
  more () { return new Promise(resolve => { this.waiter = resolve }) }

  // line returns the next line without its ending, or null at a clean end.
  async line (limit = MAX_HEADER_BYTES) {
    for (;;) {
      const i = this.buf.indexOf(10)
      if (i >= 0) {
        let line = this.buf.subarray(0, i)
        this.buf = this.buf.subarray(i + 1)
        if (line.length && line[line.length - 1] === 13) line = line.subarray(0, line.length - 1)
        return line
      }
      if (this.buf.length > limit) throw new ProtocolError(`line over ${limit} bytes`)
      if (this.ended) {
        if (this.buf.length === 0) return null
        throw new ProtocolError('input ended in the middle of a line')
      }
      await this.more()
    }
  }

  async exactly (n) {
    while (this.buf.length < n) {
      if (this.ended) throw new ProtocolError('input ended in the middle of a body')
      await this.more()
    }
    const out = Buffer.from(this.buf.subarray(0, n))
    this.buf = this.buf.subarray(n)
    return out
  }

  async nonBlankLine () {
    for (;;) {
      const l = await this.line()
      if (l === null || l.toString('latin1').trim() !== '') return l
    }
  }

  async rest () {
    while (!this.ended) await this.more()
    const out = this.buf
    this.buf = Buffer.alloc(0)
    return out
  }
}

function write (data) {
  return new Promise((resolve, reject) => process.stdout.write(data, err => err ? reject(err) : resolve()))
}

function parseJSON (line, what) {
  try {
    return JSON.parse(line.toString('utf8'))
  } catch (e) {
    throw new ProtocolError(`${what}: ${e.message}`)
  }
}

async function serveJSON (handler, input) {
  for (;;) {
    const line = await input.nonBlankLine()
    if (line === null) return
    const f = parseJSON(line, 'json request')
    const proto = f.protocol || {}
    const headers = new Headers(proto.headers || {})
    if (f.content_type && !headers.has('Content-Type')) headers.set('Content-Type', f.content_type)
    const ctx = new Context('json', { callId: f.call_id, deadline: f.deadline, method: proto.method, requestURL: proto.request_url, headers })
    const r = await call(handler, ctx, Buffer.from(f.body || '', 'utf8'))
    const resp = { body: r.body.toString('utf8'), content_type: r.headers.get('Content-Type') || '', protocol: { status_code: r.status, headers: r.headers.toJSON() } }
    await write(JSON.stringify(resp) + '\n')
  }
}

async function serveJSONHTTP (handler, input) {
  for (;;) {
    const line = await input.nonBlankLine()
    if (line === null) return
    const head = parseJSON(line, 'json-http request header')
    const blank = await input.line(2)
    if (blank === null || blank.length !== 0) throw new ProtocolError('json-http request header not followed by an empty line')
    const n = Number(head.content_length || 0)
    if (!Number.isInteger(n) || n < 0) throw new ProtocolError(`bad content_length ${head.content_length}`)
    const body = await input.exactly(n)
    const ctx = new Context('json-http', { callId: head.call_id, deadline: head.deadline, method: head.method, requestURL: head.request_url, headers: head.headers || {} })
    const r = await call(handler, ctx, body)
    const frame = JSON.stringify({ status_code: r.status, headers: r.headers.toJSON(), content_length: r.body.length })
    await write(Buffer.concat([Buffer.from(frame + '\n\n', 'utf8'), r.body]))
  }
}

const REASONS = { 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' }

// readHTTPRequest reads one HTTP/1.1 request, its body whole (with a
// length or chunked), or returns null at a clean end of input.
async function readHTTPRequest (input) {
  const start = await input.nonBlankLine()
  if (start === null) return null
  const parts = start.toString('latin1').split(' ')
  if (parts.length !== 3 || !parts[2].startsWith('HTTP/1.')) throw new ProtocolError(`http request line ${JSON.stringify(start.toString('latin1').slice(0, 100))}`)
  const [method, target] = parts
  const headers = new Headers()
  let budget = MAX_HEADER_BYTES
  for (;;) {
    const line = await input.line(budget)
    if (line === null) throw new ProtocolError('input ended in the middle of a request header')
    budget -= line.length + 2
    if (line.length === 0) break
    const s = line.toString('latin1')
    const i = s.indexOf(':')
    if (i <= 0) throw new ProtocolError(`http header line ${JSON.stringify(s.slice(0, 100))}`)
    headers.add(s.slice(0, i).trim(), s.slice(i + 1).trim())
  }
  let body
  if (headers.get('Transfer-Encoding')) {
    body = await readChunked(input)
  } else {
    body = await input.exactly(Number(headers.get('Content-Length') || 0))
  }
  return { method, target, headers, body }
}

// drain lets a streaming handler run to its end when its answer has no
// body (204, 304): what it yields has no place.
async function drain (rest) {
  for (let n = await rest.next(); !n.done; n = await rest.next());
}

function chunk (data) {
  // An empty chunk would end the body.
  if (data.length === 0) return Buffer.alloc(0)
  return Buffer.concat([Buffer.from(data.length.toString(16) + '\r\n', 'latin1'), data, Buffer.from('\r\n', 'latin1')])
}

async function serveHTTP (handler, input) {
  for (;;) {
    const req = await readHTTPRequest(input)
    if (req === null) return
    const { method, target, headers, body } = req
    const callId = headers.get('Fn_call_id') || ''
    const deadline = headers.get('Fn_deadline') || ''
    const requestURL = headers.get('Fn_request_url') || `http://${headers.get('Host') || ''}${target}`
    for (const k of ['Fn_call_id', 'Fn_deadline', 'Fn_method', 'Fn_request_url', 'Content-Length', 'Transfer-Encoding']) headers.delete(k)
    const ctx = new Context('http', { callId, deadline, method, requestURL, headers })
    const r = await call(handler, ctx, body, true)
    const head = [`HTTP/1.1 ${r.status} ${REASONS[r.status] || 'Status'}`]
    for (const [k, vs] of Object.entries(r.headers.map)) {
      if (k === 'Content-Length' || k === 'Transfer-Encoding') continue
      for (const v of vs) head.push(`${k}: ${v}`)
    }
    const headBytes = () => Buffer.from(head.join('\r\n') + '\r\n\r\n', 'latin1')
    const bodyAllowed = r.status !== 204 && r.status !== 304
    if (!r.rest) {
      let data = r.body
      if (bodyAllowed) head.push(`Content-Length: ${data.length}`)
      else data = Buffer.alloc(0)
      await write(Buffer.concat([headBytes(), data]))
      continue
    }
    if (!bodyAllowed) {
      await write(headBytes())
      await drain(r.rest)
      continue
    }
    // Each piece is one chunk, out on stdout as soon as the handler
    // yields it.
    head.push('Transfer-Encoding: chunked')
    await write(Buffer.concat([headBytes(), chunk(r.body)]))
    for await (const p of r.rest) if (p.length) await write(chunk(p))
    await write('0\r\n\r\n')
  }
}

async function readChunked (input) {
  const chunks = []
  for (;;) {
    const sizeLine = await input.line(4096)
    if (sizeLine === null) throw new ProtocolError('input ended in a chunked body')
    const size = parseInt(sizeLine.toString('latin1').split(';')[0].trim() || '0', 16)
    if (size === 0) {
      for (;;) { const l = await input.line(); if (l === null || l.length === 0) break }
      return Buffer.concat(chunks)
    }
    chunks.push(await input.exactly(size))
    const crlf = await input.line(2)
    if (crlf === null || crlf.length !== 0) throw new ProtocolError('chunk not followed by CRLF')
  }
}

async function serveDefault (handler, input) {
  const headers = new Headers()
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('FN_HEADER_') && k.length > 'FN_HEADER_'.length) headers.add(k.slice('FN_HEADER_'.length), v)
  }
  const env = process.env
  const ctx = new Context('default', { callId: env.FN_CALL_ID, deadline: env.FN_DEADLINE, method: env.FN_METHOD, requestURL: env.FN_REQUEST_URL, headers })
  const r = await call(handler, ctx, await input.rest())
  await write(r.body)
  // The default format has no status line: a failure is the exit code.
  return r.status >= 500 ? 1 : 0
}

// --- http-stream ---

const FN_HTTP_H = 'fn-http-h-'

// streamContext reads the client's call out of kilnd's request: its
// headers travel under Fn-Http-H-, all but Content-Type, which is itself.
// rawHeaders keeps repeated headers apart, where req.headers joins them.
function streamContext (req) {
  const headers = new Headers()
  const raw = req.rawHeaders
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i]
    if (k.length > FN_HTTP_H.length && k.slice(0, FN_HTTP_H.length).toLowerCase() === FN_HTTP_H) headers.add(k.slice(FN_HTTP_H.length), raw[i + 1])
  }
  if (req.headers['content-type'] !== undefined) headers.set('Content-Type', req.headers['content-type'])
  const h = req.headers
  return new Context('http-stream', {
    callId: h['fn-call-id'] || '',
    deadline: h['fn-deadline'] || '',
    method: h['fn-http-method'] || req.method,
    requestURL: h['fn-http-request-url'] || `http://${h.host || ''}${req.url}`,
    headers
  })
}

function readAll (req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

function resWrite (res, data) {
  return new Promise((resolve, reject) => res.write(data, err => err ? reject(err) : resolve()))
}

// answer sends the response on kilnd's connection: status 200 of its own,
// the client's status and headers in Fn-Http-* headers; chunked, each
// piece written as soon as the handler yields it, when the handler
// streams.
async function answer (res, r) {
  let { status, headers, body, rest } = r
  if (status === 204 || status === 304) {
    if (rest) await drain(rest)
    body = Buffer.alloc(0)
    rest = null
  }
  res.statusCode = 200
  res.setHeader('Fn-Http-Status', String(status))
  for (const [k, vs] of Object.entries(headers.map)) {
    if (k === 'Content-Length' || k === 'Transfer-Encoding') continue
    res.setHeader(k === 'Content-Type' ? k : 'Fn-Http-H-' + k, vs)
  }
  if (!rest) {
    res.setHeader('Content-Length', body.length)
    await new Promise(resolve => res.end(body, resolve))
    return
  }
  if (body.length) await resWrite(res, body)
  else res.flushHeaders()
  for await (const p of rest) if (p.length) await resWrite(res, p)
  await new Promise(resolve => res.end(resolve))
}

function removeFiles (...paths) {
  for (const p of paths) {
    try { fs.unlinkSync(p) } catch (e) { if (e.code !== 'ENOENT') console.error(`fdk: ${e.message}`) }
  }
}

// serveHTTPStream serves calls on the socket FN_LISTENER names until
// SIGTERM or SIGINT. The socket is made under another name beside it, and
// FN_LISTENER's path becomes a relative symlink to it, so it appears at
// once, accepting; kilnd follows a link only to a bare file name in the
// same directory. On the signal the link goes first, then the idle
// connection; a call in progress finishes before the process exits.
function serveHTTPStream (handler) {
  return new Promise((resolve, reject) => {
    const listener = process.env.FN_LISTENER || ''
    if (!listener) throw new ProtocolError('http-stream needs FN_LISTENER=unix:/path/to/lsnr.sock')
    if (!listener.startsWith('unix:') || listener.length === 'unix:'.length) throw new ProtocolError(`FN_LISTENER ${JSON.stringify(listener)} is not unix:PATH`)
    const link = listener.slice('unix:'.length)
    const phony = path.join(path.dirname(link), 'phony' + path.basename(link))
    // Leftovers of an earlier process in the same directory would make the
    // listen or the link fail.
    removeFiles(link, phony)
    // One call at a time, as on stdin: handlers may count on it.
    let queue = Promise.resolve()
    let busy = 0
    let stopping = false
    const server = http.createServer({ requestTimeout: 0, headersTimeout: 0 }, (req, res) => {
      busy++
      const run = queue.then(async () => {
        const body = await readAll(req)
        await answer(res, await call(handler, streamContext(req), body, true))
      })
      queue = run.catch(() => {})
      run.catch(err => {
        console.error(`fdk: http-stream: ${err && err.message ? err.message : err}`)
        res.destroy()
      }).finally(() => {
        busy--
        if (stopping) server.closeAllConnections()
      })
    })
    // kilnd keeps its connection open between calls for as long as it
    // likes; Node would close it after 5 s.
    server.keepAliveTimeout = 0
    server.on('error', reject)
    server.listen(phony, () => {
      try {
        fs.chmodSync(phony, 0o666) // kilnd need not run as the function's user
        fs.symlinkSync(path.basename(phony), link)
      } catch (e) {
        server.close()
        removeFiles(phony)
        reject(e)
      }
    })
    const stop = () => {
      if (stopping) return
      stopping = true
      removeFiles(link) // kilnd must not find a socket that is going away
      server.close(() => { removeFiles(link, phony); resolve() })
      server.closeIdleConnections()
      if (busy === 0) server.closeAllConnections()
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
}

const SERVERS = { json: serveJSON, 'json-http': serveJSONHTTP, http: serveHTTP }

// handle serves calls with handler until kiln closes stdin (in
// http-stream, until SIGTERM), then exits.
function handle (handler, format) {
  format = format || process.env.FN_FORMAT || 'default'
  // Stray logs must not reach kiln as part of a frame.
  console.log = console.error
  console.info = console.error
  console.debug = console.error
  let run
  if (format === 'default') run = serveDefault(handler, new Input(process.stdin))
  else if (format === 'http-stream') run = serveHTTPStream(handler).then(() => 0)
  else if (SERVERS[format]) run = SERVERS[format](handler, new Input(process.stdin)).then(() => 0)
  else run = Promise.reject(new ProtocolError(`format ${JSON.stringify(format)} is not supported by the Node FDK`))
  run.then(code => process.exit(code), err => {
    console.error(`fdk: ${err && err.message ? err.message : err}`)
    process.exit(1)
  })
}

function load (path) {
  const mod = require(path)
  const handler = typeof mod === 'function' ? mod : (mod && (mod.handler || mod.default))
  if (typeof handler !== 'function') {
    fs.writeSync(2, `fdk: ${path} exports no handler function (module.exports = handler, or exports.handler)\n`)
    process.exit(1)
  }
  return handler
}

module.exports = { handle, Context, Response, Headers }

if (require.main === module) {
  if (process.argv.length < 3) {
    fs.writeSync(2, 'usage: node fdk.js FUNC.js\n')
    process.exit(2)
  }
  handle(load(require('path').resolve(process.argv[2])))
}
