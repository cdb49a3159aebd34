"""HTTP/2 from a client, HTTP/1.1 to the endpoint: a gateway in front of an app that speaks HTTP/1 only.

Browsers and most clients speak HTTP/2 to an edge over TLS (ALPN ``h2``); most apps speak
HTTP/1.1. Elsewhere the mesh keeps a request's protocol end to end (an HTTP/2 caller
needs an h2c app), so the gateway translates when the service's endpoints do not
declare ``http2`` or ``grpc`` and the request is not gRPC (``EdgeRouter`` sets
``Forward.downgrade``).

One client stream becomes one HTTP/1.1 exchange on a pooled mTLS connection (ALPN
``http/1.1``): ``:method``, ``:path`` and ``:authority`` (as Host), the headers
(cookies joined, RFC 9113 8.2.3), the body with its Content-Length when the client gave
one (or the whole body arrived with the head), else chunked with its trailers; back
come the response head (1xx dropped: HTTP/2 has no use for them here), the body and
the trailers as HTTP/2 frames. A request whose whole body came with its head is
retried, replayed and failed over as on HTTP/1; one still streaming fails over only
when connecting failed (nothing was sent). Data from the client is acknowledged once
written upstream, so a slow app slows only its stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from h2.errors import ErrorCodes

from mesh.proxy._conn import PeerClosed
from mesh.proxy._exchange import AttemptPlan, ConnectFailure, Failure, Forward, GiveUp, Reason
from mesh.proxy._h2_transport import Body, End, Headers, StreamGone, StreamStalled, Trailers
from mesh.proxy._pool import ConnectionPool, UpstreamConnection
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import (
    Data,
    EndOfMessage,
    Framing,
    ResponseHead,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
    strip_hop_by_hop,
)

if TYPE_CHECKING:
    from mesh.proxy._h2_exchange import StreamExchange

log = logging.getLogger("mesh.proxy")

_NOT_FORWARDED = frozenset({b"content-length", b"cookie"})  # set again below


class _Again(Exception):
    """The plan wants another attempt (nothing of this one reached the client)."""


async def forward_http1(exchange: StreamExchange, decision: Forward, pool: ConnectionPool) -> None:
    """Forward the client stream of ``exchange`` as HTTP/1.1, attempt after attempt as its plan says."""
    outcome = exchange.outcome
    body = _whole_body(exchange)  # None: the body is still arriving (streamed, never kept)
    plan = AttemptPlan(
        exchange.conn.router,
        decision,
        retryable=body is not None and AttemptPlan.retryable(exchange.head.method, len(body), decision),
    )
    try:
        if plan.delay:
            await trio.sleep(plan.delay)  # an injected fault
        deadline = trio.current_time() + decision.timeout  # for every attempt together
        while True:
            current = outcome.forward = plan.current
            try:
                upstream = await pool.acquire(current.key)
            except ConnectFailure as failure:
                if isinstance(plan.connect_failed(failure), GiveUp):
                    await exchange.fail(failure)
                    return
                continue
            upstream.reader.expect(exchange.head.method)
            attempt = _Attempt(exchange, upstream, current, body, plan)
            try:
                reusable = await attempt.run(deadline)
            except _Again:
                await upstream.aclose()
                continue
            except Failure as failure:  # nothing of a response reached the client
                await upstream.aclose()
                await exchange.fail(failure)
                return
            except BaseException:
                await upstream.aclose()
                raise
            await pool.release(upstream, reusable)
            return
    except StreamStalled:
        outcome.mesh_error = Reason.STREAM_IDLE
        exchange.client.reset(exchange.st.id, ErrorCodes.CANCEL)
    except StreamGone:
        pass  # the client went away: _serve_stream records it
    finally:
        outcome.retries = plan.retries
        with trio.CancelScope(shield=True):
            await exchange.client.flush()


def _whole_body(exchange: StreamExchange) -> bytes | None:
    """The request body when all of it arrived with the head (taken from the queue, acknowledged)."""
    items = exchange.st.queue.items
    count = 0
    for item in items:
        count += 1
        if isinstance(item, End):
            break
        if not isinstance(item, Body):
            return None  # trailers: streamed, as chunked
    else:
        return None
    parts = []
    for _ in range(count):
        item = items.popleft()
        if isinstance(item, Body):
            parts.append(item.data)
            exchange.client.ack(exchange.st.id, item.flow)
    return b"".join(parts)


def _request_head(exchange: StreamExchange, forward: Forward, body: bytes | None) -> tuple[bytes, Framing]:
    """The HTTP/1.1 head of the stream's request, and how its body is framed."""
    from mesh.proxy._h2_stream import clean_headers

    regular = exchange.regular
    headers: Headers = [(b"host", exchange.authority)]
    headers += [(k, v) for k, v in clean_headers(regular) if k not in _NOT_FORWARDED and k not in forward.drop_headers]
    headers = [(k, v) for k, v in headers if k != b"te"]  # "te: trailers" means something to HTTP/2 only
    cookies = [v for k, v in regular if k == b"cookie"]
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    headers += forward.add_headers
    length = next((v for k, v in regular if k == b"content-length"), None)
    if body is not None:
        framing = Framing.LENGTH if body or length is not None else Framing.NONE
        if framing is Framing.LENGTH:
            headers.append((b"content-length", b"%d" % len(body)))
    elif length is not None:
        framing = Framing.LENGTH  # the codec holds the DATA frames to it
        headers.append((b"content-length", length))
    else:
        framing = Framing.CHUNKED
    return encode_request_head(exchange.head.method, forward.target, headers, framing), framing


