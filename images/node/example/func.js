// example: a kiln function. kiln's Node FDK calls the exported handler
// for each request: data is the body (a Buffer), the return value the answer.
module.exports = async (ctx, data) => {
  const name = data.toString().trim() || 'World'
  // console.log goes to stderr, which kiln keeps as the call's log
  // (kiln logs example example -f); stdout carries the frames.
  console.log('greeting', name)
  ctx.setHeader('Content-Type', 'text/plain; charset=utf-8')
  return `Hello, ${name}!`
}
