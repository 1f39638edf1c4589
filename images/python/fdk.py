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
call after call); or, in Fn's ``http-stream``, as HTTP/1.1 on the unix
socket ``FN_LISTENER`` names, until SIGTERM. Stdout is the channel to
kiln, so ``print`` is sent to stderr instead, where kiln keeps it as the
call's log.

To stream a body, return an iterator (a generator, typically) of
``bytes`` or ``str`` pieces, or a ``Response`` with one as its body: each
piece is sent as soon as it is produced, status and headers with the
first, in ``http`` (as a chunked response) and ``http-stream``. The other
formats cannot stream: the pieces are joined and sent whole.

Run it as ``python3 fdk.py /function/func.py [handler]``, or call
``fdk.handle(handler)`` from your own main.
"""

import collections.abc
import importlib.util
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
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


def _is_stream(value):
    # bytes, str, dict and list are iterable but not iterators: they stay
    # whole bodies.
    return isinstance(value, collections.abc.Iterator)


def _piece(ctx, item):
    """One piece of a streamed body as bytes."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        if "Content-Type" not in ctx.response_headers:
            ctx.set_content_type("text/plain; charset=utf-8")
        return item.encode("utf-8")
    raise TypeError("a streamed body is made of bytes or str, not %s" % type(item).__name__)


def _rest(ctx, it):
    """The pieces after the first. Once the head is out a failure can only
    end the body early, cleanly, so that the container serves on."""
    try:
        for item in it:
            yield _piece(ctx, item)
    except Exception:  # noqa: BLE001 - the status is already sent
        traceback.print_exc(file=sys.stderr)
        print("fdk: the handler failed after its response began; the body ends here", file=sys.stderr)
    finally:
        close = getattr(it, "close", None)
        if close:
            close()


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_answer(status, headers):
    """Refuse what cannot go into an HTTP head, as kiln's codecs do: a
    status that is not final, a header that would split the frame."""
    if not 200 <= status <= 999:
        raise ValueError("invalid status %r" % status)
    for k, vs in headers.items():
        if not _TOKEN.match(k):
            raise ValueError("invalid header name %r" % k)
        for v in vs:
            if _BAD_VALUE.search(v):
                raise ValueError("invalid value for header %r" % k)


def _call(handler, ctx, body, stream=False):
    """Run the handler: (status, headers, data, rest). data is the body, or
    with stream set and a handler that streams, its first piece, and rest
    then iterates over the others (it is None otherwise). A failure before
    anything is sent becomes a 500, so one bad call does not take down a
    warm container."""
    it = None
    try:
        value = handler(ctx, body)
        if isinstance(value, Response):
            ctx.set_status(value.status)
            for k, vs in value.headers.items():
                ctx.response_headers[k] = list(vs)
            value = value.body
        rest = None
        if _is_stream(value):
            it = value
            data = None
            if stream:
                # The head goes with the first piece: until then the
                # handler may still set status and headers.
                for item in it:
                    data = _piece(ctx, item)
                    break
                if data is not None:
                    rest = _rest(ctx, it)
            if data is None:
                data = b"".join(_piece(ctx, item) for item in it)
        else:
            data = _body_bytes(ctx, value)
        status = ctx.response_status
        _check_answer(status, ctx.response_headers)
        return status, ctx.response_headers, data, rest
    except Exception as e:  # noqa: BLE001 - any handler failure is the call's 500
        traceback.print_exc(file=sys.stderr)
        if it is not None and hasattr(it, "close"):
            it.close()
        headers = Headers({"Content-Type": "text/plain; charset=utf-8"})
        return 500, headers, ("handler error: %s: %s" % (type(e).__name__, e)).encode("utf-8"), None


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
        status, rh, body, _ = _call(handler, ctx, (frame.get("body") or "").encode("utf-8"))
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
        status, rh, data, _ = _call(handler, ctx, body)
        frame = json.dumps({"status_code": status, "headers": _headers_json(rh),
                            "content_length": len(data)}).encode("utf-8")
        _write(out, frame + b"\n\n" + data)


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


