"""A lean TLS stream for the proxy's hot path.

``trio.SSLStream`` is general (renegotiation, conflict detection, locks around
every call). Between mesh proxies we only speak TLS 1.3 with one reader and
one writer per direction, so a thinner wrapper over ``ssl.MemoryBIO`` does:
each ``send_all`` is one encrypt and one socket send; each ``receive_some``
decrypts everything already received before touching the socket again.

It also sends the TLS alert when a handshake fails, so the peer learns why.
"""

from __future__ import annotations

import ssl
from typing import Any

import trio

RECEIVE_SIZE = 64 * 1024


class TLSStream(trio.abc.Stream):
    __slots__ = ("transport", "_obj", "_incoming", "_outgoing", "_flushing", "_flushed", "_closed", "_backlog")

    def __init__(self, transport: trio.abc.Stream, context: ssl.SSLContext, *, server_side: bool) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._flushing = False
        self._flushed: trio.Event | None = None
        self._closed = False
        self._backlog = b""  # records send_nowait encrypted that the socket did not take at once

    # -- what the identity checks and ALPN dispatch read -----------------------

    @property
    def context(self) -> ssl.SSLContext:
        return self._obj.context

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._obj.getpeercert(binary_form)

    def selected_alpn_protocol(self) -> str | None:
        return self._obj.selected_alpn_protocol()

    # -- the stream --------------------------------------------------------------

    async def do_handshake(self) -> None:
        obj = self._obj
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self._receive_raw()
                if not data:
                    raise trio.BrokenResourceError("the peer closed the connection during the TLS handshake") from None
                self._incoming.write(data)
            except ssl.SSLError as exc:
                # Best effort: the alert OpenSSL queued tells the peer why.
                try:
                    await self._flush()
                except trio.BrokenResourceError:
                    pass
                raise trio.BrokenResourceError(str(exc)) from exc
        await self._flush()  # our Finished / the server's session tickets

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if data:
            try:
                self._obj.write(data)
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
        if self._flushing or self._backlog:
            await self._flush()
            return
        # The usual case, _flush's inlined (a coroutine less per write): its records, then the
        # ones another writer queued meanwhile.
        self._flushing = True
        try:
            outgoing = self._outgoing
            while outgoing.pending:
                await self.transport.send_all(outgoing.read())
        finally:
            self._flush_done()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data`` and send it without waiting, when the transport can (``FastSocketStream``):
        returns len(data), or 0 when nothing was taken (a flush in progress, or a transport that
        cannot). What the socket did not take at once waits in the stream: ``pending`` says so,
        and the next ``send_all`` (``b""`` will do) sends it first."""
        transport_send = getattr(self.transport, "send_nowait", None)
        if self._closed or self._flushing or self._backlog or transport_send is None or not data:
            return 0
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        records = self._outgoing.read()
        sent = transport_send(records)
        if sent < len(records):
            self._backlog = records[sent:]
        return len(data)

    @property
    def pending(self) -> bool:
        """Encrypted bytes wait to be sent (after a ``send_nowait`` the socket did not take whole)."""
        return bool(self._backlog) or self._outgoing.pending > 0

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        limit = max_bytes or RECEIVE_SIZE
        obj = self._obj
        incoming = self._incoming
        while True:
            chunks: list[bytes] = []
            total = 0
            try:
                # Read only while there is something to decrypt: asking OpenSSL for more than it
                # has costs an SSLWantReadError (an exception per read, twice per proxied request).
                while total < limit and (incoming.pending or obj.pending() or incoming.eof):
                    chunk = obj.read(limit - total)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # close_notify
                pass
            except ssl.SSLError as exc:
                if not chunks:
                    if isinstance(exc, ssl.SSLEOFError):
                        return b""
                    raise trio.BrokenResourceError(str(exc)) from exc
            if chunks:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if self._incoming.eof:
                return b""
            if self._outgoing.pending:  # e.g. a KeyUpdate answer
                await self._flush()
            data = await self.transport.receive_some(RECEIVE_SIZE)  # _receive_raw, inlined
            if not data:
                self._incoming.write_eof()
                continue
            self._incoming.write(data)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._obj.unwrap()  # queue close_notify; the peer's answer is not awaited
            except ssl.SSLError:
                pass
            with trio.move_on_after(0.2):
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await self.transport.aclose()

    # -- plumbing -----------------------------------------------------------------

    async def _flush(self) -> None:
        # One task flushes at a time. A writer arriving meanwhile leaves its bytes
        # in the BIO and waits: the flushing task sends them before it finishes,
        # so send_all keeps its back-pressure.
        if self._flushing:
            if self._flushed is None:
                self._flushed = trio.Event()
            await self._flushed.wait()
            return
        self._flushing = True
        try:
            if self._backlog:
                backlog, self._backlog = self._backlog, b""
                await self.transport.send_all(backlog)
            outgoing = self._outgoing
            while outgoing.pending:
                await self.transport.send_all(outgoing.read())
        finally:
            self._flush_done()

    def _flush_done(self) -> None:
        """The flushing task is done: a writer that waited for it goes on."""
        self._flushing = False
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    async def _receive_raw(self) -> bytes:
        return await self.transport.receive_some(RECEIVE_SIZE)  # type: ignore[return-value]  # socket streams return bytes (trio types it bytes | bytearray)

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._obj.version() or "handshaking"
        return f"<TLSStream {state} alpn={self._obj.selected_alpn_protocol()}>"
