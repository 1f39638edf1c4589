"""The Python side of kiln's FDK conformance check: every runtime has a
function answering the same JSON, so one test can call each of them in
every format it speaks and expect the same answer."""

import json
import os


def handler(ctx, data):
    text = data.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        payload = text
    ctx.set_content_type("application/json")
    return {
        "normal": "Hello World!",
        "env1": os.environ.get("ENV1"),
        "payload": payload,
        "header": ctx.header("X-Test"),
    }
