"""Byte streams, whoever reads them: a read that tells EOF and errors apart from data,
a relay both ways, and the watch on a one-way stream's reader."""

from __future__ import annotations

import os
import ssl

import trio

RECEIVE_SIZE = 64 * 1024
LINGER = 1.0  # seconds a connection we end reads off the peer's input before it is closed


def os_reason(exc: OSError) -> str:
    """ "connection refused": trio wraps each address's failure; the errno says it best."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        group = getattr(cause, "exceptions", None)
        cause = group[0] if group else cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


async def receive_or_eof(stream: trio.abc.Stream) -> bytes:
    """The next bytes; b"" when the peer closed, reset, or broke TLS (all end the connection alike)."""
    try:
        return await stream.receive_some(RECEIVE_SIZE)  # type: ignore[return-value]  # socket streams return bytes (trio types it bytes | bytearray)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        return b""


def send_now(stream: trio.abc.Stream, data: bytes | bytearray) -> bytes | bytearray | None:
    """Send ``data`` without waiting or a checkpoint where the stream can (``send_nowait``:
    ``FastSocketStream``, ``TLSStream`` over one): None when all of it went out, else what the
    caller must still ``await stream.send_all(...)`` (b"" when a TLS stream holds records its
    socket did not take). Most of a proxy's writes fit the socket's buffer: they skip the
    coroutines, the checkpoint and any cancel scope a waiting send needs."""
    send_nowait = getattr(stream, "send_nowait", None)
    if send_nowait is None:
        return data
    taken = send_nowait(data)
    if taken < len(data):
        return data[taken:]
    return b"" if getattr(stream, "pending", False) else None


async def linger(stream: trio.abc.Stream) -> None:
    """Half-close and read off what the peer is still sending, briefly (a lingering close,
    RFC 9112 section 9.6).

    Closing a socket with unread input makes the kernel send RST, and the RST can overtake
    what we sent last (a response, a GOAWAY): the peer would see a reset, not the answer.
    """
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    with trio.CancelScope(shield=True), trio.move_on_after(LINGER):
        try:
            await stream.send_eof()
            while await receive_or_eof(stream):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
            pass


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


async def cancel_on_eof(stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
    """A streaming response is one-way: the client closing its side means it is gone."""
    try:
        while await stream.receive_some(4096):
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    scope.cancel()
