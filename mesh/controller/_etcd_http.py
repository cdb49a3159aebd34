"""A small HTTP/1.1 client on trio and httptools, for etcd's JSON gateway.

Why not httpx (which runs on trio through anyio): measured against a 3.4 etcd
member on loopback, one ``/v3/kv/range`` took 1.40 ms through httpx and 0.40 ms
through this client (keep-alive both), and httpx adds 52 ms of imports and
~3 MB to the controller. etcd's gateway needs little: POST a JSON body, read a
JSON answer, or read a long streamed answer (watches) line by line. llhttp
(httptools, already the proxy's parser) does the framing, chunked included.

Why not the controller's own HTTP/2 client (``_api.ApiClient``): etcd serves the
JSON gateway over HTTP/1.1 on plain ports (it routes HTTP/2 there to gRPC only).
"""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httptools
import trio

MAX_RESPONSE = 64 * 1024 * 1024  # a range over the whole prefix of a big mesh stays well under this


class HttpFailure(Exception):
    """The connection failed (refused, reset, timed out, not HTTP): try another member."""


class _Response:
    """httptools callbacks: the status, the body pieces, and whether the message is complete."""

    def __init__(self) -> None:
        self.status = 0
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.headers_done = False
        self.complete = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class HttpConnection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, stream: trio.abc.Stream, authority: str) -> None:
        self.stream = stream
        self.authority = authority
        self.reusable = True

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> HttpConnection:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            with trio.fail_after(timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if tls is not None:
                    stream = trio.SSLStream(stream, tls, server_hostname=host, https_compatible=True)
                    await stream.do_handshake()
        except trio.TooSlowError:
            raise HttpFailure(f"{authority}: connecting timed out after {timeout:g}s") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise HttpFailure(f"{authority}: {_reason(exc)}") from None
        return cls(stream, authority)

    def _head(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.authority}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _send(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[_Response, Any]:
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        try:
            await self.stream.send_all(self._head(path, body, headers))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: {_reason(exc)}") from None
        return response, parser

    async def _feed(self, response: _Response, parser: Any) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: {_reason(exc)}") from None
        if not data:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: the connection closed")
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: not an HTTP answer ({exc})") from None
        if response.size > MAX_RESPONSE:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: the answer is larger than {MAX_RESPONSE} bytes")

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request, the whole answer. A cancelled call leaves the connection unusable."""
        self.reusable = False  # until the answer is complete
        response, parser = await self._send(path, body, headers)
        while not response.complete:
            await self._feed(response, parser)
        self.reusable = parser.should_keep_alive()
        return parser.get_status_code(), response.take()

    async def lines(self, path: str, body: bytes, headers: dict[str, str]) -> AsyncIterator[tuple[int, bytes]]:
        """A streamed answer, one ``(status, line)`` at a time (etcd's watch sends one JSON object a line)."""
        self.reusable = False  # a stream is never given back
        response, parser = await self._send(path, body, headers)
        buffer = bytearray()
        while True:
            while not response.chunks and not response.complete:
                await self._feed(response, parser)
            buffer += response.take()
            while (newline := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:newline]).strip()
                del buffer[: newline + 1]
                if line:
                    yield parser.get_status_code(), line
            if response.complete:
                if buffer.strip():
                    yield parser.get_status_code(), bytes(buffer).strip()
                return

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await self.stream.aclose()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
                pass


class HttpPool:
    """Idle keep-alive connections per member."""

    def __init__(self, tls: ssl.SSLContext | None, connect_timeout: float = 2.0, idle_per_host: int = 4) -> None:
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.idle_per_host = idle_per_host
        self._idle: dict[tuple[str, int], list[HttpConnection]] = {}

    async def post(
        self, host: str, port: int, path: str, payload: Any, headers: dict[str, str], timeout: float
    ) -> tuple[int, Any]:
        """POST JSON, return ``(status, JSON answer)``; HttpFailure when the member cannot be used."""
        body = json.dumps(payload).encode()
        connection = self._take(host, port)
        try:
            with trio.fail_after(timeout):
                if connection is None:
                    connection = await HttpConnection.open(host, port, self.tls, self.connect_timeout)
                status, data = await connection.post(path, body, headers)
        except trio.TooSlowError:
            if connection is not None:
                await connection.aclose()
            raise HttpFailure(f"{host}:{port}: no answer within {timeout:g}s") from None
        except BaseException:
            if connection is not None:
                await connection.aclose()
            raise
        self._give_back(host, port, connection)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            raise HttpFailure(f"{host}:{port}: the answer is not JSON ({data[:80]!r})") from None

    @asynccontextmanager
    async def stream(
        self, host: str, port: int, path: str, payload: Any, headers: dict[str, str]
    ) -> AsyncIterator[AsyncIterator[tuple[int, Any]]]:
        """A streamed POST: yields ``(status, JSON object)`` per line, on a connection of its own."""
        connection = await HttpConnection.open(host, port, self.tls, self.connect_timeout)

        async def objects() -> AsyncIterator[tuple[int, Any]]:
            async for status, line in connection.lines(path, json.dumps(payload).encode(), headers):
                try:
                    yield status, json.loads(line)
                except ValueError:
                    raise HttpFailure(f"{host}:{port}: a streamed line is not JSON ({line[:80]!r})") from None

        try:
            yield objects()
        finally:
            await connection.aclose()

    def _take(self, host: str, port: int) -> HttpConnection | None:
        idle = self._idle.get((host, port))
        return idle.pop() if idle else None

    def _give_back(self, host: str, port: int, connection: HttpConnection) -> None:
        idle = self._idle.setdefault((host, port), [])
        if connection.reusable and len(idle) < self.idle_per_host:
            idle.append(connection)
        else:
            _close_later(connection)

    async def forget(self, host: str, port: int) -> None:
        """Close the idle connections to a member that failed (the next call dials afresh)."""
        for connection in self._idle.pop((host, port), []):
            await connection.aclose()

    async def aclose(self) -> None:
        for key in list(self._idle):
            await self.forget(*key)


def _close_later(connection: HttpConnection) -> None:
    # Closing a plain socket needs no await; a TLS stream's close_notify is skipped (the peer copes).
    stream = connection.stream
    raw = getattr(stream, "transport_stream", stream)
    sock = getattr(raw, "socket", None)
    if sock is not None:
        sock.close()


def _reason(exc: BaseException) -> str:
    """ "connection refused" rather than a tuple of errno and text."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        group = getattr(cause, "exceptions", None)
        cause = group[0] if group else (cause.__cause__ or cause.__context__)
    return str(exc) or type(exc).__name__
