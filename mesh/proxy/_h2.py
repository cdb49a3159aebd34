"""The HTTP/2 (and so gRPC) proxy loop: one accepted connection, many streams.

Each client stream is routed on its own (the router sees an HTTP/1-like
``RequestHead`` made of ``:method``, ``:path`` and ``:authority``) and forwarded
as a stream of ONE shared HTTP/2 connection per upstream key (``H2Pool``).
Headers, DATA and trailers are relayed both ways; received data is acknowledged
(flow control) only once the other side took it, so a slow reader slows only
its own stream. RST_STREAM travels both ways.

Hardening (docs/security.md lists every budget and why): 100 concurrent streams
per connection, counted by the work still running (a reset stream holds its
slot until its task has ended; streams beyond the advertised limit get
REFUSED_STREAM, the connection lives); 64 KiB header lists (h2 also bounds
CONTINUATION floods by it); one reset budget per connection, spent by the
client's RST_STREAMs and by those the proxy sends because of what the client
did (Rapid Reset, MadeYouReset), the same for apps and peer proxies, whose
exhaustion ends the connection with GOAWAY(ENHANCE_YOUR_CALM); a stream that
waits on its reader's flow-control window longer than the idle timeout is
reset.

Errors the mesh makes: for gRPC requests a trailers-only HTTP 200 with
``grpc-status``/``grpc-message`` and ``x-mesh-error``; otherwise the status code
with ``x-mesh-error`` and a one-line body.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import deque
from dataclasses import replace
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import RstStreamFrame

from mesh.proxy._conn import receive_or_eof
from mesh.proxy._exchange import CLIENT_RESET, endpoint_verdict
from mesh.proxy._http import Drain, Forward, Limits, Recorder, Reject, RequestRecord, Router
from mesh.proxy._policy import TokenBucket, may_retry, retry_condition
from mesh.proxy._pool import ALPN_H2, ALPN_HTTP1, ContextProvider, UpstreamConnectError, UpstreamKey, open_upstream
from mesh.proxy.protocol.http1 import HOP_BY_HOP, Framing, RequestHead

log = logging.getLogger("mesh.proxy")

MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 64 * 1024
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
_DEFAULT_WINDOW = 65535
# Streams that end by a reset, per connection: the client's RST_STREAMs and the ones the proxy
# sends because of the client (h2's answers to frames on closed streams, REFUSED_STREAM). What
# bounds the work is the stream limit (a reset stream holds its slot until its task has ended);
# the budget ends connections that do little else than reset. A client may cancel every stream
# it has, twice, then 100 a second (gRPC hedging and fan-out cancel the losers). A peer proxy gets
# the same budget: it multiplexes the cancels of many callers onto one connection, so the sending
# side (H2Upstream) spreads its streams over connections that can each afford to reset them all.
RESET_BURST = 2 * MAX_CONCURRENT_STREAMS
RESET_RATE = 100.0  # per second
# Frames that cost work and carry nothing (empty DATA, PING, PRIORITY, SETTINGS, unknown types):
# a flood of them (CVE-2019-9512/9516/9518) also ends in GOAWAY(ENHANCE_YOUR_CALM).
IDLE_FRAME_BURST = 1000
IDLE_FRAME_RATE = 100.0  # per second
WRITE_TIMEOUT = 10.0
WRITE_HIGH_WATER = 256 * 1024  # unsent bytes per connection before senders wait
LINGER = 1.0  # seconds a connection ended for abuse reads off input before it is closed
UPSTREAM_IDLE = 60.0
REPLAY_LIMIT = 64 * 1024  # request bytes kept for a replay after REFUSED_STREAM
# A refused stream was never processed, so sending it again is safe; an upstream that says GOAWAY
# after every few requests (nginx: keepalive_requests) may refuse it more than once.
REFUSED_ATTEMPTS = 4

GRPC_UNAVAILABLE = 14
GRPC_DEADLINE_EXCEEDED = 4
GRPC_PERMISSION_DENIED = 7
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNIMPLEMENTED = 12
GRPC_INVALID_ARGUMENT = 3
GRPC_INTERNAL = 13

_HTTP_TO_GRPC = {
    400: GRPC_INTERNAL,
    401: 16,
    403: GRPC_PERMISSION_DENIED,
    404: GRPC_UNIMPLEMENTED,
    429: GRPC_RESOURCE_EXHAUSTED,
    502: GRPC_UNAVAILABLE,
    503: GRPC_UNAVAILABLE,
    504: GRPC_DEADLINE_EXCEEDED,
}

# For retry conditions only: gRPC statuses that mean the server side failed, as their HTTP twins.
_GRPC_TO_HTTP = {GRPC_UNAVAILABLE: 503, GRPC_DEADLINE_EXCEEDED: 504, GRPC_INTERNAL: 500, 2: 500, 15: 500}

_SECRET = frozenset({b"authorization", b"proxy-authorization"})
_STRIP = HOP_BY_HOP | {b"host", b"http2-settings"}
_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def grpc_status_for(status: int) -> int:
    return _HTTP_TO_GRPC.get(status, GRPC_UNAVAILABLE if status >= 500 else 2)


def parse_grpc_timeout(value: bytes | None) -> float | None:
    """``grpc-timeout`` (e.g. ``100m``) in seconds; None when absent or malformed."""
    if not value or len(value) < 2 or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or unit not in _GRPC_UNITS:
        return None
    return int(digits) * _GRPC_UNITS[unit]


def _status_for_retry(status: int, grpc_status: int | None) -> int:
    """The HTTP status a route's retry conditions see: a gRPC failure counts as its HTTP twin."""
    if status == 200 and grpc_status is not None:
        return _GRPC_TO_HTTP.get(grpc_status, 200)
    return status


