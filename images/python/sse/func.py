"""Server-sent events: answers text/event-stream and sends "data: event N"
five times, 200 ms apart. The handler returns a generator, so each event
reaches the client as soon as it is yielded in the http and http-stream
formats; in the others all five come at the end. The request headers
X-Events and X-Gap-Ms change the count and the gap (in milliseconds)."""

import time


def _number(ctx, name, default):
    try:
        n = int(ctx.header(name, ""))
    except ValueError:
        return default
    return n if n >= 0 else default


def handler(ctx, data):
    count = _number(ctx, "X-Events", 5)
    gap = _number(ctx, "X-Gap-Ms", 200) / 1000.0
    ctx.set_content_type("text/event-stream")
    # Proxies between kiln and the client must not hold events back.
    ctx.set_header("Cache-Control", "no-cache")

    def events():
        for i in range(1, count + 1):
            if i > 1:
                time.sleep(gap)
            yield "data: event %d\n\n" % i

    return events()
