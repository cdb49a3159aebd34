"""Connections as the proxy sees them: a trio stream, its HTTP/1 reader, and
events read but not yet used.

One ``receive_events`` is one ``receive_some`` and one parser feed, so a read
from the network becomes at most one write on the other side.
"""

from __future__ import annotations

import ssl
from typing import Generic, TypeVar

import trio

from mesh.proxy.protocol.http1 import Event, RequestReader, ResponseReader

RECEIVE_SIZE = 64 * 1024

R = TypeVar("R", RequestReader, ResponseReader)


async def receive_or_eof(stream: trio.abc.Stream) -> bytes:
    """The next bytes; b"" when the peer closed, reset, or broke TLS (all end the connection alike)."""
    try:
        return await stream.receive_some(RECEIVE_SIZE)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        return b""


class PeerClosed(Exception):
    """The other side closed (or reset) the connection."""


class HttpConnection(Generic[R]):
    __slots__ = ("stream", "reader", "pending", "received", "sent", "_closed")

    def __init__(self, stream: trio.abc.Stream, reader: R) -> None:
        self.stream = stream
        self.reader = reader
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
        data = await receive_or_eof(self.stream)
        self.received += len(data)
        return data

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


async def relay_bytes(
    a: trio.abc.Stream,
    b: trio.abc.Stream,
    a_leftover: bytes = b"",
    b_leftover: bytes = b"",
) -> tuple[int, int]:
    """Copy both ways between a client-side stream ``a`` and a server-side ``b``.

    Returns (bytes a→b, bytes b→a). An EOF is passed on as a half-close where
    the other stream can carry one (plain TCP). TLS cannot, so: when the server
    side ends, everything ends (the client then sees the close); when the
    client side ends, the server's answer keeps flowing until it ends too.
    An error on either side ends both.
    """
    counts = [0, 0]

    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream, leftover: bytes, index: int) -> None:
        try:
            if leftover:
                await dst.send_all(leftover)
                counts[index] += len(leftover)
            while True:
                data = await src.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                await dst.send_all(data)
                counts[index] += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            nursery.cancel_scope.cancel()
            return
        if isinstance(dst, trio.abc.HalfCloseableStream):
            try:
                await dst.send_eof()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        if index == 1:  # the server side ended and the client side cannot be told by half
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, a, b, a_leftover, 0)
        nursery.start_soon(pump, b, a, b_leftover, 1)
    return counts[0], counts[1]
