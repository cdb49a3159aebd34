"""The HTTP/1 proxy loop: one accepted connection, many requests.

For each request: read the head (deadline), let the router decide (pure),
then do the I/O: take a pooled upstream connection, send the head, stream the
body both ways with back-pressure, and record what happened. The inbound and
outbound stacks differ only in their router.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from mesh.proxy._conn import HttpConnection, PeerClosed, relay_bytes
from mesh.proxy._exchange import CLIENT_RESET, endpoint_verdict
from mesh.proxy._policy import may_retry, retry_condition
from mesh.proxy._pool import ConnectionPool, UpstreamConnectError, UpstreamConnection, UpstreamKey, open_upstream
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import (
    Data,
    EndOfMessage,
    Event,
    Framing,
    Headers,
    RequestHead,
    RequestReader,
    ResponseHead,
    Upgraded,
    complete_body_length,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
    encode_response_head,
    response_framing,
    simple_response,
    strip_hop_by_hop,
)

log = logging.getLogger("mesh.proxy")

MESH_ERROR = b"x-mesh-error"


@dataclass(frozen=True, slots=True)
class Limits:
    head_timeout: float = 10.0  # a whole request head must arrive within this, from its first byte (408)
    idle_timeout: float = 300.0  # keep-alive connection with no request
    request_timeout: float = 10.0  # response head must arrive within this once the request is sent (504)
    body_timeout: float = 30.0  # a request body that stalls this long is cut (408; 504 when the app stalls)
    drain_timeout: float = 10.0


@dataclass(slots=True)
class Forward:
    """Send the request to ``key``."""

    key: UpstreamKey
    peer_service: str
    target: bytes
    add_headers: Headers = field(default_factory=list)
    drop_headers: frozenset[bytes] = frozenset()
    timeout: float = 10.0
    endpoint: str | None = None  # address for balancer feedback
    tunnel: bool = False  # CONNECT: answer 200 and relay bytes
    route: str | None = None  # name of the matched route, for metrics
    retry: Any = None  # RetryPolicy of the route, when retries are on
    candidates: tuple[Any, ...] = ()  # endpoints a retry may go to; outlier detection's peers
    delay: float = 0.0  # injected fault delay before forwarding


@dataclass(slots=True)
class Reject:
    """Answer the request ourselves: a mesh-made error."""

    status: int
    reason: str
    message: str
    peer_service: str = ""


class Router(Protocol):
    direction: str

    def route(self, head: RequestHead) -> Forward | Reject: ...

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        """``success`` None: the outcome says nothing of the endpoint (the client went away)."""

    def requested(self, forward: Forward) -> None: ...

    def retry_to(self, forward: Forward) -> Forward | None: ...

    def failover_to(self, forward: Forward) -> Forward | None: ...


@dataclass(slots=True)
class RequestRecord:
    """What the proxy observed of one request; metrics and tap read it.

    ``head`` and ``forward`` are references (no copying on the hot path): the
    tap reads the request id, the chosen endpoint, its identity and whether the
    hop is mTLS from them, and only while someone listens.
    """

    direction: str
    peer_service: str
    method: bytes
    authority: bytes
    path: bytes
    status: int
    latency_ms: float
    mesh_error: str | None
    bytes_in: int = 0
    bytes_out: int = 0  # response bytes written to the client
    head: RequestHead | None = None
    forward: Forward | None = None  # None when the mesh answered without routing
    retries: int = 0  # attempts beyond the first (actual requests = 1 + retries)
    grpc_status: int | None = None  # gRPC calls: the grpc-status the caller got (0 = OK)


Recorder = Callable[[RequestRecord], None]


class Drain:
    """Graceful shutdown: stop taking new requests, let the current ones end."""

    def __init__(self) -> None:
        self.draining = False
        self._idle_scopes: set[trio.CancelScope] = set()

    def start(self) -> None:
        self.draining = True
        for scope in list(self._idle_scopes):
            scope.cancel()

    def idle_scope(self, timeout: float) -> trio.CancelScope:
        scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        if self.draining:
            scope.cancel()
        self._idle_scopes.add(scope)
        return scope

    def done(self, scope: trio.CancelScope) -> None:
        self._idle_scopes.discard(scope)


class _UpstreamBroken(Exception):
    """The upstream failed after part of the response went to the client."""


class _ClientGone(Exception):
    """The client closed or reset its connection mid-exchange: never the endpoint's failure."""