def clean_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Regular headers minus hop-by-hop and ``connection``-named ones; ``te: trailers`` kept."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    out: list[tuple[bytes, bytes]] = []
    for field in headers:
        name, value = field
        if name.startswith(b":"):
            continue
        if name == b"te":
            if value.strip().lower() == b"trailers":
                out.append((b"te", b"trailers"))
            continue
        if name in _STRIP or name in named:
            continue
        if name in _SECRET or (name == b"cookie" and len(value) < 20):
            # Never HPACK-indexed on a connection shared by many callers (RFC 7541 7.1.3), as h2
            # would mark them if its outbound normalisation were on.
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append(field)  # keeps the sender's never-indexed marking
    return out


# ------------------------------------------------------------------ plumbing


class _Connection(h2.connection.H2Connection):
    """h2's connection, but a graceful GOAWAY (NO_ERROR) lets the streams it covers finish.

    h2 closes its whole state machine on any GOAWAY and drops what is queued to
    send, so responses to streams the peer promised to finish (id <= last_stream_id,
    RFC 9113 section 6.8) would be lost — nginx says GOAWAY after every 1000
    requests. Here the event is reported and the connection stays usable for
    those streams; the owner opens no new ones (``H2Upstream.goaway``).
    """

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        if frame.error_code != ErrorCodes.NO_ERROR:
            return super()._receive_goaway_frame(frame)  # type: ignore[no-any-return]
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def reset_by_us(self, stream_id: int) -> bool:
        """Whether the stream was closed by a RST_STREAM that we sent."""
        return self._stream_closed_by(stream_id) is StreamClosedBy.SEND_RST_STREAM