class _Attempt:
    """One HTTP/1.1 exchange for the client stream: the request out (whole, or streamed by a task),
    the response back. ``run`` returns whether the upstream connection may be reused; it raises
    ``_Again`` for another attempt and ``Failure`` when the client should get a mesh-made answer."""

    def __init__(
        self,
        exchange: StreamExchange,
        upstream: UpstreamConnection,
        forward: Forward,
        body: bytes | None,
        plan: AttemptPlan,
    ) -> None:
        self.exchange = exchange
        self.upstream = upstream
        self.forward = forward
        self.body = body
        self.plan = plan
        self.request_sent = False
        self.response_deadline = float("inf")  # set once the request is sent
        self.waiting: trio.CancelScope | None = None  # the wait for the response head, to move its deadline
        self.pump_failure: Failure | None = None
        self.response_started = False  # the client has the response head

    async def run(self, deadline: float) -> bool:
        head_bytes, framing = _request_head(self.exchange, self.forward, self.body)
        result: bool | None = None
        raised: BaseException | None = None
        async with trio.open_nursery() as nursery:
            try:
                if self.body is not None:
                    try:
                        await self.upstream.send(head_bytes + self.body)
                    except PeerClosed:
                        self._stale()
                    self.request_sent = True
                    self.response_deadline = deadline
                else:
                    nursery.start_soon(self._pump, head_bytes, framing, nursery)
                result = await self._relay()
            except (Failure, _Again, StreamGone) as exc:  # raised after the nursery, not grouped
                raised = exc
            finally:
                nursery.cancel_scope.cancel()
        if raised is not None:
            raise raised
        if result is None:  # the request body failed (the pump said why)
            assert self.pump_failure is not None
            if self.response_started:
                return self._cut(self.pump_failure.reason)
            raise self.pump_failure
        return result and self.request_sent

    def _stale(self) -> None:
        """Closed before any byte of a response: a pooled connection that died while idle (replayed
        on a fresh one), or an endpoint that dropped the request."""
        if not isinstance(self.plan.stale(reused=self.upstream.uses > 1), GiveUp):
            raise _Again()
        raise Failure(
            Reason.UPSTREAM_CLOSED, 502, f"{self.upstream.key.address} closed the connection without answering"
        )

    async def _pump(self, head_bytes: bytes, framing: Framing, nursery: trio.Nursery) -> None:
        """Send the head, then the body as the client sends it; a stall either way ends the exchange."""
        exchange, upstream = self.exchange, self.upstream
        client, st = exchange.client, exchange.st
        stall = exchange.conn.timeouts.body_timeout
        chunked = framing is Framing.CHUNKED
        try:
            await upstream.send(head_bytes)
            while True:
                with trio.move_on_after(stall) as waited:
                    item = await st.queue.get()
                if waited.cancelled_caught:
                    self._pump_failed(
                        Failure(Reason.BODY_TIMEOUT, 408, f"the request body stalled for {stall:g}s"), nursery
                    )
                    return
                if isinstance(item, Body):
                    out = encode_chunk(item.data) if chunked else item.data
                elif isinstance(item, Trailers):
                    out = encode_last_chunk(list(item.headers)) if chunked else b""
                    chunked = False  # the message ended with its trailers; End follows
                elif isinstance(item, End):
                    out = encode_last_chunk([]) if chunked else b""
                else:
                    return
                if out:
                    with trio.move_on_after(stall) as waited:
                        await upstream.send(out)
                    if waited.cancelled_caught:
                        failure = Failure(
                            Reason.UPSTREAM_BODY_TIMEOUT,
                            504,
                            f"{upstream.key.address} stopped reading the request body",
                        )
                        self._pump_failed(failure, nursery)
                        return
                if isinstance(item, Body):
                    client.ack(st.id, item.flow)  # only now: a slow app slows only its stream
                    if not st.queue.items:
                        await client.flush()
                elif isinstance(item, End):
                    self.request_sent = True
                    self.response_deadline = trio.current_time() + self.forward.timeout
                    if self.waiting is not None:
                        self.waiting.deadline = self.response_deadline
                    return
        except PeerClosed:
            return  # the upstream stopped taking the body: its answer (or its absence) says why

    def _pump_failed(self, failure: Failure, nursery: trio.Nursery) -> None:
        self.pump_failure = failure
        nursery.cancel_scope.cancel()

    async def _relay(self) -> bool:
        """Relay the response; returns whether the upstream connection may be reused."""
        exchange, upstream, outcome = self.exchange, self.upstream, self.exchange.outcome
        client, st = exchange.client, exchange.st
        response: ResponseHead | None = None
        while True:
            try:
                if response is None:
                    with trio.CancelScope(deadline=self.response_deadline) as waiting:
                        self.waiting = waiting
                        events = await upstream.receive_events()
                    self.waiting = None
                    if waiting.cancelled_caught:
                        who = self.forward.peer_service or "upstream"
                        raise Failure(Reason.TIMEOUT, 504, f"{who} did not answer within {self.forward.timeout:g}s")
                else:
                    events = await upstream.receive_events()
            except PeerClosed:
                if response is None:
                    self._stale()
                try:
                    events = upstream.reader.feed_eof()
                except RemoteProtocolError:
                    events = []
                if not events:
                    return self._cut(Reason.UPSTREAM_RESET)
            except RemoteProtocolError as exc:
                if response is None:
                    raise Failure(Reason.BAD_RESPONSE, 502, f"invalid response from upstream: {exc}") from None
                return self._cut(Reason.UPSTREAM_RESET)
            for index, event in enumerate(events):
                if isinstance(event, ResponseHead):
                    if event.informational:
                        continue  # 100 Continue and friends: the HTTP/2 client gets the final answer
                    if self.plan.may_retry and not isinstance(self.plan.answered(event.status), GiveUp):
                        raise _Again()
                    response = event
                    outcome.status = event.status
                    headers = [(b":status", b"%d" % event.status)]
                    headers += [(k.lower(), v) for k, v in strip_hop_by_hop(event.headers)]
                    client.send_headers(st.id, headers, end=False)
                    self.response_started = True
                elif isinstance(event, Data):
                    await client.send_data(st.id, event.data, end=False, flush=False)
                    outcome.bytes_out += len(event.data)
                elif isinstance(event, EndOfMessage):
                    if event.trailers:
                        client.send_headers(st.id, [(k.lower(), v) for k, v in event.trailers], end=True)
                    else:
                        await client.send_data(st.id, b"", end=True, flush=False)
                    client.reset_if_open(st.id, ErrorCodes.NO_ERROR)  # answered before the request ended (RFC 9113 8.1)
                    await client.flush()
                    upstream.pending = events[index + 1 :]
                    assert response is not None
                    return response.keep_alive and response.framing is not Framing.CLOSE
            await client.flush()

    def _cut(self, reason: Reason) -> bool:
        """The upstream broke mid-response: the client's stream is reset, never ended as if whole."""
        self.exchange.outcome.mesh_error = reason
        self.exchange.client.reset(self.exchange.st.id, ErrorCodes.INTERNAL_ERROR)
        return False
