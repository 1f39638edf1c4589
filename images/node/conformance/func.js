'use strict'
// The Node.js side of kiln's FDK conformance check: every runtime has a
// function answering the same JSON, so one test can call each of them in
// every format it speaks and expect the same answer.

module.exports = async function handler (ctx, data) {
  const text = data.toString('utf8')
  let payload = text
  try {
    payload = JSON.parse(text)
  } catch (e) {
    // Not JSON: answered as the string it is.
  }
  ctx.setContentType('application/json')
  const env1 = process.env.ENV1
  const header = ctx.header('X-Test')
  return {
    normal: 'Hello World!',
    env1: env1 === undefined ? null : env1,
    payload,
    header: header === undefined ? null : header
  }
}
