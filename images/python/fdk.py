"""kiln's Python function development kit.

A function is a callable ``handler(ctx, data)``: ``data`` is the request
body (bytes) and the return value the response body. Return ``bytes`` or
``str`` as they are, a ``dict`` or ``list`` as JSON, ``None`` for no body,
or a ``Response`` to set everything at once. ``ctx`` tells about the call
(``call_id``, ``deadline``, ``method``, ``request_url``, ``headers``,
``config``, ``format``) and sets the answer's status and headers
(``set_status``, ``set_header``, ``add_header``, ``set_content_type``).

kiln runs the function with ``FN_FORMAT`` set to the wire format of the
fn, and this module speaks it on stdin and stdout: ``default`` (one call
per process), ``json``, ``json-http`` and ``http`` (one process serves
call after call). Stdout is the channel to kiln, so ``print`` is sent to
stderr instead, where kiln keeps it as the call's log.

Run it as ``python3 fdk.py /function/func.py [handler]``, or call
``fdk.handle(handler)`` from your own main.
"""

import importlib.util
import json
import os
import sys
import traceback

__all__ = ["Context", "Response", "handle"]

# Bounds on what is read before a body, so a malformed stream cannot make
# the function buffer without end. kiln's own limits are the same.
MAX_HEADER_BYTES = 1 << 20

_CANON_CACHE = {}


def _canonical(name):
    """Canonical MIME header form, as Go spells it: x-test -> X-Test."""
    c = _CANON_CACHE.get(name)
    if c is None:
        c = "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))
        if len(_CANON_CACHE) < 1024:
            _CANON_CACHE[name] = c
    return c


class Headers(dict):
    """Header name -> list of values, with case-insensitive lookup."""

    def __init__(self, items=None):
        super().__init__()
        for k, vs in (items or {}).items():
            if isinstance(vs, str):
                vs = [vs]
            for v in vs:
                self.add(k, v)

    def add(self, name, value):
        self.setdefault(_canonical(name), []).append(str(value))

    def set(self, name, value):
        self[_canonical(name)] = [str(value)]

    def get(self, name, default=None):
        """The first value of a header, or default."""
        vs = super().get(_canonical(name))
        return vs[0] if vs else default

    def get_all(self, name):
        return list(super().get(_canonical(name), []))

    def delete(self, name):
        self.pop(_canonical(name), None)


class Response:
    """A complete answer: body, status and headers."""

    def __init__(self, body=b"", status=200, headers=None, content_type=None):
        self.body = body
        self.status = status
        self.headers = Headers(headers)
        if content_type:
            self.headers.set("Content-Type", content_type)


class Context:
    """One call: what kiln says about it, and the answer being built."""

    def __init__(self, fmt, call_id="", deadline="", method="", request_url="", headers=None):
        self.format = fmt
        self.call_id = call_id
        self.deadline = deadline
        self.method = method
        self.request_url = request_url
        self.headers = Headers(headers)
        self.config = dict(os.environ)
        self.response_status = 200
        self.response_headers = Headers()

    def header(self, name, default=None):
        """First value of a request header, case-insensitively."""
        return self.headers.get(name, default)

    def set_status(self, code):
        self.response_status = int(code)

    def set_header(self, name, value):
        self.response_headers.set(name, value)

    def add_header(self, name, value):
        self.response_headers.add(name, value)

    def set_content_type(self, value):
        self.response_headers.set("Content-Type", value)


class ProtocolError(Exception):
    """The input is not a frame of the expected format."""


class _Reader:
    """The one buffered reader of stdin, for the life of the process: a
    frame may arrive in the same read as the end of the previous one, so a
    reader per call would lose bytes."""

    def __init__(self, raw):
        self.raw = raw

    def line(self, limit=MAX_HEADER_BYTES):
        """The next line without its ending; None at a clean end of input."""
        data = self.raw.readline(limit + 2)
        if not data:
            return None
        if not data.endswith(b"\n"):
            if len(data) > limit:
                raise ProtocolError("line over %d bytes" % limit)
            raise ProtocolError("input ended in the middle of a line")
        return data[:-2] if data.endswith(b"\r\n") else data[:-1]

    def exactly(self, n):
        chunks = []
        while n > 0:
            chunk = self.raw.read(n)
            if not chunk:
                raise ProtocolError("input ended in the middle of a body")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def skip_blank_lines(self):
        while True:
            line = self.line()
            if line is None or line.strip():
                return line


