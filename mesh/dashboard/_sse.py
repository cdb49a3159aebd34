"""Server-sent events framing (pure), per the HTML standard's ``text/event-stream``.

A message is ``event:``, ``id:`` and one ``data:`` line per line of the payload,
ended by a blank line. Comments (``:`` lines) keep an idle stream alive through
anything that times out quiet connections.
"""

from __future__ import annotations

import json
from typing import Any

RETRY_MS = 2000  # how soon EventSource reconnects after the dashboard or the network drops it


def sse_message(event: str, data: str, event_id: str | None = None) -> bytes:
    for name, value in (("event", event), ("id", event_id or "")):
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"an SSE {name} cannot hold CR, LF or NUL: {value!r}")
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    # CRLF, CR and LF all end a line for the browser: split on each so no payload line breaks the frame.
    lines.extend(f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def sse_json(event: str, value: Any, event_id: str | None = None) -> bytes:
    return sse_message(event, json.dumps(value, separators=(",", ":"), default=str), event_id)


def sse_comment(text: str = "") -> bytes:
    return b"".join(f": {line}\n".encode() for line in (text.splitlines() or [""])) + b"\n"


def sse_retry(milliseconds: int = RETRY_MS) -> bytes:
    return f"retry: {int(milliseconds)}\n\n".encode()