class _ServerConnection(_Connection):
    """The client-facing side of a connection, where RFC 9113 asks for less than h2 does.

    - HEADERS that open a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS (legal before the client
      has seen our SETTINGS) are a stream error (section 5.1.2), not a connection error: the
      stream is opened and listed in ``over_limit``, and the proxy refuses it (REFUSED_STREAM,
      which clients retry safely).
    - Frames still in flight on a stream after we reset it are ignored (section 5.1, "closed");
      h2 answered each DATA frame with one more RST_STREAM.
    - Every other RST_STREAM that h2 sends of its own accord (frames after the client's own reset
      or after its END_STREAM: MadeYouReset) is counted in ``resets_answered``, so the proxy charges
      it to the reset budget like the client's own resets. The first such reset of a stream is also
      reported as a ``StreamReset`` event (``remote_reset`` False) and counted there instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.over_limit: set[int] = set()
        self.resets_answered = 0
        self.idle_frames = 0  # frames on streams we reset, that carry nothing: the idle-frame budget's
        self._lift_limit = False

    @property
    def open_inbound_streams(self) -> int:
        count: int = super().open_inbound_streams  # also forgets closed streams: always computed
        return 0 if self._lift_limit else count

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        try:
            return super()._receive_headers_frame(frame)  # type: ignore[no-any-return]
        except h2.exceptions.TooManyStreamsError:
            if frame.stream_id <= self.highest_inbound_stream_id:
                raise
        # h2 refused before decoding the header block, so the HPACK state is untouched: receive it
        # again with the limit lifted, as a stream to refuse.
        self.over_limit.add(frame.stream_id)
        self._lift_limit = True
        try:
            return super()._receive_headers_frame(frame)  # type: ignore[no-any-return]
        finally:
            self._lift_limit = False

    def _handle_data_on_closed_stream(self, events: list[Any], exc: Any, frame: Any) -> tuple[list[Any], list[Any]]:
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if exc._events:
            return frames, events  # the stream's first error reset: reported as a StreamReset event
        if self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM:
            if not frame.flow_controlled_length and "END_STREAM" not in frame.flags:
                self.idle_frames += 1  # an upload's last (empty) frame after an early answer is not
            return [f for f in frames if not isinstance(f, RstStreamFrame)], events
        self.resets_answered += 1
        return frames, events

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:
        # h2 asks this of a stream that got a frame after it closed, and answers RST_STREAM when true.
        closed_by = self._stream_closed_by(stream_id)
        if closed_by is StreamClosedBy.RECV_RST_STREAM:
            self.resets_answered += 1
            return True
        if closed_by is StreamClosedBy.SEND_RST_STREAM:
            self.idle_frames += 1  # in flight when we reset it (answered by h2, harmless), or a flood
            return True
        return False


def _config(client_side: bool, peer_proxy: bool = False) -> h2.config.H2Configuration:
    # What we send was validated when it was received (or built by us): checking it again
    # on the way out costs a third of h2's header work. What we receive is validated, except
    # from a peer proxy over mTLS, which validated it when it came from its app.
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=not peer_proxy,
    )


class _Queue:
    """An unbounded queue (flow control bounds it) with one waiting reader."""

    __slots__ = ("items", "_event")

    def __init__(self) -> None:
        self.items: deque[tuple[Any, ...]] = deque()
        self._event = trio.Event()

    def put(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)
        self._event.set()

    async def get(self) -> tuple[Any, ...]:
        while not self.items:
            self._event = trio.Event()
            await self._event.wait()
        return self.items.popleft()


class _StreamGone(Exception):
    """The stream (or its whole connection) can no longer carry data."""


class _StreamStalled(_StreamGone):
    """The peer gave the stream no flow-control window for longer than the stall timeout."""


class _GoingAway(Exception):
    """The upstream connection said GOAWAY since it was picked: the stream goes on another one."""


class _Endpoint:
    """One HTTP/2 connection: h2's state machine over a stream, and its one writer task.

    Streams queue frames with h2 and call ``flush``: when no write is in progress
    the bytes go out at once (the next hop starts working sooner: with every write
    deferred to a writer task, the two proxies ran in lock-step convoys, 30 %
    slower at 64 streams in flight); while a write is in progress, the frames of
    the other streams pile up and the writer task (``run_writer``) sends them in
    one write. The reading task only ``kick``s (never writes, never waits).
    ``flush`` waits while more than ``WRITE_HIGH_WATER`` bytes are unsent, so a
    peer that stops reading holds back its senders, not the proxy's memory.
    """

    def __init__(self, stream: trio.abc.Stream, conn: _Connection) -> None:
        self.stream = stream
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

    def notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def kick(self) -> None:
        """Hand what h2 queued to the writer, without waiting: for the reading task, which must
        go on reading (two proxies whose readers both waited for the other to read would deadlock)."""
        data = self.h2.data_to_send()
        if data:
            self._out += data
            self._wake.set()

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

    async def _write(self, data: bytearray) -> None:
        try:
            # Shielded: a write cut halfway would corrupt the connection for every stream.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(WRITE_TIMEOUT) as stuck:
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
        """Flow-controlled: waits for window; raises _StreamGone when it never will come, and
        _StreamStalled when the peer gave none for ``stall_timeout``.

        With ``flush=False`` the frames may stay queued (the caller flushes once a batch is done)."""
        view = memoryview(data)
        stalled_until: float | None = None  # armed when the window first runs out
        while True:
            if self.broken:
                raise _StreamGone()
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
                            raise _StreamStalled()
                    continue
                size = min(window, self.h2.max_outbound_frame_size, len(view))
                chunk, view = view[:size], view[size:]
                self.h2.send_data(stream_id, chunk.tobytes(), end_stream=end and not view)
                stalled_until = None
                if not view:
                    break
            except h2.exceptions.ProtocolError:
                raise _StreamGone() from None
        if flush:
            await self.flush()

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            raise _StreamGone() from None

    def ack(self, stream_id: int, size: int) -> None:
        if size and not self.broken:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except h2.exceptions.ProtocolError:
                pass

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


def _ack_queue(endpoint: _Endpoint, stream_id: int, queue: _Queue) -> None:
    """Give back the window of data that will never be forwarded."""
    while queue.items:
        item = queue.items.popleft()
        if item[0] == "data":
            endpoint.ack(stream_id, item[2])


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close and read off what the client is still sending, briefly.

    Closing a socket with unread input makes the kernel send RST, and the RST can
    overtake our GOAWAY: a flooding client would see a reset, not why.
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


# ------------------------------------------------------------------ upstream side


class H2Upstream:
    """One client-role HTTP/2 connection to an upstream, shared by many streams."""

    def __init__(self, key: UpstreamKey, stream: trio.abc.Stream) -> None:
        conn = _Connection(config=_config(client_side=True, peer_proxy=key.alpn is not None))
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self.key = key
        self.ep = _Endpoint(stream, conn)
        self.streams: dict[int, _Queue] = {}
        self.goaway = False
        self.last_stream_id: int | None = None  # from the peer's GOAWAY: higher streams were never processed
        self.closed = False
        self.settled = False  # the peer's SETTINGS arrived: its stream limit is known
        # A peer proxy's reset budget for this connection, as it counts our resets (an app has no
        # such budget: None). Refusals it would count too, but we keep to its stream limit.
        self.resets = TokenBucket(RESET_RATE, RESET_BURST) if key.alpn is not None else None

    def available(self) -> bool:
        if self.closed or self.goaway or self.ep.broken:
            return False
        conn = self.ep.h2
        # Until the peer's SETTINGS arrive, no more streams than RFC 9113 6.5.2 says to expect (100).
        limit = min(conn.remote_settings.max_concurrent_streams, 1000) if self.settled else MAX_CONCURRENT_STREAMS
        open_streams = conn.open_outbound_streams
        if open_streams >= limit:
            return False
        # To a peer proxy, a new stream only while its budget could pay for resetting every stream on
        # the connection (the cancels of many callers share it): a burst of cancels never costs the
        # callers on it a GOAWAY(ENHANCE_YOUR_CALM). Beyond, the pool opens another connection.
        return self.resets is None or self.resets.level() >= open_streams + 1

    def open_stream(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> tuple[int, _Queue]:
        if self.goaway or self.closed:
            raise _GoingAway()
        conn = self.ep.h2
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers, end_stream=end_stream)
        queue = _Queue()
        self.streams[stream_id] = queue
        return stream_id, queue

    def forget(self, stream_id: int) -> None:
        queue = self.streams.pop(stream_id, None)
        if queue is not None:
            _ack_queue(self.ep, stream_id, queue)
            if self.resets is not None and self.ep.h2.reset_by_us(stream_id):
                self.resets.take()
        if not self.streams:
            self.ep.interrupt_read()  # the reader arms the idle timer

    async def run(self) -> None:
        ep = self.ep
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ep.run_writer)
                try:
                    await self._read_loop()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            await ep.drain()  # our GOAWAY or last RST_STREAMs, when the peer still listens
            ep.mark_broken()
            last = self.last_stream_id
            for stream_id, queue in list(self.streams.items()):
                # Past the GOAWAY's last stream: never processed, so it may go again elsewhere.
                queue.put(("reset", ErrorCodes.REFUSED_STREAM) if last is not None and stream_id > last else ("broken",))
            await ep.aclose()

    async def _read_loop(self) -> None:
        ep = self.ep
        ep.kick()
        while not ep.broken:
            if self.goaway and not self.streams:
                break  # the peer said GOAWAY and what it covered is done
            idle = not self.streams
            # Interrupted when the last stream goes, so an idle connection gets its timer.
            with trio.CancelScope() as scope:
                if idle:
                    scope.deadline = trio.current_time() + UPSTREAM_IDLE
                ep.read_scope = scope
                data = await ep.receive()
            ep.read_scope = None
            if scope.cancelled_caught:
                # The idle timer, not a stream that came and went while the read was idle.
                if idle and not self.streams and not ep.broken and trio.current_time() >= scope.deadline:
                    self.goaway = True
                    ep.h2.close_connection()
                    ep.kick()
                    break
                continue
            if not data:
                break
            try:
                events = ep.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                log.info("upstream %s broke HTTP/2: %s", self.key.address, exc)
                ep.kick()
                break
            for event in events:
                self._dispatch(event)
            ep.kick()
            if self.goaway and not self.streams:
                break

    def _dispatch(self, event: h2.events.Event) -> None:
        ep = self.ep
        if isinstance(event, h2.events.ResponseReceived):
            self._put(event.stream_id, ("headers", event.headers))
        elif isinstance(event, h2.events.InformationalResponseReceived):
            pass  # 100-continue and friends: not relayed over h2
        elif isinstance(event, h2.events.DataReceived):
            if event.stream_id in self.streams:
                self.streams[event.stream_id].put(("data", event.data, event.flow_controlled_length))
            else:
                ep.ack(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, h2.events.TrailersReceived):
            self._put(event.stream_id, ("trailers", event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            self._put(event.stream_id, ("end",))
        elif isinstance(event, h2.events.StreamReset):
            self._put(event.stream_id, ("reset", event.error_code))
            ep.notify()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = True
            last = self.last_stream_id = event.last_stream_id if event.last_stream_id is not None else 0
            for stream_id, queue in list(self.streams.items()):
                if stream_id > last:
                    queue.put(("reset", ErrorCodes.REFUSED_STREAM))
            ep.notify()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settled = True
            ep.notify()
        elif isinstance(event, h2.events.WindowUpdated):
            ep.notify()

    def _put(self, stream_id: int | None, item: tuple[Any, ...]) -> None:
        queue = self.streams.get(stream_id) if stream_id is not None else None
        if queue is not None:
            queue.put(item)


class H2Pool:
    """Shared HTTP/2 connections per upstream key; their reader tasks live in ``run``."""

    def __init__(self, contexts: ContextProvider | None, connect_timeout: float = 5.0) -> None:
        self.contexts = contexts
        self.connect_timeout = connect_timeout
        self._conns: dict[UpstreamKey, list[H2Upstream]] = {}
        self._locks: dict[UpstreamKey, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _usable(self, key: UpstreamKey, avoid: H2Upstream | None) -> H2Upstream | None:
        conns = self._conns.get(key)
        if conns:
            conns[:] = [c for c in conns if not c.closed]
            for conn in conns:
                if conn is not avoid and conn.available():
                    return conn
        return None

    async def get(self, key: UpstreamKey, avoid: H2Upstream | None = None) -> H2Upstream:
        """A connection with room for a stream; never ``avoid`` (one that just refused a stream)."""
        conn = self._usable(key, avoid)
        if conn is not None:
            return conn
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            conn = self._usable(key, avoid)
            if conn is not None:
                return conn
            if self._nursery is None:
                raise UpstreamConnectError("internal", "the HTTP/2 pool is not running")
            stream = await open_upstream(key, self.contexts, self.connect_timeout)
            if key.alpn is not None and getattr(stream, "selected_alpn_protocol", lambda: None)() != ALPN_H2:
                await stream.aclose()
                raise UpstreamConnectError("no-h2", f"{key.address} does not speak HTTP/2 through the mesh")
            conn = H2Upstream(key, stream)
            self._conns.setdefault(key, []).append(conn)
            self._nursery.start_soon(_guarded, conn)
            return conn


async def _guarded(conn: H2Upstream) -> None:
    """A bug met by one upstream connection ends that connection, never the proxy."""
    try:
        await conn.run()
    except Exception:  # noqa: BLE001
        log.exception("internal error on the HTTP/2 connection to %s (closed it)", conn.key.address)


# ------------------------------------------------------------------ client side

_IDLE_EVENTS = (
    h2.events.PingReceived,
    h2.events.PriorityUpdated,
    h2.events.RemoteSettingsChanged,
    h2.events.UnknownFrameReceived,
)


class _ClientStream:
    __slots__ = ("id", "headers", "queue", "scope", "reset_code", "done", "sent", "sent_bytes", "request_ended")

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.id = stream_id
        self.headers = headers
        self.queue = _Queue()
        self.scope = trio.CancelScope()
        self.reset_code: int | None = None
        self.done = False
        # What was forwarded of the request, for one replay after REFUSED_STREAM; None once too big.
        self.sent: list[tuple[Any, ...]] | None = []
        self.sent_bytes = 0
        self.request_ended = False  # the whole request (END_STREAM included) was handed to h2

    @property
    def replayable(self) -> bool:
        """The whole request was forwarded and kept: it can be sent again."""
        return self.request_ended and self.sent is not None

    def remember(self, item: tuple[Any, ...]) -> None:
        if self.sent is None:
            return
        if item[0] == "data":
            self.sent_bytes += len(item[1])
            if self.sent_bytes > REPLAY_LIMIT:
                self.sent = None
                return
        self.sent.append(item)


class H2ProxyConnection:
    """Serves one client connection that speaks HTTP/2 (h2c prior knowledge or TLS)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        prefix: bytes,
        router: Router,
        pool: H2Pool,
        record: Recorder,
        limits: Limits,
        drain: Drain,
    ) -> None:
        conn = _ServerConnection(config=_config(client_side=False))
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        self.client = _Endpoint(stream, conn)
        self.client.stall_timeout = limits.idle_timeout
        self.h2: _ServerConnection = conn
        self.prefix = prefix
        self.router = router
        self.pool = pool
        self.record = record
        self.limits = limits
        self.drain = drain
        self.streams: dict[int, _ClientStream] = {}  # every stream with a task, running or waiting
        # Tasks running: a stream reset by either side keeps its slot until its task has ended,
        # so a reset never makes room for more work than MAX_CONCURRENT_STREAMS; streams beyond
        # wait their turn (they are within the advertised limit: h2 counts them open).
        self._running = 0
        self._waiting: deque[_ClientStream] = deque()
        self._last_started = 0  # the GOAWAY's last stream: none above it was processed
        self._resets = TokenBucket(RESET_RATE, RESET_BURST)
        self._idle_frames = TokenBucket(IDLE_FRAME_RATE, IDLE_FRAME_BURST)
        self._closing = False

    async def serve(self) -> None:
        ep = self.client
        conn = ep.h2
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(ep.run_writer)
                try:
                    await self._read_loop(nursery)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            await ep.drain()
            if self._closing:
                await _linger(ep.stream)
            await ep.aclose()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        ep = self.client
        data = self.prefix
        if data:
            ep.received += len(data)
        while True:
            if data:
                conn = self.h2
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.info("%s: HTTP/2 protocol error from client: %s", self.router.direction, exc)
                    ep.kick()
                    return
                if conn.resets_answered or conn.idle_frames:
                    self._spend_answered()
                for event in events:
                    if self._closing:
                        break  # what follows the budget's end is not processed (the GOAWAY says so)
                    self._dispatch(event, nursery)
                ep.kick()  # never waits: streams' senders take the back-pressure
                if self._closing or ep.broken:
                    return
            if self.drain.draining and not self.streams:
                ep.h2.close_connection()
                return
            idle = not self.streams
            scope = self.drain.idle_scope(self.limits.idle_timeout) if idle else trio.CancelScope()
            ep.read_scope = scope  # interrupted when the last stream ends: then the idle timer starts
            try:
                with scope:
                    data = await ep.receive()
            finally:
                self.drain.done(scope)
                ep.read_scope = None
            if scope.cancelled_caught:
                if ep.broken:
                    return
                # Idle timeout, or draining. Not when the last stream's clean-up interrupted a read
                # that had already started idle (it sent GOAWAY(NO_ERROR) at the end of floods).
                if idle and not self.streams and (self.drain.draining or trio.current_time() >= scope.deadline):
                    ep.h2.close_connection()
                    return
                data = b""
                continue
            if not data:
                return

    def _dispatch(self, event: h2.events.Event, nursery: trio.Nursery) -> None:
        ep = self.client
        if isinstance(event, h2.events.RequestReceived):
            if self.drain.draining or self._closing:
                ep.reset(event.stream_id, ErrorCodes.REFUSED_STREAM)
                return
            over_limit = self.h2.over_limit
            if over_limit and event.stream_id in over_limit:
                over_limit.discard(event.stream_id)
                ep.reset(event.stream_id, ErrorCodes.REFUSED_STREAM)  # RFC 9113 5.1.2: clients retry it
                self._spend_reset("opened streams beyond SETTINGS_MAX_CONCURRENT_STREAMS")
                return
            st = _ClientStream(event.stream_id, list(event.headers))
            self.streams[st.id] = st
            if self._running < MAX_CONCURRENT_STREAMS:
                self._start(st, nursery)
            else:
                self._waiting.append(st)
        elif isinstance(event, h2.events.DataReceived):
            if not event.data and event.stream_ended is None:
                self._spend_idle_frame("empty DATA frames")
            st = self.streams.get(event.stream_id)
            if st is not None and not st.done:
                st.queue.put(("data", event.data, event.flow_controlled_length))
            else:
                ep.ack(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, _IDLE_EVENTS):
            self._spend_idle_frame(type(event).__name__)
            ep.notify()
        elif isinstance(event, h2.events.TrailersReceived):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.queue.put(("trailers", list(event.headers)))
        elif isinstance(event, h2.events.StreamEnded):
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.queue.put(("end",))
        elif isinstance(event, h2.events.StreamReset):
            # The client's reset (Rapid Reset), or h2's answer to a frame after END_STREAM (MadeYouReset).
            self._spend_reset("reset streams too fast (Rapid Reset)" if event.remote_reset else "sent frames on streams it had ended (MadeYouReset)")
            st = self.streams.get(event.stream_id)
            if st is not None:
                st.reset_code = event.error_code
                st.scope.cancel()
            ep.notify()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._spend_idle_frame("GOAWAY")  # a graceful GOAWAY keeps the connection: not for free
            ep.notify()
        elif isinstance(event, h2.events.WindowUpdated):
            ep.notify()

    def _spend_idle_frame(self, what: str) -> None:
        if not self._closing and not self._idle_frames.take():
            self._calm_down(f"sent a flood of frames that carry nothing ({what})")

    def _spend_reset(self, why: str) -> None:
        if not self._closing and not self._resets.take():
            self._calm_down(why)

    def _spend_answered(self) -> None:
        """Charge what h2 answered on its own in the last read: RST_STREAMs, ignored frames."""
        conn = self.h2
        resets, idle, conn.resets_answered, conn.idle_frames = conn.resets_answered, conn.idle_frames, 0, 0
        if self._closing:
            return
        if resets and not self._resets.take(resets):
            self._calm_down("sent frames on closed streams, each answered with RST_STREAM (MadeYouReset)")
        elif idle and not self._idle_frames.take(idle):
            self._calm_down("sent a flood of frames on streams it had been told were reset")

    def _calm_down(self, why: str) -> None:
        log.warning("%s: the client %s; GOAWAY(ENHANCE_YOUR_CALM)", self.router.direction, why)
        # What h2 answered to the read that broke the budget (a RST_STREAM per frame) is not sent;
        # every stream is ended with the connection anyway.
        self.h2.clear_outbound_data_buffer()
        self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self._last_started)
        self._closing = True

    def _start(self, st: _ClientStream, nursery: trio.Nursery) -> None:
        self._running += 1
        self._last_started = st.id
        nursery.start_soon(self._serve_stream, st)

    # -- one stream -----------------------------------------------------------

    async def _serve_stream(self, st: _ClientStream) -> None:
        started = time.perf_counter()
        pseudo = {k: v for k, v in st.headers if k.startswith(b":")}
        regular = [(k, v) for k, v in st.headers if not k.startswith(b":")]
        method = pseudo.get(b":method", b"GET")
        path = pseudo.get(b":path", b"/")
        authority = pseudo.get(b":authority") or next((v for k, v in regular if k == b"host"), b"")
        content_type = next((v for k, v in regular if k == b"content-type"), b"")
        grpc = content_type.startswith(b"application/grpc")
        head = RequestHead(
            method,
            path,
            [(b"host", authority)] + [(k, v) for k, v in regular if k != b"host"],
            b"2.0",
            True,
            Framing.CHUNKED,
            None,
            False,
        )
        outcome: dict[str, Any] = {"status": 0, "mesh_error": None, "grpc_status": None, "bytes_out": 0, "retries": 0}
        decision: Forward | Reject | None = None
        try:
            with st.scope:
                if st.reset_code is not None:
                    return  # opened and reset at once (Rapid Reset): no routing, nothing upstream
                if method == b"CONNECT":
                    decision = Reject(405, "bad-request", "CONNECT over HTTP/2 is not supported by the mesh")
                else:
                    decision = self.router.route(head)
                if isinstance(decision, Reject):
                    await self._error(st, grpc, decision.status, decision.reason, decision.message, outcome)
                    return
                await self._forward(st, head, regular, authority, grpc, decision, outcome)
        finally:
            st.done = True
            self.streams.pop(st.id, None)
            self._running -= 1
            if self._waiting and not self._closing:
                self._start(self._waiting.popleft(), self._nursery)
            _ack_queue(self.client, st.id, st.queue)
            if st.reset_code is not None and outcome["status"] == 0:
                outcome["mesh_error"] = outcome["mesh_error"] or CLIENT_RESET
            if isinstance(decision, Forward):
                # A caller's cancel is not the endpoint's fault: no outlier strike for it.
                verdict = endpoint_verdict(outcome["status"], outcome["mesh_error"], outcome["grpc_status"])
                decision = outcome.get("forward", decision)  # the last attempt, after retries
                self.router.finished(decision, started, verdict)
            self.record(
                RequestRecord(
                    self.router.direction,
                    decision.peer_service if decision is not None else "",
                    method,
                    authority,
                    path,
                    outcome["status"],
                    (time.perf_counter() - started) * 1000.0,
                    outcome["mesh_error"],
                    bytes_out=outcome["bytes_out"],
                    head=head,
                    forward=decision if isinstance(decision, Forward) else None,
                    grpc_status=outcome["grpc_status"],
                    retries=outcome["retries"],
                )
            )
            with trio.CancelScope(shield=True):
                await self.client.flush()
            if not self.streams:
                self.client.interrupt_read()

    async def _error(
        self, st: _ClientStream, grpc: bool, status: int, reason: str, message: str, outcome: dict[str, Any]
    ) -> None:
        outcome["mesh_error"] = reason
        conn = self.client.h2
        try:
            if grpc:
                code = grpc_status_for(status)
                outcome["status"] = 200
                outcome["grpc_status"] = code
                headers = [
                    (b":status", b"200"),
                    (b"content-type", b"application/grpc"),
                    (b"grpc-status", str(code).encode()),
                    (b"grpc-message", quote(f"mesh: {message}", safe=" ").encode()),
                    (b"x-mesh-error", reason.encode()),
                ]
                conn.send_headers(st.id, headers, end_stream=True)
            else:
                outcome["status"] = status
                body = f"mesh: {message}\n".encode()
                headers = [
                    (b":status", str(status).encode()),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-mesh-error", reason.encode()),
                ]
                conn.send_headers(st.id, headers, end_stream=False)
                await self.client.send_data(st.id, body, end=True)
        except (h2.exceptions.ProtocolError, _StreamGone):
            return
        await self.client.flush()

    def _request_headers(
        self, regular: list[tuple[bytes, bytes]], method: bytes, authority: bytes, scheme: bytes, decision: Forward
    ) -> list[tuple[bytes, bytes]]:
        headers = [(b":method", method), (b":scheme", scheme), (b":authority", authority), (b":path", decision.target)]
        cleaned = clean_headers(regular)
        if decision.drop_headers:
            cleaned = [(k, v) for k, v in cleaned if k not in decision.drop_headers]
        headers += cleaned
        headers += [(k.lower(), v) for k, v in decision.add_headers]
        return headers

    async def _forward(
        self,
        st: _ClientStream,
        head: RequestHead,
        regular: list[tuple[bytes, bytes]],
        authority: bytes,
        grpc: bool,
        decision: Forward,
        outcome: dict[str, Any],
    ) -> None:
        timeout: float | None = decision.timeout
        if grpc:
            timeout = parse_grpc_timeout(next((v for k, v in regular if k == b"grpc-timeout"), None))
        deadline = trio.current_time() + timeout if timeout is not None else float("inf")
        if decision.delay:
            await trio.sleep(decision.delay)
        current = decision
        retry = decision.retry
        retries_left = retry.attempts if retry is not None and may_retry(head.method, 0, retry.retryable) else 0
        if retries_left:
            self.router.requested(decision)  # only requests that may be retried earn retry budget

        def next_attempt(status: int | None, nothing_sent: bool = False) -> Forward | None:
            """The route's retry for this outcome (None: no response), or None to give up."""
            nonlocal retries_left
            if retries_left <= 0 or not retry_condition(status, retry.on):
                return None
            if not nothing_sent and not (st.replayable and may_retry(head.method, st.sent_bytes, retry.retryable)):
                return None
            nxt = self.router.retry_to(current)
            if nxt is None:
                return None
            retries_left -= 1
            outcome["retries"] += 1
            return nxt

        refused = 0
        refused_by: H2Upstream | None = None
        failed_over = False
        while True:
            if current.key.alpn == ALPN_HTTP1:
                current = replace(current, key=replace(current.key, alpn=ALPN_H2))
            outcome["forward"] = current
            headers = self._request_headers(regular, head.method, authority, b"http", current)
            if st.reset_code is not None:
                return  # reset by the client before it was sent: never reaches the upstream
            try:
                with trio.CancelScope(deadline=deadline) as connect_scope:
                    upstream = await self.pool.get(current.key, avoid=refused_by)
            except UpstreamConnectError as exc:
                nxt = next_attempt(None, nothing_sent=True)
                if nxt is None and not failed_over:
                    # Nothing was sent: another endpoint is always safe (once, outside retry budgets).
                    nxt = self.router.failover_to(current)
                    failed_over = nxt is not None
                if nxt is not None:
                    current = nxt
                    continue
                await self._error(st, grpc, 502, exc.reason, exc.message, outcome)
                return
            if connect_scope.cancelled_caught:
                await self._timeout(st, grpc, current, timeout, outcome)
                return
            if st.reset_code is not None:
                return
            may_replay = refused < REFUSED_ATTEMPTS - 1
            step = await self._attempt(
                st, upstream, headers, grpc, current, timeout, deadline, outcome, may_replay, next_attempt if retries_left else None
            )
            if step is None:
                return
            if step is current:
                # REFUSED_STREAM (e.g. the upstream's GOAWAY crossed our new stream): never processed, so
                # what was forwarded (kept while small) goes again on a fresh connection.
                refused += 1
                refused_by = upstream
                log.debug("%s: %s refused a stream; sending it again", self.router.direction, current.key.address)
            else:
                current = step  # the route's retry, on another endpoint when there is one
            assert st.sent is not None
            st.queue.items.extendleft(reversed(st.sent))
            st.sent = []
            st.sent_bytes = 0
            st.request_ended = False

    async def _attempt(
        self,
        st: _ClientStream,
        upstream: H2Upstream,
        headers: list[tuple[bytes, bytes]],
        grpc: bool,
        decision: Forward,
        timeout: float | None,
        deadline: float,
        outcome: dict[str, Any],
        may_replay: bool,
        retry: Callable[[int | None], Forward | None] | None,
    ) -> Forward | None:
        """One upstream stream. Returns ``decision`` when the stream was refused unprocessed (send it
        again), the route's next attempt when its answer calls for a retry, None when done."""
        key = decision.key
        end_now = bool(st.queue.items) and st.queue.items[0][0] == "end"
        if end_now:
            st.queue.items.popleft()
            st.remember(("end",))
        again: Forward | None = None
        try:
            up_id, up_queue = upstream.open_stream(headers, end_stream=end_now)
            st.request_ended = end_now
        except _GoingAway:
            if may_replay:
                return decision
            await self._error(st, grpc, 502, "upstream-closed", f"{key.address} is going away", outcome)
            return None
        except h2.exceptions.ProtocolError as exc:
            await self._error(st, grpc, 502, "upstream-refused", f"cannot open a stream to {key.address}: {exc}", outcome)
            return None
        up = upstream.ep
        outcome["status"] = 0  # nothing of an earlier attempt counts for this one
        outcome["grpc_status"] = None
        response_started = False
        response_complete = False
        try:
            await up.flush()
            async with trio.open_nursery() as nursery:
                if not end_now:
                    nursery.start_soon(self._pump_request, st, upstream, up_id)
                # Response head, within the deadline.
                item: tuple[Any, ...] | None = None
                with trio.CancelScope(deadline=deadline) as scope:
                    item = await up_queue.get()
                if scope.cancelled_caught:
                    up.reset(up_id, ErrorCodes.CANCEL)
                    await up.flush()
                    nursery.cancel_scope.cancel()
                    await self._timeout(st, grpc, decision, timeout, outcome)
                    response_complete = True
                    return None
                while True:
                    assert item is not None
                    kind = item[0]
                    if kind == "headers":
                        resp = item[1]
                        status = next((v for k, v in resp if k == b":status"), b"")
                        if len(status) != 3 or not status.isdigit():  # h2 does not check it
                            nursery.cancel_scope.cancel()
                            await self._error(st, grpc, 502, "upstream-protocol", f"{key.address} sent :status {status!r}", outcome)
                            response_complete = True
                            return None
                        outcome["status"] = int(status)
                        gs = next((v for k, v in resp if k == b"grpc-status"), None)
                        if gs is not None and gs.isdigit():
                            outcome["grpc_status"] = int(gs)
                        ended = bool(up_queue.items) and up_queue.items[0][0] == "end"
                        if retry is not None:
                            # Decided on the head alone: a gRPC failure is retried only when trailers-only.
                            again = retry(_status_for_retry(int(status), outcome["grpc_status"] if ended else None))
                            if again is not None:
                                nursery.cancel_scope.cancel()
                                return again
                        out = [(b":status", status)] + clean_headers(resp)
                        self.client.send_headers(st.id, out, end=ended)
                        response_started = True
                        if ended:
                            up_queue.items.popleft()
                            response_complete = True
                            await self.client.flush()
                            break
                        await self.client.flush()
                    elif kind == "data":
                        await self.client.send_data(st.id, item[1], end=False, flush=False)
                        outcome["bytes_out"] += len(item[1])
                        up.ack(up_id, item[2])
                        if not up_queue.items:  # a batch is done: one write each way
                            await self.client.flush()
                            await up.flush()
                    elif kind == "trailers":
                        trailers = clean_headers(item[1])
                        gs = next((v for k, v in trailers if k == b"grpc-status"), None)
                        if gs is not None and gs.isdigit():
                            outcome["grpc_status"] = int(gs)
                        self.client.send_headers(st.id, trailers, end=True)
                        await self.client.flush()
                        if up_queue.items and up_queue.items[0][0] == "end":
                            up_queue.items.popleft()
                        response_complete = True
                        break
                    elif kind == "end":
                        await self.client.send_data(st.id, b"", end=True)
                        response_complete = True
                        break
                    elif kind in ("reset", "broken"):
                        code = item[1] if kind == "reset" else ErrorCodes.INTERNAL_ERROR
                        if not response_started and st.reset_code is None:
                            if may_replay and code == ErrorCodes.REFUSED_STREAM and st.sent is not None:
                                again = decision
                            elif retry is not None:
                                again = retry(None)
                            if again is not None:
                                nursery.cancel_scope.cancel()
                                return again
                        if not response_started:
                            reason = "upstream-reset" if kind == "reset" else "upstream-closed"
                            nursery.cancel_scope.cancel()
                            await self._error(
                                st, grpc, 502, reason, f"{key.address} ended the stream (error code {int(code)})", outcome
                            )
                            response_complete = True
                            return None
                        outcome["mesh_error"] = "upstream-reset"
                        self.client.reset(st.id, code)
                        await self.client.flush()
                        nursery.cancel_scope.cancel()
                        return None
                    item = await up_queue.get()
                # The response is complete; the request side ends on its own or is cut.
                nursery.cancel_scope.cancel()
        except* _StreamStalled:
            outcome["mesh_error"] = "stream-idle"
            log.info("%s: stream %d waited on its reader for %gs; reset", self.router.direction, st.id, self.client.stall_timeout)
        except* _StreamGone:
            pass  # the client went away or reset (raised in the nursery, so grouped): the finally resets upstream
        finally:
            with trio.CancelScope(shield=True):
                if again is not None:
                    up.reset_if_open(up_id, ErrorCodes.CANCEL)
                elif not response_complete:
                    self.client.reset(st.id, ErrorCodes.CANCEL if st.reset_code is None else st.reset_code)
                    up.reset(up_id, ErrorCodes.CANCEL)
                else:
                    # The response is complete: what is still open of the exchange (the client's
                    # request, our request upstream) is stopped (RFC 9113 8.1).
                    self.client.reset_if_open(st.id, ErrorCodes.NO_ERROR)
                    up.reset_if_open(up_id, ErrorCodes.CANCEL)
                upstream.forget(up_id)
                await up.flush()
                await self.client.flush()
        return None

    async def _timeout(
        self, st: _ClientStream, grpc: bool, decision: Forward, timeout: float | None, outcome: dict[str, Any]
    ) -> None:
        await self._error(
            st,
            grpc,
            504,
            "timeout",
            f"{decision.peer_service or 'upstream'} did not answer within {timeout or 0:g}s",
            outcome,
        )

    async def _pump_request(self, st: _ClientStream, upstream: H2Upstream, up_id: int) -> None:
        up = upstream.ep
        while True:
            item = await st.queue.get()
            kind = item[0]
            try:
                if kind == "data":
                    end = bool(st.queue.items) and st.queue.items[0][0] == "end"
                    if end:
                        st.queue.items.popleft()
                    # Remembered before sending: a replay must include what may be half-sent.
                    st.remember(("data", item[1], 0))
                    if end:
                        st.remember(("end",))
                    try:
                        await up.send_data(up_id, item[1], end=end, flush=end or not st.queue.items)
                    finally:
                        self.client.ack(st.id, item[2])
                    if end or not st.queue.items:
                        await self.client.flush()
                    if end:
                        st.request_ended = True
                        return
                elif kind == "trailers":
                    st.remember(item)
                    up.send_headers(up_id, clean_headers(item[1]), end=True)
                    st.request_ended = True
                    await up.flush()
                    return
                elif kind == "end":
                    st.remember(item)
                    await up.send_data(up_id, b"", end=True)
                    st.request_ended = True
                    return
            except (_StreamGone, h2.exceptions.ProtocolError):
                return
