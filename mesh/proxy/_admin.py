"""The proxy's admin server: /metrics, /ready, /live, /config, /tap.

Plain HTTP/1.1 on loopback only (ephemeral port unless set), and the same
pages over mTLS on the inbound listener (ALPN ``mesh-admin``) for the
controller and operators, who may also see tap's query-string values (see
docs/security.md). Small and separate from the data path: it shares the
HTTP/1 reader, nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import trio

from mesh.net import cancel_on_eof
from mesh.proxy._conn import HttpConnection, PeerClosed
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import EndOfMessage, RequestHead, RequestReader, encode_chunk, simple_response
from mesh.telemetry import CONTENT_TYPE, DEFAULT_MAX_QUEUE, TapFilter, TapHub, query_values_asked

log = logging.getLogger("mesh.proxy.admin")

# A streaming handler (e.g. /tap) takes over the connection and writes itself.
StreamHandler = Callable[[RequestHead, trio.abc.Stream], Awaitable[None]]


class AdminApp:
    def __init__(
        self,
        metrics: Callable[[], str],
        config: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        streams: dict[bytes, StreamHandler] | None = None,
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._ready = ready
        self._streams = streams or {}

    def respond(self, head: RequestHead) -> bytes:
        path = head.target.split(b"?", 1)[0]
        if head.method not in (b"GET", b"HEAD"):
            return simple_response(405, b"method not allowed\n", [(b"Allow", b"GET, HEAD")])
        if path == b"/metrics":
            body = self._metrics().encode()
            return _with_type(simple_response(200, body), CONTENT_TYPE.encode())
        if path == b"/live":
            return simple_response(200, b"live\n")
        if path == b"/ready":
            if self._ready():
                return simple_response(200, b"ready\n")
            return simple_response(503, b"not ready\n")
        if path == b"/config":
            body = json.dumps(self._config(), indent=2, default=str).encode() + b"\n"
            return _with_type(simple_response(200, body), b"application/json")
        return simple_response(404, b"not found: try /metrics, /ready, /live, /config, /tap\n")

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        conn: HttpConnection[RequestReader] = HttpConnection(stream, RequestReader())
        try:
            while True:
                with trio.move_on_after(30) as idle:
                    events = await conn.receive_events()
                if idle.cancelled_caught:
                    return
                conn.pending = events
                head = conn.pending.pop(0)
                assert isinstance(head, RequestHead)
                # Admin requests have no body worth reading; skip to its end.
                while not any(isinstance(e, EndOfMessage) for e in conn.pending):
                    conn.pending += await conn.receive_events()
                conn.pending = conn.pending[
                    next(i for i, e in enumerate(conn.pending) if isinstance(e, EndOfMessage)) + 1 :
                ]
                path = head.target.split(b"?", 1)[0]
                handler = self._streams.get(path)
                if handler is not None:
                    await handler(head, stream)
                    return
                response = self.respond(head)
                if head.method == b"HEAD":
                    response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                await conn.send(response)
                if not head.keep_alive:
                    return
        except (PeerClosed, RemoteProtocolError):
            return
        finally:
            await conn.aclose()


def _with_type(response: bytes, content_type: bytes) -> bytes:
    return response.replace(b"text/plain; charset=utf-8", content_type, 1)


SHOW_QUERY_REFUSED = (
    b"query-string values are shown only to the controller and operators, over mTLS: "
    b"run `mesh tap --show-query` (the loopback admin server answers anyone on this host)\n"
)

TAP_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n"
)


def tap_handler(hub: TapHub, max_queue: int = DEFAULT_MAX_QUEUE, *, query_values: bool = False) -> StreamHandler:
    """``GET /tap?service=&direction=&path=&method=&authority=&max_rps=&show_query=``: NDJSON until the client leaves.

    One line per event (``{"type": "request", ...}``), and ``{"type": "dropped",
    "count": N, "total": M}`` when this listener's queue overflowed. The
    subscription exists only while the connection does: with nobody tapping the
    proxy builds no events at all. Query-string values in paths are redacted;
    ``show_query=1`` shows them where ``query_values`` allows it (the admin
    server over mTLS, whose callers are the controller and operators), and is
    refused (403) elsewhere.
    """

    async def serve(head: RequestHead, stream: trio.abc.Stream) -> None:
        _, _, query = head.target.decode("latin-1").partition("?")
        if head.method != b"GET":
            await _send_quietly(stream, simple_response(405, b"method not allowed\n", [(b"Allow", b"GET")], False))
            return
        try:
            params = dict(parse_qsl(query, keep_blank_values=True))
            tap_filter, max_rps = TapFilter.from_query(params)
            show_query = query_values_asked(params)
        except ValueError as exc:
            await _send_quietly(stream, simple_response(400, f"{exc}\n".encode(), keep_alive=False))
            return
        if show_query and not query_values:
            await _send_quietly(stream, simple_response(403, SHOW_QUERY_REFUSED, keep_alive=False))
            return
        subscription = hub.subscribe(tap_filter, max_queue=max_queue, max_rps=max_rps)
        wake = trio.Event()

        def notify() -> None:
            wake.set()

        subscription.set_notify(notify)
        log.debug("tap listener joined (%d now)", hub.listeners)
        try:
            await stream.send_all(TAP_HEAD)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_eof, stream, nursery.cancel_scope)
                while True:
                    if not subscription.pending:
                        wake = trio.Event()
                        await wake.wait()
                    lines = []
                    dropped = subscription.take_dropped()
                    if dropped:
                        lines.append({"type": "dropped", "count": dropped, "total": subscription.dropped})
                    lines.extend(event.to_dict(show_query) for event in subscription.take())
                    payload = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
                    await stream.send_all(encode_chunk(payload.encode()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the listener went away
        finally:
            hub.unsubscribe(subscription)
            log.debug("tap listener left (%d now)", hub.listeners)

    return serve


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
