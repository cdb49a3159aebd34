"""HTTP/2 connections as the proxy's loops use them: the proxy's HTTP/2 codec
(``mesh/proxy/protocol/http2``, h2's behaviour, h2's events) over a trio stream, one
writer per connection, flow-controlled sends, and a stream's events as dataclasses.

Both sides of the proxy use it: the client-facing connection (``_h2_server.py``) and
the shared connections to upstreams (``_h2_upstream.py``). Nothing here decides
anything about requests.
"""

from __future__ import annotations

import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack.hpack
import trio

from mesh.net import receive_or_eof, send_now
from mesh.proxy._h2_encoder import ProxyEncoder
from mesh.proxy.protocol.http2 import Connection

MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 64 * 1024
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW = 65535
WRITE_TIMEOUT = 10.0
WRITE_HIGH_WATER = 256 * 1024  # unsent bytes per connection before senders wait

Headers = list[tuple[bytes, bytes]]


class _Quiet:
    """A logger that drops everything, for hpack: it logs every integer and header it codes at
    DEBUG (~47 calls per proxied request, each a ``debug`` and an ``isEnabledFor``: ~8 % of the
    HTTP/2 CPU, measured with cProfile). The proxy never shows hpack's debug lines."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = debug


hpack.hpack.log = _Quiet()  # type: ignore[assignment]


# -- a stream's events, from the reading task to the stream's task ---------------------------


@dataclass(slots=True)
class Head:
    headers: Headers


@dataclass(slots=True)
class Body:
    data: bytes
    flow: int  # the flow-controlled length, acknowledged once the data is forwarded


@dataclass(slots=True)
class Trailers:
    headers: Headers


@dataclass(slots=True)
class End:
    """END_STREAM: the message is complete."""


@dataclass(slots=True)
class Reset:
    code: int


@dataclass(slots=True)
class Broken:
    """The connection is gone (or went away without covering the stream)."""


StreamEvent = Head | Body | Trailers | End | Reset | Broken
END = End()
BROKEN = Broken()


class StreamQueue:
    """A stream's events, unbounded (flow control bounds it), with one waiting reader."""

    __slots__ = ("items", "_event")

    def __init__(self) -> None:
        self.items: deque[StreamEvent] = deque()
        self._event = trio.Event()

    def put(self, item: StreamEvent) -> None:
        self.items.append(item)
        self._event.set()

    async def get(self) -> StreamEvent:
        while not self.items:
            self._event = trio.Event()
            await self._event.wait()
        return self.items.popleft()

    def next_is_end(self) -> bool:
        return bool(self.items) and isinstance(self.items[0], End)


class StreamGone(Exception):
    """The stream (or its whole connection) can no longer carry data."""


class StreamStalled(StreamGone):
    """The peer gave the stream no flow-control window for longer than the stall timeout."""


# -- h2 itself, where the process still uses it (the controller's API) ----------------------


def _frame_for_log(frame: object) -> object:
    """Stands for ``repr`` in h2.connection, whose only use is ``logger.trace("Received frame: %s",
    repr(frame))``: h2 formats every frame it receives (~5 us) for a logger that, by default, drops
    it. A logger that does log formats the frame itself (``%s`` of a frame is its repr): same text."""
    return frame


h2.connection.repr = _frame_for_log  # type: ignore[attr-defined]


def h2_config(client_side: bool, peer_proxy: bool = False) -> h2.config.H2Configuration:
    # The codec's settings, in h2's terms (h2 is the codec's oracle in tests). What we send was
    # validated when it was received (or built by us): it is not checked again on the way out.
    # What we receive is validated, except from a peer proxy over mTLS, which validated it when
    # it came from its app.
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=not peer_proxy,
    )


