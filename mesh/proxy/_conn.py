"""HTTP/1 connections as the proxy sees them: a trio stream, its HTTP/1 reader, and
events read but not yet used.

One ``receive_events`` is one ``receive_some`` and one parser feed, so a read
from the network becomes at most one write on the other side.
"""

from __future__ import annotations

import ssl
from typing import Generic, TypeVar

import trio

from mesh.net import RECEIVE_SIZE
from mesh.proxy.protocol.http1 import Event, RequestReader, ResponseReader

R = TypeVar("R", RequestReader, ResponseReader)


class PeerClosed(Exception):
    """The other side closed (or reset) the connection."""


class HttpConnection(Generic[R]):
    __slots__ = ("stream", "reader", "pending", "received", "sent", "_closed")

    def __init__(self, stream: trio.abc.Stream, reader: R) -> None:
        self.stream = stream
        self.reader: R = reader
        self.pending: list[Event] = []
        self.received = 0
        self.sent = 0
        self._closed = False

    async def receive_events(self) -> list[Event]:
        """Pending events, or the events of the next read. ``PeerClosed`` on EOF."""
        if self.pending:
            events, self.pending = self.pending, []
            return events
        while True:
            data = await self.receive_bytes()
            if not data:
                raise PeerClosed()
            events = self.reader.feed(data)
            if events:
                return events

    async def receive_bytes(self) -> bytes:
        try:  # receive_or_eof, inlined: a coroutine less per read
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            return b""
        self.received += len(data)
        return data  # type: ignore[return-value]  # socket streams return bytes (trio types it bytes | bytearray)

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            raise PeerClosed() from exc
        self.sent += len(data)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                    pass

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return (
            f"<HttpConnection {self.reader!r} pending={len(self.pending)} "
            f"in={self.received} out={self.sent}{' closed' if self._closed else ''}>"
        )