class _BodyFailed(Exception):
    """The request body could not be carried: the client stalled or sent a malformed body (its
    fault), or the upstream stopped reading it. Answered with ``status`` if no response began."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class _UpstreamStopped(Exception):
    """The upstream stopped taking the request body (it answered early, or died): its response decides."""


def mesh_error_response(status: int, reason: str, message: str, keep_alive: bool, http10: bool = False) -> bytes:
    return simple_response(
        status,
        f"mesh: {message}\n".encode(),
        [(b"x-mesh-error", reason.encode())],
        keep_alive=keep_alive,
        http10=http10,
    )


class HttpProxyConnection:
    """Serves one client connection that speaks HTTP/1."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        prefix: bytes,
        router: Router,
        pool: ConnectionPool,
        record: Recorder,
        limits: Limits,
        drain: Drain,
    ) -> None:
        self.client: HttpConnection[RequestReader] = HttpConnection(stream, RequestReader())
        self.prefix = prefix
        self.router = router
        self.pool = pool
        self.record = record
        self.limits = limits
        self.drain = drain
        self._attempt: Forward | None = None  # the attempt in flight (retries replace it)
        self._retries = 0
        # The first head's budget runs from when the listener accepted the connection.
        self.head_deadline: float | None = None
        self._response_deadline = float("inf")  # for the response head; set once the request is sent
        self._response_wait: trio.CancelScope | None = None  # the wait for it, to move its deadline
        self._status = 0  # the status the upstream answered in the current exchange (0: none yet)

    async def serve(self) -> None:
        client = self.client
        try:
            if self.prefix:
                client.received += len(self.prefix)
                try:
                    client.pending = client.reader.feed(self.prefix)
                except RemoteProtocolError as exc:
                    await self._protocol_error(exc)
                    return
            while True:
                head = await self._next_head()
                if head is None:
                    return
                if not await self._exchange(head):
                    return
                if self.drain.draining:
                    return
        except PeerClosed:
            return
        finally:
            await client.aclose()

    # -- reading the request head -------------------------------------------

    async def _next_head(self) -> RequestHead | None:
        """The next request head; None when the connection should end (idle, closed, refused).

        The whole head, partial heads included, must arrive within ``head_timeout`` of its first
        byte (of the connection, for the first request): a budget, not a limit per read.
        """
        client = self.client
        deadline, self.head_deadline = self.head_deadline, None
        while not client.pending:
            if deadline is None and not client.reader.in_head:
                # Between requests: wait for the first byte of the next one.
                scope = self.drain.idle_scope(self.limits.idle_timeout)
                try:
                    with scope:
                        data = await client.receive_bytes()
                finally:
                    self.drain.done(scope)
                if scope.cancelled_caught:
                    return None
                deadline = trio.current_time() + self.limits.head_timeout
            else:
                if deadline is None:  # a partial head arrived with the previous request
                    deadline = trio.current_time() + self.limits.head_timeout
                data = b""
                with trio.move_on_at(deadline) as scope:
                    data = await client.receive_bytes()
                if scope.cancelled_caught:
                    await client.send(mesh_error_response(408, "head-timeout", "request head not received in time", False))
                    self._record_local(408, "head-timeout")
                    return None
            if not data:
                return None
            try:
                client.pending = client.reader.feed(data)
            except RemoteProtocolError as exc:
                await self._protocol_error(exc)
                return None
        head = client.pending.pop(0)
        assert isinstance(head, RequestHead)
        return head

    async def _protocol_error(self, exc: RemoteProtocolError) -> None:
        reason = "header-too-large" if exc.status == 431 else "bad-request"
        log.info("%s: rejected client request: %s", self.router.direction, exc)
        self._record_local(exc.status, reason)
        try:
            await self.client.send(mesh_error_response(exc.status, reason, str(exc), keep_alive=False))
        except PeerClosed:
            pass

    def _record_local(self, status: int, reason: str) -> None:
        self.record(RequestRecord(self.router.direction, "", b"", b"", b"", status, 0.0, reason))

    # -- one request/response exchange ---------------------------------------

    async def _exchange(self, head: RequestHead) -> bool:
        """Forward one request; returns whether the client connection stays open."""
        started = time.perf_counter()
        decision = self.router.route(head)
        authority = head.header(b"host") or b""
        if isinstance(decision, Reject):
            return await self._reject(head, decision, started, authority)
        if head.upgrade:
            return await self._tunnel(head, decision, started, authority)

        status = 0
        mesh_error: str | None = None
        sent_before = self.client.sent
        self._attempt = decision
        self._retries = 0
        self._status = 0
        try:
            if decision.delay:
                await trio.sleep(decision.delay)  # an injected fault
            status, keep = await self._forward(head, decision)
            return keep and head.keep_alive
        except _ClientGone:
            mesh_error = CLIENT_RESET
            status = self._status  # what the upstream had answered, if anything
            return False
        except _BodyFailed as exc:
            mesh_error = exc.reason
            if self.client.sent > sent_before:  # the response had begun: all we can do is close
                status = self._status
                log.info("%s: %s (after the response began; closed)", self.router.direction, exc.message)
                return False
            status = exc.status
            log.info("%s: %s", self.router.direction, exc.message)
            try:
                await self.client.send(mesh_error_response(exc.status, exc.reason, exc.message, keep_alive=False))
            except PeerClosed:
                pass
            return False
        except UpstreamConnectError as exc:
            mesh_error = exc.reason
            status = 502
            return await self._send_error(head, 502, exc.reason, exc.message)
        except trio.TooSlowError:
            mesh_error = "timeout"
            status = 504
            return await self._send_error(
                head, 504, "timeout", f"{decision.peer_service or 'upstream'} did not answer within {decision.timeout:g}s"
            )
        except _UpstreamBroken as exc:
            mesh_error = "upstream-reset"
            status = status or 502
            log.info("%s: %s", self.router.direction, exc)
            return False
        finally:
            decision = self._attempt  # the last attempt is the one that answered
            self.router.finished(decision, started, endpoint_verdict(status, mesh_error))
            self._record(
                head,
                decision,
                authority,
                status,
                started,
                mesh_error,
                bytes_out=self.client.sent - sent_before,
                retries=self._retries,
            )

    async def _reject(self, head: RequestHead, decision: Reject, started: float, authority: bytes) -> bool:
        self._record(head, decision, authority, decision.status, started, decision.reason)
        return await self._send_error(head, decision.status, decision.reason, decision.message)

    def _record(
        self,
        head: RequestHead,
        decision: Forward | Reject,
        authority: bytes,
        status: int,
        started: float,
        mesh_error: str | None,
        **extra: Any,
    ) -> None:
        """One record per request, for metrics and tap (``forward`` only when the mesh routed it)."""
        self.record(
            RequestRecord(
                self.router.direction,
                decision.peer_service,
                head.method,
                authority,
                head.target,
                status,
                (time.perf_counter() - started) * 1000.0,
                mesh_error,
                head=head,
                forward=decision if isinstance(decision, Forward) else None,
                **extra,
            )
        )

    async def _send_error(self, head: RequestHead, status: int, reason: str, message: str) -> bool:
        # With an unread request body we cannot find the next request: close.
        keep = head.keep_alive and self._body_done() and not self.drain.draining
        if keep:
            self._take_body_bytes(Framing.NONE)  # drop the (complete) body of the refused request
        await self.client.send(mesh_error_response(status, reason, message, keep, head.http_version == b"1.0"))
        return keep

    def _body_done(self) -> bool:
        pending = self.client.pending
        return not self.client.reader.in_body or any(isinstance(e, EndOfMessage) for e in pending)

    def _request_head_bytes(self, head: RequestHead, decision: Forward) -> bytes:
        headers = strip_hop_by_hop(head.headers, keep_upgrade=head.upgrade)
        if decision.drop_headers:
            drop = decision.drop_headers
            headers = [(k, v) for k, v in headers if k.lower() not in drop]
        if decision.add_headers:
            headers += decision.add_headers
        return encode_request_head(head.method, decision.target, headers, head.framing, upgrade=head.upgrade)

    async def _forward(self, head: RequestHead, decision: Forward) -> tuple[int, bool]:
        """Returns (status, client keep-alive). Retries (route policy, within budget) and
        the one replay after a pooled connection died while idle happen here."""
        head_bytes = self._request_head_bytes(head, decision)
        body_complete = head.framing is Framing.NONE or self._body_done()
        first_bytes = head_bytes
        body = b""
        if body_complete:
            body = self._take_body_bytes(head.framing)
            first_bytes += body
        timeout = decision.timeout
        deadline = trio.current_time() + timeout  # for every attempt together (a complete body is sent at once)
        retry = decision.retry
        retries_left = 0
        if retry is not None and body_complete and may_retry(head.method, len(body), retry.retryable):
            retries_left = retry.attempts
            self.router.requested(decision)
        current = decision
        replayed_stale = False
        failed_over = False

        def next_attempt(status: int | None) -> Forward | None:
            """A retry for this outcome (None: connection failure), or None to give up."""
            nonlocal retries_left, current
            if retries_left <= 0 or not retry_condition(status, retry.on):
                return None
            nxt = self.router.retry_to(current)
            if nxt is None:
                return None
            retries_left -= 1
            self._retries += 1
            return nxt

        while True:
            self._attempt = current
            try:
                upstream = await self.pool.acquire(current.key)
            except UpstreamConnectError:
                nxt = next_attempt(None)
                if nxt is None and not failed_over:
                    # Nothing was sent: another endpoint is always safe (once, outside retry budgets).
                    nxt = self.router.failover_to(current)
                    failed_over = nxt is not None
                if nxt is None:
                    raise
                current = nxt
                head_bytes = self._request_head_bytes(head, current)
                first_bytes = head_bytes + body
                continue
            upstream.reader.expect(head.method)
            reused = upstream.uses > 1
            try:
                if not body_complete:
                    return await self._forward_streaming(head, head_bytes, upstream, timeout)
                try:
                    await upstream.send(first_bytes)
                    self._response_deadline = deadline
                    status, keep, upstream_ok = await self._relay_response(
                        upstream, head, next_attempt if retries_left else None
                    )
                except _StaleConnection:
                    await upstream.aclose()
                    if reused and not replayed_stale:
                        replayed_stale = True
                        continue  # the pooled connection had died while idle
                    nxt = next_attempt(None)
                    if nxt is None:
                        raise UpstreamConnectError(
                            "upstream-closed", f"{current.key.address} closed the connection without answering"
                        ) from None
                    current = nxt
                    first_bytes = self._request_head_bytes(head, current) + body
                    continue
                except _Retry as again:
                    await upstream.aclose()
                    current = again.forward
                    first_bytes = self._request_head_bytes(head, current) + body
                    continue
                await self.pool.release(upstream, upstream_ok)
                return status, keep
            except BaseException:
                await upstream.aclose()
                raise

    def _take_body_bytes(self, framing: Framing) -> bytes:
        """The whole request body, already read with the head, framed for sending.
        Consumes the pending events up to the end of the request."""
        parts: list[bytes] = []
        pending = self.client.pending
        while pending:
            event = pending.pop(0)
            if isinstance(event, Data):
                if framing is not Framing.NONE:
                    parts.append(encode_chunk(event.data) if framing is Framing.CHUNKED else event.data)
            elif isinstance(event, EndOfMessage):
                if framing is Framing.CHUNKED:
                    parts.append(encode_last_chunk(event.trailers))
                break
        return b"".join(parts)

    async def _forward_streaming(
        self, head: RequestHead, head_bytes: bytes, upstream: UpstreamConnection, timeout: float
    ) -> tuple[int, bool]:
        """Request body still arriving: stream it while the response comes back.

        The body may stall for at most ``body_timeout`` per read (the client's: 408) or per write
        (the app's: 504); ``timeout`` for the response head counts from the body's end. Neither
        task raises into the nursery: each says how it ended, and the failure is decided after.
        """
        body_sent = False
        failure: _BodyFailed | _ClientGone | _UpstreamStopped | None = None
        self._response_deadline = float("inf")

        async def pump_body() -> None:
            nonlocal body_sent, failure
            failure = await self._pump_body(head, upstream, head_bytes)
            if failure is None:
                body_sent = True
                self._response_deadline = trio.current_time() + timeout
                if self._response_wait is not None:
                    self._response_wait.deadline = self._response_deadline
            elif not isinstance(failure, _UpstreamStopped):
                nursery.cancel_scope.cancel()  # a request that cannot end gets no response to wait for

        result: tuple[int, bool, bool] | None = None
        broken: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_body)
            try:
                result = await self._relay_response(upstream, head)
            except _StaleConnection:
                broken = _UpstreamBroken("upstream closed the connection without answering")
            except (_UpstreamBroken, _ClientGone, UpstreamConnectError, trio.TooSlowError) as exc:
                broken = exc
            if not body_sent:
                # Final answer (or failure) before the whole body: stop reading it; neither
                # connection can be reused.
                nursery.cancel_scope.cancel()
        self._response_wait = None
        if failure is not None and result is None and not isinstance(failure, _UpstreamStopped):
            raise failure
        if broken is not None:
            raise broken
        assert result is not None
        status, keep, upstream_ok = result
        await self.pool.release(upstream, upstream_ok and body_sent)
        return status, keep and body_sent

    async def _pump_body(
        self, head: RequestHead, upstream: UpstreamConnection, head_bytes: bytes
    ) -> _BodyFailed | _ClientGone | _UpstreamStopped | None:
        """Send the head, then the body as it arrives; how it ended (None: all of it was sent)."""
        framing = head.framing
        client = self.client
        stall = self.limits.body_timeout
        try:
            await upstream.send(head_bytes)
        except PeerClosed:
            return _UpstreamStopped()
        while True:
            try:
                with trio.move_on_after(stall) as waited:
                    events = await client.receive_events()
            except RemoteProtocolError as exc:
                return _BodyFailed(400, "bad-request", f"malformed request body: {exc}")
            except PeerClosed:
                return _ClientGone()
            if waited.cancelled_caught:
                return _BodyFailed(408, "body-timeout", f"the request body stalled for {stall:g}s")
            out: list[bytes] = []
            done = False
            for index, event in enumerate(events):
                if isinstance(event, Data):
                    out.append(encode_chunk(event.data) if framing is Framing.CHUNKED else event.data)
                elif isinstance(event, EndOfMessage):
                    if framing is Framing.CHUNKED:
                        out.append(encode_last_chunk(event.trailers))
                    client.pending = events[index + 1 :]
                    done = True
                    break
            if out:
                try:
                    with trio.move_on_after(stall) as waited:
                        await upstream.send(b"".join(out))
                except PeerClosed:
                    return _UpstreamStopped()  # its answer (or its absence) says why
                if waited.cancelled_caught:
                    return _BodyFailed(504, "upstream-body-timeout", f"{upstream.key.address} stopped reading the request body")
            if done:
                return None

    async def _relay_response(
        self,
        upstream: UpstreamConnection,
        head: RequestHead,
        retry: Callable[[int | None], Forward | None] | None = None,
    ) -> tuple[int, bool, bool]:
        """Stream the response to the client. Returns (status, client keep-alive, upstream reusable).

        The response head must arrive by ``self._response_deadline`` (moved while the body streams)."""
        client = self.client
        response: ResponseHead | None = None
        framing = Framing.NONE  # how the body goes to the client
        interim = False
        http10 = head.http_version == b"1.0"
        while True:
            try:
                if response is None:
                    # A bare CancelScope: cheaper than fail_at's context manager on the hot path.
                    with trio.CancelScope(deadline=self._response_deadline) as scope:
                        self._response_wait = scope
                        events = await upstream.receive_events()
                    self._response_wait = None
                    if scope.cancelled_caught:
                        raise trio.TooSlowError
                else:
                    events = await upstream.receive_events()
            except PeerClosed:
                if response is None:
                    raise _StaleConnection() from None
                try:
                    events = upstream.reader.feed_eof()
                except RemoteProtocolError as exc:
                    raise _UpstreamBroken(str(exc)) from None
                if not events:
                    raise _UpstreamBroken("upstream closed the connection mid-response") from None
            except RemoteProtocolError as exc:
                if response is None:
                    raise UpstreamConnectError("bad-response", f"invalid response from upstream: {exc}") from None
                raise _UpstreamBroken(f"invalid response from upstream: {exc}") from None
            out: list[bytes] = []
            for index, event in enumerate(events):
                if isinstance(event, ResponseHead):
                    if event.informational:  # 100 Continue and friends: pass on, wait for the final one
                        if not http10:  # never a 1xx to an HTTP/1.0 client (RFC 9110 section 15.2)
                            out.append(encode_response_head(event.status, event.reason, event.headers, Framing.NONE))
                        interim = True
                        continue
                    if retry is not None and not out:
                        # Nothing of this response reached the client yet: it may be retried.
                        again = retry(event.status)
                        if again is not None:
                            raise _Retry(again)
                    response = event
                    self._status = event.status
                    framing = response_framing(head, event.framing)
                    headers = strip_hop_by_hop(event.headers)
                    if framing is Framing.CLOSE and http10:
                        # Never chunked to HTTP/1.0: the whole body already in hand (a short one, read with
                        # the head) goes with its length and the connection may stay; else close-delimited.
                        length = complete_body_length(events, index + 1)
                        if length is not None:
                            framing = Framing.LENGTH
                            headers.append((b"Content-Length", b"%d" % length))
                    keep = head.keep_alive and event.keep_alive and framing is not Framing.CLOSE and not self.drain.draining
                    out.append(encode_response_head(event.status, event.reason, headers, framing, keep, http10=http10))
                elif isinstance(event, Data):
                    out.append(encode_chunk(event.data) if framing is Framing.CHUNKED else event.data)
                elif isinstance(event, EndOfMessage):
                    if interim:
                        interim = False
                        continue
                    if framing is Framing.CHUNKED:
                        out.append(encode_last_chunk(event.trailers))
                    upstream.pending = events[index + 1 :]
                    try:
                        await client.send(b"".join(out))
                    except PeerClosed:
                        raise _ClientGone() from None
                    assert response is not None
                    return response.status, keep, response.keep_alive and response.framing is not Framing.CLOSE
            if out:
                try:
                    await client.send(b"".join(out))
                except PeerClosed:
                    raise _ClientGone() from None

    # -- CONNECT and Upgrade ------------------------------------------------

    async def _tunnel(self, head: RequestHead, decision: Forward, started: float, authority: bytes) -> bool:
        """CONNECT or Upgrade: after the handshake the connection carries raw bytes. Never reused."""
        client = self.client
        leftover = b""
        if client.pending and isinstance(client.pending[-1], Upgraded):
            leftover = client.pending.pop().leftover
        outcome: list[tuple[int, str | None]] = []

        def established(status: int, mesh_error: str | None = None) -> None:
            outcome.append((status, mesh_error))
            self._record(head, decision, authority, status, started, mesh_error)

        try:
            stream = await open_upstream(decision.key, self.pool.contexts, self.pool.connect_timeout)
        except UpstreamConnectError as exc:
            established(502, exc.reason)
            await client.send(mesh_error_response(502, exc.reason, exc.message, keep_alive=False))
            return False
        upstream = UpstreamConnection(stream, decision.key)
        try:
            if decision.tunnel:  # CONNECT
                await client.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                established(200)
                await relay_bytes(client.stream, stream, leftover)
                return False
            # Upgrade (WebSocket): send the request, relay the response head, then bytes.
            upstream.reader.expect(head.method)
            await upstream.send(self._request_head_bytes(head, decision))
            with trio.fail_after(decision.timeout):
                events = await upstream.receive_events()
                while not any(isinstance(e, ResponseHead) for e in events):
                    events += await upstream.receive_events()
            response = next(e for e in events if isinstance(e, ResponseHead))
            if response.status != 101:  # the upstream declined: an ordinary response
                upstream.pending = events[events.index(response) :]
                self._response_deadline = trio.current_time() + decision.timeout
                status, _, _ = await self._relay_response(upstream, head)
                established(status)
                return False
            upgraded = next((e.leftover for e in events if isinstance(e, Upgraded)), b"")
            await client.send(encode_response_head(101, response.reason, response.headers, Framing.NONE))
            established(101)
            await relay_bytes(client.stream, stream, leftover, upgraded)
            return False
        except (PeerClosed, _ClientGone, _StaleConnection, _UpstreamBroken, RemoteProtocolError, trio.TooSlowError) as exc:
            log.info("%s: upgrade to %s failed: %r", self.router.direction, decision.key.address, exc)
            if not outcome:
                established(502, "upgrade-failed")
                await self._send_error(head, 502, "upgrade-failed", f"upgrade failed: {exc!r}")
            return False
        finally:
            await upstream.aclose()


class _Retry(Exception):
    def __init__(self, forward: Forward) -> None:
        self.forward = forward


class _StaleConnection(Exception):
    """The upstream closed before sending any byte of a response."""


_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_request_id() -> bytes:
    """32 hex digits, unique per process (random prefix) and per request (counter): no syscall."""
    return b"%s%016x" % (_ID_PREFIX.encode(), next(_id_counter) & 0xFFFFFFFFFFFFFFFF)