def _read_http_request(reader):
    """One HTTP/1.1 request: (method, target, version, headers, body), or
    None at a clean end of input. The body is read whole, with a length or
    chunked."""
    start = reader.skip_blank_lines()
    if start is None:
        return None
    parts = start.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError("http request line %r" % start[:100])
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
    return parts[0], parts[1], parts[2], headers, body


def _send_http(out, head, data, rest, body_allowed=True):
    """Write one HTTP/1.1 response: head (the status line and headers, as
    lines) with a Content-Length body, or when rest is set, chunked, each
    piece as one chunk written as soon as the handler yields it."""
    if rest is None:
        if body_allowed:
            head.append("Content-Length: %d" % len(data))
        else:
            data = b""
        _write(out, _head_bytes(head) + data)
        return
    if not body_allowed:
        _write(out, _head_bytes(head))
        for _ in rest:  # the handler runs to its end; its body has no place
            pass
        return
    head.append("Transfer-Encoding: chunked")
    try:
        _write(out, _head_bytes(head) + _chunk(data))
        for piece in rest:
            if piece:
                _write(out, _chunk(piece))
    finally:
        rest.close()
    _write(out, b"0\r\n\r\n")


def _head_bytes(lines):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def _chunk(data):
    # An empty chunk would end the body.
    if not data:
        return b""
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _serve_http(handler, reader, out):
    while True:
        req = _read_http_request(reader)
        if req is None:
            return
        method, target, _, headers, body = req
        call_id = headers.get("Fn_call_id", "")
        deadline = headers.get("Fn_deadline", "")
        url = headers.get("Fn_request_url") or ("http://%s%s" % (headers.get("Host", ""), target))
        for k in ("Fn_call_id", "Fn_deadline", "Fn_method", "Fn_request_url", "Content-Length",
                  "Transfer-Encoding"):
            headers.delete(k)
        ctx = Context("http", call_id, deadline, method, url, headers)
        status, rh, data, rest = _call(handler, ctx, body, stream=True)
        head = ["HTTP/1.1 %d %s" % (status, _REASONS.get(status, "Status"))]
        for k, vs in rh.items():
            if k in ("Content-Length", "Transfer-Encoding"):
                continue
            for v in vs:
                head.append("%s: %s" % (k, v))
        _send_http(out, head, data, rest, status not in (204, 304))


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
    status, _, data, _ = _call(handler, ctx, stdin.read())
    _write(out, data)
    # The default format has no status line: a failure is the exit code.
    if status >= 500:
        sys.exit(1)


def _write(out, data):
    out.write(data)
    out.flush()


# --- http-stream -------------------------------------------------------

_FN_HTTP_H = "Fn-Http-H-"


def _stream_context(method, target, headers):
    """The client's call out of kilnd's request: its headers travel under
    Fn-Http-H-, all but Content-Type, which is itself."""
    h = Headers()
    for k, vs in headers.items():
        if k.startswith(_FN_HTTP_H) and len(k) > len(_FN_HTTP_H):
            for v in vs:
                h.add(k[len(_FN_HTTP_H):], v)
    if headers.get_all("Content-Type"):
        h["Content-Type"] = headers.get_all("Content-Type")
    url = headers.get("Fn-Http-Request-Url") or ("http://%s%s" % (headers.get("Host", ""), target))
    return Context("http-stream", headers.get("Fn-Call-Id", ""), headers.get("Fn-Deadline", ""),
                   headers.get("Fn-Http-Method") or method, url, h)