def _body_bytes(ctx, value):
    """Turn a handler's return value into body bytes, setting the content
    type when the value says what it is."""
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        if "Content-Type" not in ctx.response_headers:
            ctx.set_content_type("text/plain; charset=utf-8")
        return value.encode("utf-8")
    if "Content-Type" not in ctx.response_headers:
        ctx.set_content_type("application/json")
    return json.dumps(value).encode("utf-8")


def _call(handler, ctx, body):
    """Run the handler; a failure becomes a 500 so one bad call does not
    take down a warm container."""
    try:
        value = handler(ctx, body)
        if isinstance(value, Response):
            ctx.set_status(value.status)
            for k, vs in value.headers.items():
                ctx.response_headers[k] = list(vs)
            value = value.body
        data = _body_bytes(ctx, value)
        status = ctx.response_status
        if not 100 <= status <= 999:
            raise ValueError("invalid status %r" % status)
        return status, ctx.response_headers, data
    except Exception as e:  # noqa: BLE001 - any handler failure is the call's 500
        traceback.print_exc(file=sys.stderr)
        headers = Headers({"Content-Type": "text/plain; charset=utf-8"})
        return 500, headers, ("handler error: %s: %s" % (type(e).__name__, e)).encode("utf-8")


def _headers_json(headers):
    return {k: list(vs) for k, vs in headers.items() if k != "Content-Length"}


# --- formats -----------------------------------------------------------


def _serve_json(handler, reader, out):
    while True:
        line = reader.skip_blank_lines()
        if line is None:
            return
        try:
            frame = json.loads(line)
        except ValueError as e:
            raise ProtocolError("json request: %s" % e)
        proto = frame.get("protocol") or {}
        headers = Headers(proto.get("headers") or {})
        if frame.get("content_type") and headers.get("Content-Type") is None:
            headers.set("Content-Type", frame["content_type"])
        ctx = Context("json", frame.get("call_id", ""), frame.get("deadline", ""),
                      proto.get("method", ""), proto.get("request_url", ""), headers)
        status, rh, body = _call(handler, ctx, (frame.get("body") or "").encode("utf-8"))
        resp = {
            "body": body.decode("utf-8", "replace"),
            "content_type": rh.get("Content-Type", ""),
            "protocol": {"status_code": status, "headers": _headers_json(rh)},
        }
        _write(out, json.dumps(resp).encode("utf-8") + b"\n")


def _serve_json_http(handler, reader, out):
    while True:
        line = reader.skip_blank_lines()
        if line is None:
            return
        try:
            head = json.loads(line)
        except ValueError as e:
            raise ProtocolError("json-http request header: %s" % e)
        if reader.line(2) != b"":
            raise ProtocolError("json-http request header not followed by an empty line")
        n = int(head.get("content_length") or 0)
        if n < 0:
            raise ProtocolError("negative content_length")
        body = reader.exactly(n)
        ctx = Context("json-http", head.get("call_id", ""), head.get("deadline", ""),
                      head.get("method", ""), head.get("request_url", ""), head.get("headers") or {})
        status, rh, data = _call(handler, ctx, body)
        frame = json.dumps({"status_code": status, "headers": _headers_json(rh),
                            "content_length": len(data)}).encode("utf-8")
        _write(out, frame + b"\n\n" + data)


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


