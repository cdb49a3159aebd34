"""The dashboard's HTTP server: plain HTTP/1.1 on 127.0.0.1, on trio, with the proxy's sans-IO reader.

Every request passes the ``Gate`` (Host, then token) before anything else; the
routes are in ``_routes``. Pages and JSON are small complete responses; the two
event streams take the connection over and end when the browser goes away.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import trio

from mesh.dashboard._auth import Allow, Gate, Login, Refuse
from mesh.dashboard._feed import ControllerLink
from mesh.dashboard._model import Topics
from mesh.dashboard._routes import StaticFile, resolve
from mesh.dashboard._sse import sse_comment, sse_json, sse_retry
from mesh.errors import MeshError
from mesh.net import cancel_on_eof
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import (
    Data,
    EndOfMessage,
    Framing,
    RequestHead,
    RequestReader,
    Upgraded,
    encode_chunk,
    encode_response_head,
)

log = logging.getLogger("mesh.dashboard")

REQUEST_SECONDS = 30.0  # a whole request (keep-alive idle time included)
MAX_BODY = 64 * 1024  # nothing here takes a body; a small one is read and ignored
KEEPALIVE_SECONDS = 15.0  # an SSE comment this often keeps an idle stream open
TAP_MAX_RPS = "25"  # per proxy and merged: a page shows the last few hundred requests, not all of them

Headers = list[tuple[bytes, bytes]]

# The page loads only its own files and talks only to its own origin: no inline script or style,
# no other host (a CDN, or anything else off this machine), no framing.
SECURITY_HEADERS: Headers = [
    (
        b"Content-Security-Policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
    (b"Cache-Control", b"no-store"),
]


class Changes:
    """Wakes every event stream when a topic is published (an Event per change)."""

    def __init__(self) -> None:
        self.event = trio.Event()

    def notify(self) -> None:
        self.event.set()
        self.event = trio.Event()


def response(
    status: int, body: bytes, content_type: bytes, extra: Sequence[tuple[bytes, bytes]] = (), keep_alive: bool = True
) -> bytes:
    headers: Headers = [(b"Content-Type", content_type), (b"Content-Length", str(len(body)).encode())]
    headers += [*SECURITY_HEADERS, *extra]
    reason = b"See Other" if status == 303 else b""  # the codec's table lacks it; the rest it knows
    return encode_response_head(status, reason, headers, Framing.LENGTH, keep_alive) + body


def text_response(status: int, message: str, keep_alive: bool = True) -> bytes:
    return response(status, (message + "\n").encode(), b"text/plain; charset=utf-8", keep_alive=keep_alive)


def stream_head(content_type: bytes = b"text/event-stream") -> bytes:
    headers: Headers = [(b"Content-Type", content_type), *SECURITY_HEADERS]
    return encode_response_head(200, b"", headers, Framing.CHUNKED, keep_alive=False)


class _Gone(Exception):
    """The browser closed the connection."""


class DashboardServer:
    def __init__(
        self,
        gate: Gate,
        static: dict[str, StaticFile],
        topics: Topics,
        changes: Changes,
        link: ControllerLink,
    ) -> None:
        self._gate = gate
        self._static = static
        self._topics = topics
        self._changes = changes
        self._link = link

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        reader = RequestReader()
        pending: list[Any] = []
        try:
            while True:
                with trio.move_on_after(REQUEST_SECONDS) as late:
                    head, pending = await _read_request(stream, reader, pending)
                if late.cancelled_caught:
                    return  # idle, or too slow to send a request
                if await self._respond(stream, head) or not head.keep_alive:
                    return
        except RemoteProtocolError as exc:
            await _send_quietly(stream, text_response(exc.status, f"bad request: {exc}", keep_alive=False))
        except _Gone:
            pass
        except Exception as exc:  # noqa: BLE001 - one page's request never takes the dashboard down
            log.warning("a request failed: %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _respond(self, stream: trio.abc.Stream, head: RequestHead) -> bool:
        """Answer one request; True when the connection must end after it."""
        target = head.target.decode("latin-1")
        method = head.method.decode("latin-1")
        host = head.header(b"host")
        cookie = head.header(b"cookie")
        access = self._gate.decide(
            host.decode("latin-1") if host is not None else None, target, cookie.decode("latin-1") if cookie else None
        )
        if isinstance(access, Refuse):
            log.info("refused %s %s: %s", method, target.split("?", 1)[0], access.message)
            await _send(stream, text_response(access.status, access.message))
            return False
        if isinstance(access, Login):
            extra = [(b"Location", access.location.encode()), (b"Set-Cookie", access.set_cookie.encode())]
            await _send(stream, response(303, b"", b"text/plain; charset=utf-8", extra))
            return False
        assert isinstance(access, Allow)
        path, _, query = target.partition("?")
        route = resolve(method, path, self._static)
        if route.kind == "not-found":
            await _send(stream, text_response(404, f"not found: {path}"))
        elif route.kind == "method-not-allowed":
            await _send(stream, text_response(405, f"{method} is not allowed: the dashboard only reads"))
        elif route.kind in ("page", "static"):
            file = self._static[route.name]
            answer = response(200, file.body, file.content_type.encode())
            await _send(stream, answer if method != "HEAD" else answer[: len(answer) - len(file.body)])
        elif route.kind == "state":
            body = json.dumps(self._topics.state(), separators=(",", ":"), default=str).encode()
            await _send(stream, response(200, body, b"application/json"))
        elif route.kind == "events":
            await self._events(stream)
            return True
        elif route.kind == "tap":
            return await self._tap(stream, dict(parse_qsl(query, keep_blank_values=True)))
        return False

    async def _events(self, stream: trio.abc.Stream) -> None:
        """Every topic now, then each one again when it changes, until the browser leaves."""
        await _send(stream, stream_head() + encode_chunk(sse_retry()))
        seen: dict[str, int] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_eof, stream, nursery.cancel_scope)
            while True:
                changed = self._changes.event  # taken before reading: a publish during the send wakes us
                messages = self._topics.messages_since(seen)
                if messages:
                    await _stream_send(stream, b"".join(messages), nursery.cancel_scope)
                with trio.move_on_after(KEEPALIVE_SECONDS) as idle:
                    await changed.wait()
                if idle.cancelled_caught:
                    await _stream_send(stream, sse_comment("keepalive"), nursery.cancel_scope)

    async def _tap(self, stream: trio.abc.Stream, query: dict[str, str]) -> bool:
        """Requests live (``/v1/tap`` with the same filter), as SSE: ``request`` and the stream's notices."""
        from mesh.telemetry import TapFilter

        try:
            TapFilter.from_query(query)
        except ValueError as exc:
            await _send(stream, text_response(400, f"tap: {exc}"))
            return False
        query = {**query, "max_rps": query.get("max_rps") or TAP_MAX_RPS}
        await _send(stream, stream_head() + encode_chunk(sse_retry()))
        async with trio.open_nursery() as nursery:
            scope = nursery.cancel_scope
            nursery.start_soon(cancel_on_eof, stream, scope)
            try:
                async with self._link.tap(query) as items:
                    await _stream_send(stream, sse_json("open", {"query": query}), scope)
                    async for item in items:
                        if isinstance(item, dict):
                            await _stream_send(stream, sse_json(str(item.get("type") or "request"), item), scope)
                ending = sse_json("end", {"message": "the controller ended the tap; reconnecting"})
            except MeshError as exc:
                ending = sse_json("failed", {"error": exc.message, "hint": exc.hint})
            await _stream_send(stream, ending, scope)
            scope.cancel()
        return True


async def _read_request(
    stream: trio.abc.Stream, reader: RequestReader, pending: list[Any]
) -> tuple[RequestHead, list[Any]]:
    """The next request's head, its body read and dropped; returns the events that follow it."""
    events = pending
    head: RequestHead | None = None
    body = 0
    while True:
        for index, event in enumerate(events):
            if isinstance(event, RequestHead):
                head = event
            elif isinstance(event, Data):
                body += len(event.data)
                if body > MAX_BODY:
                    raise RemoteProtocolError("the dashboard takes no request bodies", status=413)
            elif isinstance(event, Upgraded):
                raise RemoteProtocolError("the dashboard does not upgrade connections")
            elif isinstance(event, EndOfMessage) and head is not None:
                return head, events[index + 1 :]
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise _Gone() from None
        if not data:
            raise _Gone()
        events = reader.feed(bytes(data))


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        raise _Gone() from None


async def _stream_send(stream: trio.abc.Stream, data: bytes, scope: trio.CancelScope) -> None:
    """One chunk of an event stream; a browser gone away ends the stream (its scope), not the server."""
    try:
        await stream.send_all(encode_chunk(data))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        scope.cancel()
        await trio.lowlevel.checkpoint()


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
