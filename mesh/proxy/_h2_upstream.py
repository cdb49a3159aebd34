"""Shared HTTP/2 connections to upstreams: one per key carries the streams of many callers.

``H2Pool`` hands out a connection with room for one more stream (opening one when
needed, never the one that just refused a stream); each connection's reading task
turns the codec's events (h2's event classes) into each stream's events (``StreamQueue``).
"""

from __future__ import annotations

import logging

import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.net import ALPN_H2
from mesh.proxy._exchange import ConnectFailure, Reason, UpstreamKey
from mesh.proxy._h2_guard import RESET_BURST, RESET_RATE
from mesh.proxy._h2_transport import (
    BROKEN,
    CONNECTION_WINDOW,
    DEFAULT_WINDOW,
    END,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    STREAM_WINDOW,
    Body,
    H2Endpoint,
    Head,
    Headers,
    Reset,
    StreamEvent,
    StreamQueue,
    Trailers,
    h2_config,
)
from mesh.proxy._policy import TokenBucket
from mesh.proxy._pool import ContextProvider, open_upstream
from mesh.proxy.protocol.http2 import Connection

log = logging.getLogger("mesh.proxy")

UPSTREAM_IDLE = 60.0  # an upstream connection with no stream for this long is closed


class GoingAway(Exception):
    """The upstream connection said GOAWAY since it was picked: the stream goes on another one."""


class H2Upstream:
    """One client-role HTTP/2 connection to an upstream, shared by many streams."""

    def __init__(self, key: UpstreamKey, stream: trio.abc.Stream) -> None:
        conn = Connection(config=h2_config(client_side=True, peer_proxy=key.alpn is not None))
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self.key = key
        self.ep = H2Endpoint(stream, conn)
        self.streams: dict[int, StreamQueue] = {}
        self.goaway = False
        self.last_stream_id: int | None = None  # from the peer's GOAWAY: higher streams were never processed
        self.closed = False
        self.settled = False  # the peer's SETTINGS arrived: its stream limit is known
        # A peer proxy's reset budget for this connection, as it counts our resets (an app has no
        # such budget: None). Refusals it would count too, but we keep to its stream limit.
        self.resets = TokenBucket(RESET_RATE, RESET_BURST) if key.alpn is not None else None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "going-away" if self.goaway else "open"
        return f"<H2Upstream {self.key.address} {state} streams={len(self.streams)}>"

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

    def open_stream(self, headers: Headers, end_stream: bool) -> tuple[int, StreamQueue]:
        if self.goaway or self.closed:
            raise GoingAway()
        conn = self.ep.h2
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers, end_stream=end_stream)
        queue = StreamQueue()
        self.streams[stream_id] = queue
        return stream_id, queue

    def forget(self, stream_id: int) -> None:
        queue = self.streams.pop(stream_id, None)
        if queue is not None:
            self.ep.ack_queue(stream_id, queue)
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
                queue.put(Reset(ErrorCodes.REFUSED_STREAM) if last is not None and stream_id > last else BROKEN)
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
        match event:
            case h2.events.ResponseReceived():
                self._put(event.stream_id, Head(event.headers))
            case h2.events.InformationalResponseReceived():
                pass  # 100-continue and friends: not relayed over h2
            case h2.events.DataReceived():
                queue = self.streams.get(event.stream_id)
                if queue is not None:
                    queue.put(Body(event.data, event.flow_controlled_length))
                else:
                    ep.ack(event.stream_id, event.flow_controlled_length)
            case h2.events.TrailersReceived():
                self._put(event.stream_id, Trailers(event.headers))
            case h2.events.StreamEnded():
                self._put(event.stream_id, END)
            case h2.events.StreamReset():
                self._put(event.stream_id, Reset(event.error_code))
                ep.notify()
            case h2.events.ConnectionTerminated():
                self.goaway = True
                last = self.last_stream_id = event.last_stream_id if event.last_stream_id is not None else 0
                for stream_id, queue in list(self.streams.items()):
                    if stream_id > last:
                        queue.put(Reset(ErrorCodes.REFUSED_STREAM))
                ep.notify()
            case h2.events.RemoteSettingsChanged():
                self.settled = True
                ep.notify()
            case h2.events.WindowUpdated():
                ep.notify()

    def _put(self, stream_id: int | None, item: StreamEvent) -> None:
        queue = self.streams.get(stream_id) if stream_id is not None else None
        if queue is not None:
            queue.put(item)


class H2Pool:
    """Shared HTTP/2 connections per upstream key; their reader tasks live in ``run``."""

    def __init__(self, contexts: ContextProvider | None, connect_timeout: float = 5.0) -> None:
        self.contexts = contexts
        self.connect_timeout = connect_timeout
        self.open_stream = open_upstream  # how a connection is opened (in-process tests script it)
        self._conns: dict[UpstreamKey, list[H2Upstream]] = {}
        self._locks: dict[UpstreamKey, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<H2Pool keys={len(self._conns)} connections={sum(len(c) for c in self._conns.values())}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def ready(self, key: UpstreamKey, avoid: H2Upstream | None = None) -> H2Upstream | None:
        """An open connection with room for a stream, without waiting; None: ``get`` one."""
        return self._usable(key, avoid)

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
                raise ConnectFailure(Reason.INTERNAL, "the HTTP/2 pool is not running")
            stream = await self.open_stream(key, self.contexts, self.connect_timeout)
            if key.alpn is not None and getattr(stream, "selected_alpn_protocol", lambda: None)() != ALPN_H2:
                await stream.aclose()
                raise ConnectFailure(Reason.NO_H2, f"{key.address} does not speak HTTP/2 through the mesh")
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
