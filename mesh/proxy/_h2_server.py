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
import math
import time
from collections import deque
from dataclasses import replace

import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple

from mesh.net import ALPN_H2, ALPN_HTTP1, linger
from mesh.proxy._drain import Drain
from mesh.proxy._exchange import (
    AttemptPlan,
    ConnectFailure,
    Failure,
    Forward,
    GiveUp,
    Outcome,
    Reason,
    Recorder,
    Reject,
    Replay,
    RequestRecord,
    Router,
    Step,
    Timeouts,
    UpstreamKey,
)
from mesh.proxy._grpc import failure_response, grpc_status_of, parse_grpc_timeout, status_for_retry
from mesh.proxy._h2_downgrade import forward_http1
from mesh.proxy._h2_guard import IDLE_EVENTS, Guard, ServerConnection
from mesh.proxy._h2_transport import (
    CONNECTION_WINDOW,
    DEFAULT_WINDOW,
    END,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    STREAM_WINDOW,
    Body,
    Broken,
    End,
    H2Endpoint,
    Head,
    Headers,
    Reset,
    StreamEvent,
    StreamGone,
    StreamQueue,
    StreamStalled,
    Trailers,
    h2_config,
)
from mesh.proxy._h2_upstream import GoingAway, H2Pool, H2Upstream
from mesh.proxy._policy import may_retry
from mesh.proxy._pool import ConnectionPool
from mesh.proxy.protocol.http1 import HOP_BY_HOP, Framing, RequestHead

log = logging.getLogger("mesh.proxy")

REPLAY_LIMIT = 64 * 1024  # request bytes kept for a replay after REFUSED_STREAM (or a retry)

_SECRET = frozenset({b"authorization", b"proxy-authorization"})
_STRIP = HOP_BY_HOP | {b"host", b"http2-settings"}


def clean_headers(headers: Headers) -> Headers:
    """Regular headers minus hop-by-hop and ``connection``-named ones; ``te: trailers`` kept."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    out: Headers = []
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


class _ClientStream:
    """One client stream: its events, its task's scope, and what was forwarded of its request."""

    __slots__ = (
        "id",
        "headers",
        "queue",
        "scope",
        "reset_code",
        "done",
        "sent",
        "sent_bytes",
        "request_ended",
        "received",
    )

    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.id = stream_id
        self.headers = headers
        self.queue = StreamQueue()
        self.scope = trio.CancelScope()
        self.reset_code: int | None = None
        self.done = False
        # What was forwarded of the request, for a replay (REFUSED_STREAM) or a retry; None once too big.
        self.sent: list[StreamEvent] | None = []
        self.sent_bytes = 0
        self.request_ended = False  # the whole request (END_STREAM included) was handed to h2
        self.received = 0  # request DATA bytes from the client

    def __repr__(self) -> str:
        reset = " reset" if self.reset_code is not None else ""
        return f"<ClientStream {self.id} queued={len(self.queue.items)} kept={self.sent_bytes}{reset}>"

    @property
    def replayable(self) -> bool:
        """The whole request was forwarded and kept: it can be sent again."""
        return self.request_ended and self.sent is not None

    def remember(self, item: StreamEvent) -> None:
        if self.sent is None:
            return
        if isinstance(item, Body):
            self.sent_bytes += len(item.data)
            if self.sent_bytes > REPLAY_LIMIT:
                self.sent = None
                return
        self.sent.append(item)

    def requeue(self) -> None:
        """Put what was forwarded back in front of the queue, for the next attempt."""
        assert self.sent is not None
        self.queue.items.extendleft(reversed(self.sent))
        self.sent = []
        self.sent_bytes = 0
        self.request_ended = False


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
        self.streams: dict[int, _ClientStream] = {}  # every stream with a task, running or waiting
        # Tasks running: a stream reset by either side keeps its slot until its task has ended,
        # so a reset never makes room for more work than MAX_CONCURRENT_STREAMS; streams beyond
        # wait their turn (they are within the advertised limit: h2 counts them open).
        self._running = 0
        self._waiting: deque[_ClientStream] = deque()
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
        # Our SETTINGS leave h2's buffer now: a budget broken by the client's first read clears
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
                # The client's reset (Rapid Reset), or h2's answer to a frame after END_STREAM (MadeYouReset).
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
        st = _ClientStream(stream_id, headers)
        self.streams[st.id] = st
        if self._running < MAX_CONCURRENT_STREAMS:
            self._start(st, nursery)
        else:
            self._waiting.append(st)

    def _calm_down(self, why: str | None) -> None:
        if why is None or self._closing:
            return
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
        exchange = _StreamExchange(self, st)
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


_h2_keys: dict[UpstreamKey, UpstreamKey] = {}


