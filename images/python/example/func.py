# example: a kiln function. kiln's Python FDK calls handler(ctx, data)
# for each request: data is the body (bytes), the return value the answer.


def handler(ctx, data):
    name = data.decode(errors="replace").strip() or "World"
    # print goes to stderr, which kiln keeps as the call's log
    # (kiln logs example example -f); stdout carries the frames.
    print("greeting", name)
    ctx.set_header("Content-Type", "text/plain; charset=utf-8")
    return "Hello, %s!" % name