def _serve_http(handler, reader, out):
    while True:
        start = reader.skip_blank_lines()
        if start is None:
            return
        parts = start.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ProtocolError("http request line %r" % start[:100])
        method, target = parts[0], parts[1]
        headers = Headers()
        budget = MAX_HEADER_BYTES
        while True:
            line = reader.line(budget)
            if line is None:
                raise ProtocolError("input ended in the middle of a request header")
            budget -= len(line) + 2
            if line == b"":
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name.strip():
                raise ProtocolError("http header line %r" % line[:100])
            headers.add(name.strip(), value.strip())
        if headers.get("Transfer-Encoding"):
            body = _read_chunked(reader)
        else:
            n = int(headers.get("Content-Length", "0") or 0)
            body = reader.exactly(n)
        call_id = headers.get("Fn_call_id", "")
        deadline = headers.get("Fn_deadline", "")
        url = headers.get("Fn_request_url") or ("http://%s%s" % (headers.get("Host", ""), target))
        for k in ("Fn_call_id", "Fn_deadline", "Fn_method", "Fn_request_url", "Content-Length",
                  "Transfer-Encoding"):
            headers.delete(k)
        ctx = Context("http", call_id, deadline, method, url, headers)
        status, rh, data = _call(handler, ctx, body)
        lines = ["HTTP/1.1 %d %s" % (status, _REASONS.get(status, "Status"))]
        for k, vs in rh.items():
            if k in ("Content-Length", "Transfer-Encoding"):
                continue
            for v in vs:
                lines.append("%s: %s" % (k, v))
        if status in (204, 304):
            data = b""
        else:
            lines.append("Content-Length: %d" % len(data))
        _write(out, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + data)


def _read_chunked(reader):
    chunks = []
    while True:
        size_line = reader.line(4096)
        if size_line is None:
            raise ProtocolError("input ended in a chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while reader.line() not in (b"", None):
                pass
            return b"".join(chunks)
        chunks.append(reader.exactly(size))
        if reader.line(2) != b"":
            raise ProtocolError("chunk not followed by CRLF")


def _serve_default(handler, stdin, out):
    headers = Headers()
    for k, v in os.environ.items():
        if k.startswith("FN_HEADER_") and len(k) > len("FN_HEADER_"):
            headers.add(k[len("FN_HEADER_"):], v)
    ctx = Context("default", os.environ.get("FN_CALL_ID", ""), os.environ.get("FN_DEADLINE", ""),
                  os.environ.get("FN_METHOD", ""), os.environ.get("FN_REQUEST_URL", ""), headers)
    status, _, data = _call(handler, ctx, stdin.read())
    _write(out, data)
    # The default format has no status line: a failure is the exit code.
    if status >= 500:
        sys.exit(1)


def _write(out, data):
    out.write(data)
    out.flush()


_SERVERS = {"json": _serve_json, "json-http": _serve_json_http, "http": _serve_http}


def handle(handler, fmt=None):
    """Serve calls with handler until kiln closes stdin, then exit."""
    fmt = fmt or os.environ.get("FN_FORMAT") or "default"
    out = sys.stdout.buffer
    # Stray prints must not reach kiln as part of a frame.
    sys.stdout = sys.stderr
    try:
        if fmt == "default":
            _serve_default(handler, sys.stdin.buffer, out)
        elif fmt in _SERVERS:
            _SERVERS[fmt](handler, _Reader(sys.stdin.buffer), out)
        else:
            raise ProtocolError("format %r is not supported by the Python FDK" % fmt)
    except (ProtocolError, BrokenPipeError, ValueError) as e:
        print("fdk: %s" % e, file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


def _load(path, name):
    spec = importlib.util.spec_from_file_location("func", path)
    if spec is None or spec.loader is None:
        raise SystemExit("fdk: cannot load %s" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["func"] = module
    spec.loader.exec_module(module)
    handler = getattr(module, name, None)
    if not callable(handler):
        raise SystemExit("fdk: %s has no function %r" % (path, name))
    return handler


if __name__ == "__main__":
    # Importable as "fdk" from the function, whichever way it was started.
    sys.modules.setdefault("fdk", sys.modules[__name__])
    if len(sys.argv) < 2:
        raise SystemExit("usage: fdk.py FUNC.py [HANDLER]")
    handle(_load(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "handler"))
