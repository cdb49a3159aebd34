"""The HTTP/2 (and so gRPC) proxy loop: one accepted connection, many streams.

Each client stream is routed on its own (the router sees an HTTP/1-like
``RequestHead`` made of ``:method``, ``:path`` and ``:authority``) and forwarded
as a stream of ONE shared HTTP/2 connection per upstream key (``H2Pool``).
Headers, DATA and trailers are relayed both ways; received data is acknowledged
(flow control) only once the other side took it, so a slow reader slows only
its own stream. RST_STREAM travels both ways. What to do after each attempt is
the ``AttemptPlan``'s call (mesh/proxy/_exchange.py), as on HTTP/1.

Hardening (docs/security.md lists every budget and why; ``_h2_guard.py``): 100
concurrent streams per connection, counted by the work still running (a reset
stream holds its slot until its task has ended; streams beyond the advertised
limit get REFUSED_STREAM, the connection lives); 64 KiB header lists; one reset
budget and one idle-frame budget per connection, whose exhaustion ends it with
GOAWAY(ENHANCE_YOUR_CALM); a stream that waits on its reader's flow-control
window longer than the idle timeout is reset.

Errors the mesh makes (``_grpc.failure_response``): for gRPC requests a
trailers-only HTTP 200 with ``grpc-status``/``grpc-message`` and ``x-mesh-error``;
otherwise the status code with ``x-mesh-error`` and a one-line body.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.net import linger
from mesh.proxy._drain import Drain
from mesh.proxy._exchange import (
    Forward,
    Reason,
    Recorder,
    Reject,
    RequestRecord,
    Router,
    Timeouts,
)
from mesh.proxy._h2_downgrade import forward_http1
from mesh.proxy._h2_exchange import StreamExchange
from mesh.proxy._h2_guard import IDLE_EVENTS, Guard, ServerConnection
from mesh.proxy._h2_stream import ClientStream
from mesh.proxy._h2_transport import (
    CONNECTION_WINDOW,
    DEFAULT_WINDOW,
    END,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    STREAM_WINDOW,
    Body,
    H2Endpoint,
    Headers,
    Trailers,
    h2_config,
)
from mesh.proxy._h2_upstream import H2Pool
from mesh.proxy._pool import ConnectionPool

log = logging.getLogger("mesh.proxy")


class H2ProxyConnection:
    """Serves one client connection that speaks HTTP/2 (h2c prior knowledge or TLS)."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        prefix: bytes,
        router: Router,
        pool: H2Pool,
        record: Recorder,
        timeouts: Timeouts,
        drain: Drain,
    ) -> None:
        conn = ServerConnection(config=h2_config(client_side=False))
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        self.client = H2Endpoint(stream, conn)
        self.client.stall_timeout = timeouts.idle_timeout
        self.h2: ServerConnection = conn
        self.prefix = prefix
        self.router = router
        self.pool = pool
        self.record = record
        self.timeouts = timeouts
        self.drain = drain
        self.streams: dict[int, ClientStream] = {}  # every stream with a task, running or waiting
        # Tasks running: a stream reset by either side keeps its slot until its task has ended,
        # so a reset never makes room for more work than MAX_CONCURRENT_STREAMS; streams beyond
        # wait their turn (they are within the advertised limit: the codec counts them open).
        self._running = 0
        self._waiting: deque[ClientStream] = deque()
        self._last_started = 0  # the GOAWAY's last stream: none above it was processed
        self.guard = Guard()
        self.http1_pool: ConnectionPool | None = None  # for streams a gateway sends on as HTTP/1.1 (Forward.downgrade)
        self._closing = False
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return (
            f"<H2ProxyConnection {self.router.direction} streams={len(self.streams)} running={self._running}"
            f" waiting={len(self._waiting)}{' closing' if self._closing else ''}>"
        )

    async def serve(self) -> None:
        ep = self.client
        conn = ep.h2
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
        # Our SETTINGS leave the codec's buffer now: a budget broken by the client's first read clears
        # that buffer, and the connection must still start with SETTINGS (RFC 9113 3.4).
        ep.kick()
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
                await linger(ep.stream)
            await ep.aclose()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        ep = self.client
        data = self.prefix
        if data:
            ep.received += len(data)
        # On a connection with no stream, bytes that make no whole frame start the head deadline: a
        # frame (a HEADERS block and its CONTINUATIONs) dribbled a byte a second is cut, as on HTTP/1.
        head_due: float | None = None
        while True:
            if data:
                conn = self.h2
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.info("%s: HTTP/2 protocol error from client: %s", self.router.direction, exc)
                    ep.kick()
                    return
                if events or self.streams:
                    head_due = None
                elif head_due is None:
                    head_due = trio.current_time() + self.timeouts.head_timeout
                if conn.resets_answered or conn.idle_frames:
                    self._calm_down(self.guard.answered(conn))
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
            scope = self.drain.idle_scope(self.timeouts.idle_timeout) if idle else trio.CancelScope()
            if idle and head_due is not None:
                scope.deadline = min(scope.deadline, head_due)
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
                if idle and not self.streams and head_due is not None and trio.current_time() >= head_due:
                    log.info(
                        "%s: a partial HTTP/2 frame waited %gs for its end; closed",
                        self.router.direction,
                        self.timeouts.head_timeout,
                    )
                    ep.h2.close_connection()
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
        match event:
            case h2.events.RequestReceived():
                self._open(event.stream_id, list(event.headers), nursery)
            case h2.events.DataReceived():
                if not event.data and event.stream_ended is None:
                    self._calm_down(self.guard.idle_frame("empty DATA frames"))
                st = self.streams.get(event.stream_id)
                if st is not None and not st.done:
                    st.received += len(event.data)
                    st.queue.put(Body(event.data, event.flow_controlled_length))
                else:
                    ep.ack(event.stream_id, event.flow_controlled_length)
            case h2.events.TrailersReceived():
                if (st := self.streams.get(event.stream_id)) is not None:
                    st.queue.put(Trailers(list(event.headers)))
            case h2.events.StreamEnded():
                if (st := self.streams.get(event.stream_id)) is not None:
                    st.queue.put(END)
            case h2.events.StreamReset():
                # The client's reset (Rapid Reset), or the codec's answer to a frame after END_STREAM (MadeYouReset).
                self._calm_down(
                    self.guard.reset(
                        "reset streams too fast (Rapid Reset)"
                        if event.remote_reset
                        else "sent frames on streams it had ended (MadeYouReset)"
                    )
                )
                if (st := self.streams.get(event.stream_id)) is not None:
                    st.reset_code = event.error_code
                    st.scope.cancel()
                ep.notify()
            case h2.events.ConnectionTerminated():
                self._calm_down(self.guard.idle_frame("GOAWAY"))  # a graceful GOAWAY keeps the connection
                ep.notify()
            case h2.events.WindowUpdated():
                ep.notify()
            case _ if isinstance(event, IDLE_EVENTS):
                self._calm_down(self.guard.idle_frame(type(event).__name__))
                ep.notify()

    def _open(self, stream_id: int, headers: Headers, nursery: trio.Nursery) -> None:
        ep = self.client
        if self.drain.draining or self._closing:
            ep.reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        over_limit = self.h2.over_limit
        if over_limit and stream_id in over_limit:
            over_limit.discard(stream_id)
            ep.reset(stream_id, ErrorCodes.REFUSED_STREAM)  # RFC 9113 5.1.2: clients retry it
            self._calm_down(self.guard.reset("opened streams beyond SETTINGS_MAX_CONCURRENT_STREAMS"))
            return
        st = ClientStream(stream_id, headers)
        self.streams[st.id] = st
        if self._running < MAX_CONCURRENT_STREAMS:
            self._start(st, nursery)
        else:
            self._waiting.append(st)

    def _calm_down(self, why: str | None) -> None:
        if why is None or self._closing:
            return
        log.warning("%s: the client %s; GOAWAY(ENHANCE_YOUR_CALM)", self.router.direction, why)
        # What the codec answered to the read that broke the budget (a RST_STREAM per frame) is not sent;
        # every stream is ended with the connection anyway.
        self.h2.clear_outbound_data_buffer()
        self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=self._last_started)
        self._closing = True

    def _start(self, st: ClientStream, nursery: trio.Nursery) -> None:
        self._running += 1
        self._last_started = st.id
        nursery.start_soon(self._serve_stream, st)

    # -- one stream -----------------------------------------------------------

    async def _serve_stream(self, st: ClientStream) -> None:
        started = time.perf_counter()
        exchange = StreamExchange(self, st)
        outcome = exchange.outcome
        decision: Forward | Reject | None = None
        try:
            with st.scope:
                if st.reset_code is not None:
                    return  # opened and reset at once (Rapid Reset): no routing, nothing upstream
                if exchange.head.method == b"CONNECT":
                    decision = Reject(405, Reason.BAD_REQUEST, "CONNECT over HTTP/2 is not supported by the mesh")
                else:
                    decision = self.router.route(exchange.head)
                if isinstance(decision, Reject):
                    await exchange.fail(decision.failure())
                    return
                if decision.downgrade and self.http1_pool is not None:
                    await forward_http1(exchange, decision, self.http1_pool)
                else:
                    await exchange.forward(decision)
            if exchange.head_timed_out:
                await exchange.fail(exchange._timed_out())
                self.client.reset_if_open(st.id, ErrorCodes.NO_ERROR)  # what is left of the request is not read
        finally:
            st.done = True
            self.streams.pop(st.id, None)
            self._running -= 1
            if self._waiting and not self._closing and self._nursery is not None:
                self._start(self._waiting.popleft(), self._nursery)
            self.client.ack_queue(st.id, st.queue)
            if st.reset_code is not None and outcome.status == 0:
                outcome.mesh_error = outcome.mesh_error or Reason.CLIENT_RESET
            if isinstance(decision, Forward):
                # A caller's cancel is not the endpoint's fault: no outlier strike for it.
                self.router.finished(outcome.forward or decision, started, outcome.verdict)
            head = exchange.head
            self.record(
                RequestRecord(
                    self.router.direction,
                    decision.peer_service if decision is not None else "",
                    head.method,
                    exchange.authority,
                    head.target,
                    outcome.status,
                    (time.perf_counter() - started) * 1000.0,
                    outcome.mesh_error,
                    bytes_in=st.received,
                    bytes_out=outcome.bytes_out,
                    head=head,
                    forward=outcome.forward if isinstance(decision, Forward) else None,
                    grpc_status=outcome.grpc_status,
                    retries=outcome.retries,
                )
            )
            if self.client.unsent():  # a shielded scope only when there is something to write
                with trio.CancelScope(shield=True):
                    await self.client.flush()
            if not self.streams:
                self.client.interrupt_read()