def _as_h2(key: UpstreamKey) -> UpstreamKey:
    """The key of a peer proxy's HTTP/2 connections (the same endpoint), made once per endpoint."""
    found = _h2_keys.get(key)
    if found is None:
        if len(_h2_keys) >= 4096:  # endpoints come and go: a bound, not an eviction policy
            _h2_keys.clear()
        found = _h2_keys[key] = replace(key, alpn=ALPN_H2)
    return found


class _NoPump:
    """Stands for the nursery of an attempt that needs no pump task (the request ended with its
    head, or all of it was sent before the response's wait): cancelling it has nothing to stop."""

    class _Scope:
        def cancel(self) -> None:
            pass

    cancel_scope = _Scope()

    def start_soon(self, *args: object) -> None:
        raise AssertionError("an attempt without a request body starts no task")

    async def __aenter__(self) -> _NoPump:
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False


_NO_PUMP = _NoPump()


class _StreamExchange:
    """One client stream's request, forwarded attempt after attempt as its ``AttemptPlan`` says."""

    def __init__(self, conn: H2ProxyConnection, st: _ClientStream) -> None:
        self.conn = conn
        self.client = conn.client
        self.st = st
        pseudo = {k: v for k, v in st.headers if k.startswith(b":")}
        self.regular = [(k, v) for k, v in st.headers if not k.startswith(b":")]
        self.authority = pseudo.get(b":authority") or next((v for k, v in self.regular if k == b"host"), b"")
        content_type = next((v for k, v in self.regular if k == b"content-type"), b"")
        self.grpc = content_type.startswith(b"application/grpc")
        self.head = RequestHead(
            pseudo.get(b":method", b"GET"),
            pseudo.get(b":path", b"/"),
            [(b"host", self.authority)] + [(k, v) for k, v in self.regular if k != b"host"],
            b"2.0",
            True,
            Framing.CHUNKED,
            None,
            False,
        )
        self.outcome = Outcome()
        self.timeout: float | None = None
        self.head_timed_out = False  # the response head did not come within the deadline: 504

    def __repr__(self) -> str:
        return f"<StreamExchange {self.st!r} {self.head.method!r} {self.head.target!r} {self.outcome}>"

    async def fail(self, failure: Failure) -> None:
        """Answer the client with a mesh-made error (its stream may already be gone)."""
        headers, body = failure_response(failure, self.grpc, self.outcome)
        try:
            self.client.send_headers(self.st.id, headers, end=body is None)
            if body is not None:
                await self.client.send_data(self.st.id, body, end=True)
                self.outcome.bytes_out += len(body)
        except StreamGone:
            return
        await self.client.flush()

    def _timed_out(self) -> Failure:
        forward = self.outcome.forward
        service = forward.peer_service if forward is not None else ""
        return Failure(Reason.TIMEOUT, 504, f"{service or 'upstream'} did not answer within {self.timeout or 0:g}s")

    def _request_headers(self, forward: Forward) -> Headers:
        head = self.head
        headers: Headers = [
            (b":method", head.method),
            (b":scheme", b"http"),
            (b":authority", self.authority),
            (b":path", forward.target),
        ]
        cleaned = clean_headers(self.regular)
        if forward.drop_headers:
            cleaned = [(k, v) for k, v in cleaned if k not in forward.drop_headers]
        headers += cleaned
        headers += [(k.lower(), v) for k, v in forward.add_headers]
        return headers

    def _replayable(self, forward: Forward) -> bool:
        """What was forwarded of the request was kept whole and may be sent again."""
        st = self.st
        retry = forward.retry
        return st.replayable and retry is not None and may_retry(self.head.method, st.sent_bytes, retry.retryable)

    async def forward(self, decision: Forward) -> None:
        st = self.st
        outcome = self.outcome
        self.timeout = decision.timeout
        if self.grpc:
            self.timeout = parse_grpc_timeout(next((v for k, v in self.regular if k == b"grpc-timeout"), None))
        deadline = trio.current_time() + self.timeout if self.timeout is not None else float("inf")
        plan = AttemptPlan(self.conn.router, decision, retryable=AttemptPlan.retryable(self.head.method, 0, decision))
        try:
            if plan.delay:
                await trio.sleep(plan.delay)
            avoid: H2Upstream | None = None  # a connection that refused the stream
            while True:
                current = plan.current
                if current.key.alpn == ALPN_HTTP1:
                    current = replace(current, key=_as_h2(current.key))
                outcome.forward = current
                if st.reset_code is not None:
                    return  # reset by the client before it was sent: never reaches the upstream
                # A shared connection with room is the common case: no wait, so no deadline to keep.
                upstream = self.conn.pool.ready(current.key, avoid)
                if upstream is None:
                    try:
                        with trio.CancelScope(deadline=deadline) as connecting:
                            upstream = await self.conn.pool.get(current.key, avoid=avoid)
                    except ConnectFailure as failure:
                        if isinstance(plan.connect_failed(failure), GiveUp):
                            await self.fail(failure)
                            return
                        continue
                    if connecting.cancelled_caught:
                        await self.fail(self._timed_out())
                        return
                if st.reset_code is not None:
                    return
                assert upstream is not None  # a ready one, or one the pool opened in time
                step = await self._attempt(upstream, current, deadline, plan)
                if step is None:
                    return
                if isinstance(step, Replay):
                    # Refused unprocessed (e.g. the upstream's GOAWAY crossed our new stream): what was
                    # forwarded (kept while small) goes again on a fresh connection.
                    avoid = upstream
                    log.debug(
                        "%s: %s refused a stream; sending it again", self.conn.router.direction, current.key.address
                    )
                st.requeue()
        finally:
            outcome.retries = plan.retries

    async def _attempt(self, upstream: H2Upstream, forward: Forward, deadline: float, plan: AttemptPlan) -> Step | None:
        """One upstream stream: None when the exchange is over, or the plan's next step."""
        st = self.st
        outcome = self.outcome
        key = forward.key
        end_now = st.queue.next_is_end()
        if end_now:
            st.queue.items.popleft()
            st.remember(END)
        step: Step | None = None
        try:
            up_id, up_queue = upstream.open_stream(self._request_headers(forward), end_stream=end_now)
            st.request_ended = end_now
        except GoingAway:
            step = plan.refused(replayable=st.sent is not None)
            if isinstance(step, GiveUp):
                await self.fail(Failure(Reason.UPSTREAM_CLOSED, 502, f"{key.address} is going away"))
                return None
            return step
        except h2.exceptions.ProtocolError as exc:
            await self.fail(Failure(Reason.UPSTREAM_REFUSED, 502, f"cannot open a stream to {key.address}: {exc}"))
            return None
        up = upstream.ep
        client = self.client
        outcome.status = 0  # nothing of an earlier attempt counts for this one
        outcome.grpc_status = None
        response_started = False
        response_complete = False
        try:
            # A request that is all here (a unary gRPC call: HEADERS, DATA and END_STREAM in one read)
            # and fits the upstream's window is sent now, with its head in one write, and needs no
            # pump task and no nursery (~20 us a stream); else a task pumps it while the response comes.
            inline = not end_now and self._whole_request_fits(up, up_id)
            if inline:
                await self._pump_request(upstream, up_id)
            else:
                await up.flush()
            async with _NO_PUMP if end_now or inline else trio.open_nursery() as nursery:
                if not (end_now or inline):
                    nursery.start_soon(self._pump_request, upstream, up_id)
                # Response head, within the deadline. The stream's own scope keeps it (a scope of its
                # own costs ~5 us a stream): when it passes, the stream unwinds to _serve_stream,
                # which answers 504 once out of the cancelled scope.
                item = await self._response_head(up_queue, deadline)
                while True:
                    match item:
                        case Head(headers=resp):
                            status = next((v for k, v in resp if k == b":status"), b"")
                            if len(status) != 3 or not status.isdigit():  # h2 does not check it
                                nursery.cancel_scope.cancel()
                                await self.fail(
                                    Failure(Reason.UPSTREAM_PROTOCOL, 502, f"{key.address} sent :status {status!r}")
                                )
                                response_complete = True
                                return None
                            outcome.status = int(status)
                            outcome.grpc_status = grpc_status_of(resp)
                            ended = up_queue.next_is_end()
                            if plan.may_retry:
                                # Decided on the head alone: a gRPC failure is retried only when trailers-only.
                                retry_status = status_for_retry(outcome.status, outcome.grpc_status if ended else None)
                                step = plan.answered(retry_status, replayable=self._replayable(forward))
                                if not isinstance(step, GiveUp):
                                    nursery.cancel_scope.cancel()
                                    return step
                                step = None
                            client.send_headers(st.id, [(b":status", status)] + clean_headers(resp), end=ended)
                            response_started = True
                            if ended:
                                up_queue.items.popleft()
                                response_complete = True
                                await client.flush()
                                break
                            await client.flush()
                        case Body(data=data, flow=flow):
                            await client.send_data(st.id, data, end=False, flush=False)
                            outcome.bytes_out += len(data)
                            up.ack(up_id, flow)
                            if not up_queue.items:  # a batch is done: one write each way
                                await client.flush()
                                await up.flush()
                        case Trailers(headers=raw):
                            trailers = clean_headers(raw)
                            grpc_status = grpc_status_of(trailers)
                            if grpc_status is not None:
                                outcome.grpc_status = grpc_status
                            client.send_headers(st.id, trailers, end=True)
                            await client.flush()
                            if up_queue.next_is_end():
                                up_queue.items.popleft()
                            response_complete = True
                            break
                        case End():
                            await client.send_data(st.id, b"", end=True)
                            response_complete = True
                            break
                        case Reset() | Broken():
                            code = item.code if isinstance(item, Reset) else ErrorCodes.INTERNAL_ERROR
                            if not response_started and st.reset_code is None:
                                if code == ErrorCodes.REFUSED_STREAM and st.sent is not None:
                                    step = plan.refused(replayable=True)
                                elif plan.may_retry:
                                    step = plan.ended_without_answer(replayable=self._replayable(forward))
                                if step is not None and not isinstance(step, GiveUp):
                                    nursery.cancel_scope.cancel()
                                    return step
                                step = None
                            if not response_started:
                                reason = Reason.UPSTREAM_RESET if isinstance(item, Reset) else Reason.UPSTREAM_CLOSED
                                nursery.cancel_scope.cancel()
                                await self.fail(
                                    Failure(reason, 502, f"{key.address} ended the stream (error code {int(code)})")
                                )
                                response_complete = True
                                return None
                            outcome.mesh_error = Reason.UPSTREAM_RESET
                            client.reset(st.id, code)
                            await client.flush()
                            nursery.cancel_scope.cancel()
                            return None
                    item = await up_queue.get()
                # The response is complete; the request side ends on its own or is cut.
                nursery.cancel_scope.cancel()
        except* StreamStalled:
            outcome.mesh_error = Reason.STREAM_IDLE
            log.info(
                "%s: stream %d waited on its reader for %gs; reset",
                self.conn.router.direction,
                st.id,
                client.stall_timeout,
            )
        except* StreamGone:
            pass  # the client went away or reset (raised in the nursery, so grouped): the finally resets upstream
        finally:
            if step is not None or self.head_timed_out:
                up.reset_if_open(up_id, ErrorCodes.CANCEL)
            elif not response_complete:
                client.reset(st.id, ErrorCodes.CANCEL if st.reset_code is None else st.reset_code)
                up.reset(up_id, ErrorCodes.CANCEL)
            else:
                # The response is complete: what is still open of the exchange (the client's
                # request, our request upstream) is stopped (RFC 9113 8.1).
                client.reset_if_open(st.id, ErrorCodes.NO_ERROR)
                up.reset_if_open(up_id, ErrorCodes.CANCEL)
            upstream.forget(up_id)
            if up.unsent() or client.unsent():  # a shielded scope only when there is something to write
                with trio.CancelScope(shield=True):
                    await up.flush()
                    await client.flush()
        return None

    async def _response_head(self, up_queue: StreamQueue, deadline: float) -> StreamEvent:
        if deadline == math.inf:
            return await up_queue.get()
        scope = self.st.scope
        scope.deadline = deadline
        try:
            return await up_queue.get()
        except trio.Cancelled:
            if self.st.reset_code is None and trio.current_time() >= deadline:
                self.head_timed_out = True
            raise
        finally:
            scope.deadline = math.inf

    def _whole_request_fits(self, up: H2Endpoint, up_id: int) -> bool:
        """The rest of the request, to its end, is queued, and the upstream's window takes all of it."""
        size = 0
        for item in self.st.queue.items:
            if isinstance(item, Body):
                size += len(item.data)
            elif isinstance(item, (End, Trailers)):
                return size <= up.h2.local_flow_control_window(up_id)
            else:
                return False  # reset or broken: the pump task's way deals with it
        return False

    async def _pump_request(self, upstream: H2Upstream, up_id: int) -> None:
        st = self.st
        client = self.client
        up = upstream.ep
        while True:
            item = await st.queue.get()
            try:
                match item:
                    case Body(data=data, flow=flow):
                        end = st.queue.next_is_end()
                        if end:
                            st.queue.items.popleft()
                        # Remembered before sending: a replay must include what may be half-sent.
                        st.remember(Body(data, 0))
                        if end:
                            st.remember(END)
                        try:
                            await up.send_data(up_id, data, end=end, flush=end or not st.queue.items)
                        finally:
                            client.ack(st.id, flow)
                        if end or not st.queue.items:
                            await client.flush()
                        if end:
                            st.request_ended = True
                            return
                    case Trailers(headers=headers):
                        st.remember(item)
                        up.send_headers(up_id, clean_headers(headers), end=True)
                        st.request_ended = True
                        await up.flush()
                        return
                    case End():
                        st.remember(item)
                        await up.send_data(up_id, b"", end=True)
                        st.request_ended = True
                        return
            except (StreamGone, h2.exceptions.ProtocolError):
                return