class H2Endpoint:
    """One HTTP/2 connection: the codec's state machine over a stream, and its one writer task.

    Streams queue frames with the codec and call ``flush``: when no write is in progress
    the bytes go out at once (the next hop starts working sooner: with every write
    deferred to a writer task, the two proxies ran in lock-step convoys, 30 %
    slower at 64 streams in flight); while a write is in progress, the frames of
    the other streams pile up and the writer task (``run_writer``) sends them in
    one write. The reading task only ``kick``s (never writes, never waits).
    ``flush`` waits while more than ``WRITE_HIGH_WATER`` bytes are unsent, so a
    peer that stops reading holds back its senders, not the proxy's memory.
    """

    def __init__(self, stream: trio.abc.Stream, conn: Connection) -> None:
        self.stream = stream
        conn.encoder = ProxyEncoder()  # context-free fields, cached (mesh/proxy/_h2_encoder.py)
        self.h2 = conn
        self._out = bytearray()
        self._writing = False
        self.read_scope: trio.CancelScope | None = None  # the reading task's wait, for interrupt_read
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._progress = trio.Event()
        self.broken = False
        self.received = 0
        self.sent = 0
        # How long a stream may wait for the peer's flow-control window before it is given up.
        self.stall_timeout = float("inf")

    def __repr__(self) -> str:
        state = "broken" if self.broken else "writing" if self._writing else "idle"
        return f"<H2Endpoint {state} unsent={len(self._out)} in={self.received} out={self.sent}>"

    def notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def kick(self) -> None:
        """Hand what the codec queued to the writer, without waiting: for the reading task, which must
        go on reading (two proxies whose readers both waited for the other to read would deadlock)."""
        data = self.h2.data_to_send()
        if data:
            self._out += data
            self._wake.set()

    def unsent(self) -> bool:
        """``kick``; whether anything waits to be written (``flush`` would do more than return)."""
        self.kick()
        return bool(self._out) and not self.broken

    async def flush(self) -> None:
        """``kick``, then wait while too much is unsent: for tasks that produce data."""
        self.kick()
        if self._out and not self._writing and not self.broken:
            await self._write_out()
            if self._out:
                self._wake.set()
        while len(self._out) > WRITE_HIGH_WATER and not self.broken:
            await self._drained.wait()

    async def _write_out(self) -> None:
        self._writing = True
        try:
            data, self._out = self._out, bytearray()
            await self._write(data)
        finally:
            self._writing = False
        drained, self._drained = self._drained, trio.Event()
        drained.set()

    def reset_if_open(self, stream_id: int, code: int) -> None:
        stream = self.h2.streams.get(stream_id)
        if stream is not None and not stream.closed:
            self.reset(stream_id, code)

    async def run_writer(self) -> None:
        while not self.broken:
            if not self._out or self._writing:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await self._write_out()

    async def drain(self) -> None:
        """Write whatever is still queued, now (the writer task has ended)."""
        with trio.CancelScope(shield=True):
            self._out += self.h2.data_to_send()
            while self._out and not self.broken:
                data, self._out = self._out, bytearray()
                await self._write(data)

    async def _write(self, data: bytes | bytearray) -> None:
        try:
            # Most writes go whole into the socket at once: no scope and no checkpoint for them.
            rest = send_now(self.stream, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            self.mark_broken()
            return
        if rest is None:
            self.sent += len(data)
            return
        self.sent += len(data) - len(rest)
        data = rest
        try:
            # Shielded: a write cut halfway would corrupt the connection for every stream. One scope
            # for both (its own deadline still applies): each cancel scope costs ~4 us.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + WRITE_TIMEOUT) as stuck:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            self.mark_broken()
            return
        if stuck.cancelled_caught:
            self.mark_broken()
            return
        self.sent += len(data)

    async def receive(self) -> bytes:
        """The next bytes from the peer, counted; b"" once the connection is gone."""
        data = await receive_or_eof(self.stream)
        self.received += len(data)
        return data

    def interrupt_read(self) -> None:
        """Make the reading task look again (its streams or the connection changed)."""
        if self.read_scope is not None:
            self.read_scope.cancel()

    def mark_broken(self) -> None:
        self.broken = True
        self._out.clear()
        self._drained.set()
        self.notify()
        self.interrupt_read()  # a connection whose writes failed is not read either

    async def send_data(self, stream_id: int, data: bytes, end: bool, flush: bool = True) -> None:
        """Flow-controlled: waits for window; raises StreamGone when it never will come, and
        StreamStalled when the peer gave none for ``stall_timeout``.

        With ``flush=False`` the frames may stay queued (the caller flushes once a batch is done)."""
        view = memoryview(data)
        stalled_until: float | None = None  # armed when the window first runs out
        while True:
            if self.broken:
                raise StreamGone()
            try:
                if not view:
                    if end:
                        self.h2.end_stream(stream_id)
                    break
                window = self.h2.local_flow_control_window(stream_id)
                if window <= 0:
                    progress = self._progress
                    await self.flush()
                    if self.h2.local_flow_control_window(stream_id) <= 0:
                        if stalled_until is None:
                            stalled_until = trio.current_time() + self.stall_timeout
                        # Any window update, setting or reset wakes us: the deadline stays put.
                        with trio.move_on_at(stalled_until) as waited:
                            await progress.wait()
                        if waited.cancelled_caught:
                            raise StreamStalled()
                    continue
                size = min(window, self.h2.max_outbound_frame_size, len(view))
                chunk, view = view[:size], view[size:]
                self.h2.send_data(stream_id, chunk.tobytes(), end_stream=end and not view)
                stalled_until = None
                if not view:
                    break
            except h2.exceptions.ProtocolError:
                raise StreamGone() from None
        if flush:
            await self.flush()

    def send_headers(self, stream_id: int, headers: Headers, end: bool) -> None:
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            raise StreamGone() from None

    def ack(self, stream_id: int, size: int) -> None:
        if size and not self.broken:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.ProtocolError:
                pass

    def ack_queue(self, stream_id: int, queue: StreamQueue) -> None:
        """Give back the window of data that will never be forwarded."""
        while queue.items:
            item = queue.items.popleft()
            if isinstance(item, Body):
                self.ack(stream_id, item.flow)

    def reset(self, stream_id: int, code: int) -> bool:
        try:
            self.h2.reset_stream(stream_id, code)
            return True
        except h2.exceptions.ProtocolError:
            return False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(0.5):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                pass
