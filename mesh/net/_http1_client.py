"""A small HTTP/1.1 client on trio and httptools: one keep-alive connection, one request at a time.

The controller talks to etcd's JSON gateway with it (``mesh.controller._etcd_http``), the
proxy exports spans to an OTLP/HTTP collector with it (``mesh.proxy._export``). Both need
little: POST a body, read the whole answer, or read a long streamed answer line by line.
llhttp (httptools, already the proxy's parser) does the framing, chunked included.

Why not httpx (which runs on trio through anyio): measured against a 3.4 etcd member on
loopback, one ``/v3/kv/range`` took 1.40 ms through httpx and 0.40 ms through this client
(keep-alive both), and httpx adds 52 ms of imports and ~3 MB to the process.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httptools
import trio

MAX_RESPONSE = 64 * 1024 * 1024  # a range over the whole prefix of a big mesh stays well under this


class HttpFailure(Exception):
    """The connection failed (refused, reset, timed out, not HTTP): try another server, or later."""


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
            raise HttpFailure(f"{authority}: {failure_reason(exc)}") from None
        return cls(stream, authority)

    def _head(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _send(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[_Response, Any]:
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        try:
            await self.stream.send_all(self._head(path, body, headers))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: {failure_reason(exc)}") from None
        return response, parser

    async def _feed(self, response: _Response, parser: Any) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            self.reusable = False
            raise HttpFailure(f"{self.authority}: {failure_reason(exc)}") from None
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

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """One POST (``headers`` name its Content-Type), the whole answer. A cancelled call leaves
        the connection unusable."""
        self.reusable = False  # until the answer is complete
        response, parser = await self._send(path, body, headers)
        while not response.complete:
            await self._feed(response, parser)
        self.reusable = parser.should_keep_alive()
        return parser.get_status_code(), response.take()

    async def lines(self, path: str, body: bytes, headers: Mapping[str, str]) -> AsyncIterator[tuple[int, bytes]]:
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

    def close_now(self) -> None:
        """Close without waiting: a plain socket needs no await; a TLS stream's close_notify is
        skipped (the peer copes)."""
        stream = self.stream
        raw = getattr(stream, "transport_stream", stream)
        sock = getattr(raw, "socket", None)
        if sock is not None:
            sock.close()


def failure_reason(exc: BaseException) -> str:
    """ "connection refused" rather than a tuple of errno and text."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        group = getattr(cause, "exceptions", None)
        cause = group[0] if group else (cause.__cause__ or cause.__context__)
    return str(exc) or type(exc).__name__