class _StreamConnection(socketserver.StreamRequestHandler):
    """kilnd's connection: keep-alive, one call after another."""

    def handle(self):
        srv = self.server
        with srv.conns_lock:
            if srv.stopping:
                return
            srv.conns.add(self.connection)
        try:
            reader = _Reader(self.rfile)
            while True:
                req = _read_http_request(reader)
                if req is None:
                    return
                method, target, version, headers, body = req
                ctx = _stream_context(method, target, headers)
                with srv.call_lock:
                    status, rh, data, rest = _call(srv.handler, ctx, body, stream=True)
                    if status in (204, 304):
                        for _ in rest or ():
                            pass
                        data, rest = b"", None
                    head = ["HTTP/1.1 200 OK", "Fn-Http-Status: %d" % status]
                    for k, vs in rh.items():
                        if k in ("Content-Length", "Transfer-Encoding"):
                            continue
                        name = k if k == "Content-Type" else _FN_HTTP_H + k
                        for v in vs:
                            head.append("%s: %s" % (name, v))
                    _send_http(self.wfile, head, data, rest)
                conn = (headers.get("Connection") or "").lower()
                if "close" in conn or version == "HTTP/1.0":
                    return
        except (ProtocolError, ValueError) as e:
            # The connection is out of step: only kilnd's next one is good.
            print("fdk: http-stream: %s" % e, file=sys.stderr)
        except OSError:
            pass  # kilnd went away; it will connect again
        finally:
            with srv.conns_lock:
                srv.conns.discard(self.connection)


class _StreamServer(socketserver.ThreadingUnixStreamServer):
    # server_close waits for the connection threads, so a call in
    # progress at shutdown ends before the process does.
    daemon_threads = False
    block_on_close = True

    def __init__(self, path, handler):
        self.handler = handler
        # One call at a time, as on stdin: handlers may count on it.
        self.call_lock = threading.Lock()
        self.conns = set()
        self.conns_lock = threading.Lock()
        self.stopping = False
        super().__init__(path, _StreamConnection)

    def stop_connections(self):
        """End every connection at its next request: an idle one at once
        (its read sees the end), a busy one once its answer is out."""
        with self.conns_lock:
            self.stopping = True
            for conn in self.conns:
                try:
                    conn.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


def _remove(*paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _serve_http_stream(handler):
    """Serve calls on the socket FN_LISTENER names until SIGTERM or SIGINT.
    The socket is made under another name beside it, and FN_LISTENER's path
    becomes a relative symlink to it, so it appears at once, accepting;
    kilnd follows a link only to a bare file name in the same directory."""
    listener = os.environ.get("FN_LISTENER", "")
    if not listener:
        raise ProtocolError("http-stream needs FN_LISTENER=unix:/path/to/lsnr.sock")
    if not listener.startswith("unix:") or len(listener) == len("unix:"):
        raise ProtocolError("FN_LISTENER %r is not unix:PATH" % listener)
    path = listener[len("unix:"):]
    phony = os.path.join(os.path.dirname(path), "phony" + os.path.basename(path))
    # Leftovers of an earlier process in the same directory would make the
    # bind or the link fail.
    _remove(path, phony)
    # Blocked before any thread starts, so that every thread inherits the
    # mask and sigwait below is the one to receive them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = _StreamServer(phony, handler)
    try:
        os.chmod(phony, 0o666)  # kilnd need not run as the function's user
        os.symlink(os.path.basename(phony), path)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        signal.sigwait(stop_signals)
        _remove(path)  # kilnd must not find a socket that is going away
        server.shutdown()
        server.stop_connections()
        server.server_close()
    finally:
        _remove(path, phony)


_SERVERS = {"json": _serve_json, "json-http": _serve_json_http, "http": _serve_http}


def handle(handler, fmt=None):
    """Serve calls with handler until kiln closes stdin (in http-stream,
    until SIGTERM), then exit."""
    fmt = fmt or os.environ.get("FN_FORMAT") or "default"
    out = sys.stdout.buffer
    # Stray prints must not reach kiln as part of a frame.
    sys.stdout = sys.stderr
    try:
        if fmt == "default":
            _serve_default(handler, sys.stdin.buffer, out)
        elif fmt == "http-stream":
            _serve_http_stream(handler)
        elif fmt in _SERVERS:
            _SERVERS[fmt](handler, _Reader(sys.stdin.buffer), out)
        else:
            raise ProtocolError("format %r is not supported by the Python FDK" % fmt)
    except (ProtocolError, OSError, ValueError) as e:
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
