"""The HTTP/1 proxy loop: one accepted connection, many requests.

For each request: read the head (a deadline for the whole head), let the router
decide (pure), then do the I/O: take a pooled upstream connection, send the head,
stream the body both ways with back-pressure, and record what happened. What to
do after each attempt is the ``AttemptPlan``'s call (mesh/proxy/_exchange.py);
every mesh-made answer is a ``Failure`` rendered once. The inbound and outbound
stacks differ only in their router.
"""

from __future__ import annotations

import logging
import time

import trio

from mesh.net import FastSocketStream, linger, relay_bytes
from mesh.proxy._conn import HttpConnection, PeerClosed
from mesh.proxy._drain import Drain, Wait
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
    RequestRecord,
    Router,
    Timeouts,
    mesh_error_response,
)
from mesh.proxy._pool import ConnectionPool, UpstreamConnection, open_upstream
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import (
    Data,
    EndOfMessage,
    Framing,
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
    strip_hop_by_hop,
)

log = logging.getLogger("mesh.proxy")


class _Stale(Exception):
    """The upstream connection closed before any byte of a response: a pooled one that had died
    while idle, or an endpoint that dropped the request (the plan decides which it is worth)."""


class _TryAgain(Exception):
    """The plan wants another attempt; nothing of this response reached the client."""


class _UpstreamStopped(Exception):
    """The upstream stopped taking the request body (it answered early, or died): its response decides."""


def _client_gone() -> Failure:
    return Failure(Reason.CLIENT_RESET, 0, "the client went away")


class HttpProxyConnection:
    """Serves one client connection that speaks HTTP/1."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        prefix: bytes,
        router: Router,
        pool: ConnectionPool,
        record: Recorder,
        timeouts: Timeouts,
        drain: Drain,
    ) -> None:
        self.client: HttpConnection[RequestReader] = HttpConnection(stream, RequestReader())
        self.prefix = prefix
        self.router = router
        self.pool = pool
        self.record = record
        self.timeouts = timeouts
        self.drain = drain
        # The first head's budget runs from when the listener accepted the connection.
        self.head_deadline: float | None = None
        self._response_deadline = float("inf")  # for the response head; set once the request is sent
        self._received_mark = 0  # client bytes read when the previous request was recorded
        # The deadline of every wait (mesh/proxy/_drain.py): one cancel scope per run of requests,
        # not one per wait. A response that timed out is answered once its scope has ended.
        self.deadline = drain.deadline()
        self._timed_out: tuple[RequestHead, Failure] | None = None
        self._now = trio.current_time  # the run's clock, read directly once serve() starts
        # Set when the client is a peer proxy (inbound, mTLS): its next request needs a whole new
        # request through that proxy first, so the idle read waits for it at once (``answer_pending``).
        self.peer_socket: FastSocketStream | None = None

    def __repr__(self) -> str:
        return f"<HttpProxyConnection {self.router.direction} {self.client!r}>"

    async def serve(self) -> None:
        # trio.current_time() is three calls deep; its clock's own method is one (4 reads per request).
        self._now = trio.lowlevel.current_clock().current_time
        client = self.client
        refused = False
        try:
            if self.prefix:
                client.received += len(self.prefix)
                try:
                    client.pending = client.reader.feed(self.prefix)
                except RemoteProtocolError as exc:
                    await self._refuse_head(exc)
                    refused = True
            if not refused:
                await self._serve_requests()
            # The connection ends: whatever the client still sends must not turn our close into a
            # reset that overtakes the last answer (and when the client ended it, this is one read).
            await linger(client.stream)
        except PeerClosed:
            return
        finally:
            self.drain.release(self.deadline)
            await client.aclose()

    async def _serve_requests(self) -> None:
        """Requests one after the other, until one ends the connection."""
        deadline = self.deadline
        while True:
            deadline.scope = trio.CancelScope()  # one scope until a deadline passes
            with deadline.scope:
                while True:
                    head = await self._next_head()
                    if head is None:
                        return
                    if not await self._exchange(head):
                        return
                    if self.drain.draining:
                        return
            # A deadline passed (or a drain cut an idle wait): what was being waited for decides.
            fired, deadline.fired = deadline.fired, None
            if fired is Wait.HEAD:
                await self._answer_unrouted(Failure(Reason.HEAD_TIMEOUT, 408, "request head not received in time"))
            elif fired is Wait.RESPONSE and self._timed_out is not None:
                head, failure = self._timed_out
                self._timed_out = None
                if await self._answer(head, failure) and not self.drain.draining:
                    continue
            return

    # -- reading the request head -------------------------------------------

    async def _next_head(self) -> RequestHead | None:
        """The next request head; None when the connection should end (idle, closed, refused).

        The whole head, partial heads included, must arrive within ``head_timeout`` of its first
        byte (of the connection, for the first request): a budget, not a limit per read.
        """
        client = self.client
        timer = self.deadline
        deadline, self.head_deadline = self.head_deadline, None
        if not client.pending and client.reader.failed:  # bytes after the last whole request did not parse
            try:
                client.reader.feed(b"")
            except RemoteProtocolError as exc:
                await self._refuse_head(exc)
            return None
        while not client.pending:
            # A deadline that passes cancels the connection's scope: serve() answers for it.
            if deadline is None and not client.reader.in_head:
                # Between requests: wait for the first byte of the next one.
                if self.drain.draining:
                    return None
                timer.arm(self._now() + self.timeouts.idle_timeout, Wait.IDLE)
                if self.peer_socket is not None:
                    self.peer_socket.wait_first = True
                data = await client.receive_bytes()
                # A head that is still partial gets its deadline when the loop comes round, with no
                # wait in between: from this first byte.
            else:
                if deadline is None:  # a partial head (with the previous request, or just begun)
                    deadline = self._now() + self.timeouts.head_timeout
                timer.arm(deadline, Wait.HEAD)
                data = await client.receive_bytes()
            timer.disarm()
            if not data:
                return None
            try:
                client.pending = client.reader.feed(data)
            except RemoteProtocolError as exc:
                await self._refuse_head(exc)
                return None
        head = client.pending.pop(0)
        assert isinstance(head, RequestHead)
        return head

    async def _refuse_head(self, exc: RemoteProtocolError) -> None:
        reason = Reason.HEADER_TOO_LARGE if exc.status == 431 else Reason.BAD_REQUEST
        log.info("%s: rejected client request: %s", self.router.direction, exc)
        await self._answer_unrouted(Failure(reason, exc.status, str(exc)))

    async def _answer_unrouted(self, failure: Failure) -> None:
        """A mesh-made answer before any request could be routed; the connection then closes. Its
        body is sent even to what looked like HEAD: the request did not parse, and with the close
        right after it, a body is harmless to a client that expects none and needed by one that does."""
        self.record(RequestRecord(self.router.direction, "", b"", b"", b"", failure.status, 0.0, failure.reason))
        try:
            await self.client.send(mesh_error_response(failure, keep_alive=False))
        except PeerClosed:
            pass

    # -- one request/response exchange ---------------------------------------

    async def _exchange(self, head: RequestHead) -> bool:
        """Forward one request; returns whether the client connection stays open."""
        started = time.perf_counter()
        decision = self.router.route(head)
        authority = head.header(b"host") or b""
        if isinstance(decision, Reject):
            outcome = Outcome()
            outcome.failed(decision.failure())
            sent_before = self.client.sent
            try:
                return await self._answer(head, decision.failure())
            finally:
                outcome.bytes_out = self.client.sent - sent_before
                self._record(head, decision.peer_service, authority, started, outcome)
        if head.upgrade:
            return await self._tunnel(head, decision, started, authority)

        outcome = Outcome(forward=decision)
        sent_before = self.client.sent
        try:
            return await self._forward(head, decision, outcome) and head.keep_alive
        except Failure as failure:
            if not self._failed(outcome, failure, sent_before):
                return False  # the response had begun, or the client is gone: all we can do is close
            return await self._answer(head, failure)
        finally:
            if self.deadline.fired is Wait.RESPONSE:
                # The response head did not come in time: the connection's scope was cancelled and
                # is unwinding; serve() sends the answer once it has.
                timed_out = self._response_timed_out(outcome.forward)
                if self._failed(outcome, timed_out, sent_before):
                    self._timed_out = (head, timed_out)
            outcome.bytes_out = self.client.sent - sent_before
            assert outcome.forward is not None
            self.router.finished(outcome.forward, started, outcome.verdict)
            self._record(head, decision.peer_service, authority, started, outcome)

    def _failed(self, outcome: Outcome, failure: Failure, sent_before: int) -> bool:
        """Note a failure in ``outcome``; whether the client can still be told (nothing was sent)."""
        answered = failure.status != 0 and self.client.sent == sent_before
        outcome.failed(failure, answered)
        if failure.reason is not Reason.CLIENT_RESET and not isinstance(failure, ConnectFailure):
            log.info("%s: %s", self.router.direction, failure.message)
        return answered

    @staticmethod
    def _response_timed_out(forward: Forward | None) -> Failure:
        service = (forward.peer_service if forward is not None else "") or "upstream"
        timeout = forward.timeout if forward is not None else 0
        return Failure(Reason.TIMEOUT, 504, f"{service} did not answer within {timeout:g}s")

    def _record(self, head: RequestHead, peer_service: str, authority: bytes, started: float, outcome: Outcome) -> None:
        """One record per request, for metrics and tap (``forward`` only when the mesh routed it)."""
        mark, self._received_mark = self._received_mark, self.client.received
        self.record(
            RequestRecord(
                self.router.direction,
                peer_service,
                head.method,
                authority,
                head.target,
                outcome.status,
                (time.perf_counter() - started) * 1000.0,
                outcome.mesh_error,
                bytes_in=self._received_mark - mark,
                bytes_out=outcome.bytes_out,
                head=head,
                forward=outcome.forward,
                retries=outcome.retries,
            )
        )

    async def _answer(self, head: RequestHead, failure: Failure) -> bool:
        """Send a mesh-made answer; the connection stays open only when the request was read whole
        (never after a refused CONNECT or Upgrade: what follows it is not HTTP/1)."""
        keep = head.keep_alive and not head.upgrade and self._body_done() and not self.drain.draining
        if keep:
            self._take_body_bytes(Framing.NONE)  # drop the (complete) body of the refused request
        await self.client.send(
            mesh_error_response(failure, keep, head.http_version == b"1.0", head_request=head.method == b"HEAD")
        )
        return keep

    def _body_done(self) -> bool:
        pending = self.client.pending
        return not self.client.reader.in_body or any(isinstance(e, EndOfMessage) for e in pending)

    def _request_head_bytes(self, head: RequestHead, forward: Forward) -> bytes:
        headers = strip_hop_by_hop(head.headers, keep_upgrade=head.upgrade)
        if forward.drop_headers:
            drop = forward.drop_headers
            headers = [(k, v) for k, v in headers if k.lower() not in drop]
        if forward.add_headers:
            headers += forward.add_headers
        return encode_request_head(head.method, forward.target, headers, head.framing, upgrade=head.upgrade)

    async def _forward(self, head: RequestHead, forward: Forward, outcome: Outcome) -> bool:
        """Send the request and relay the answer, attempt after attempt as the plan says; returns the
        client's keep-alive. Raises ``Failure`` when the client gets a mesh-made answer instead."""
        body: bytes | None = None  # the whole body, when it came with the head: it can be sent again
        if head.framing is Framing.NONE or self._body_done():
            body = self._take_body_bytes(head.framing)
        plan = AttemptPlan(
            self.router, forward, retryable=body is not None and AttemptPlan.retryable(head.method, len(body), forward)
        )
        try:
            if plan.delay:
                await trio.sleep(plan.delay)  # an injected fault
            now = self._now()
            deadline = now + forward.timeout  # for every attempt together
            while True:
                current = outcome.forward = plan.current
                head_bytes = self._request_head_bytes(head, current)
                if plan.retries:
                    now = self._now()
                try:
                    upstream = self.pool.take_idle(current.key, now) or await self.pool.acquire(current.key)
                except ConnectFailure as failure:
                    if isinstance(plan.connect_failed(failure), GiveUp):
                        raise
                    continue
                upstream.reader.expect(head.method)
                try:
                    if body is None:
                        return await self._forward_streaming(head, head_bytes, upstream, outcome)
                    try:
                        await upstream.send(head_bytes + body)
                    except PeerClosed:
                        raise _Stale() from None
                    upstream.answer_pending()
                    self._response_deadline = deadline
                    keep, reusable = await self._relay_response(upstream, head, outcome, plan)
                except _Stale:
                    await upstream.aclose()
                    if isinstance(plan.stale(reused=upstream.uses > 1), GiveUp):
                        raise ConnectFailure(
                            Reason.UPSTREAM_CLOSED, f"{current.key.address} closed the connection without answering"
                        ) from None
                    continue
                except _TryAgain:
                    await upstream.aclose()
                    continue
                except BaseException:
                    await upstream.aclose()
                    raise
                if not self.pool.keep_idle(upstream, reusable, self._now()):
                    await upstream.aclose()
                return keep
        finally:
            outcome.retries = plan.retries

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
        self, head: RequestHead, head_bytes: bytes, upstream: UpstreamConnection, outcome: Outcome
    ) -> bool:
        """Request body still arriving: stream it while the response comes back.

        The body may stall for at most ``body_timeout`` per read (the client's: 408) or per write
        (the app's: 504); the response head's timeout counts from the body's end. Neither task
        raises into the nursery: each says how it ended, and the failure is decided after.
        """
        assert outcome.forward is not None
        timeout = outcome.forward.timeout
        body_sent = False
        failure: Failure | _UpstreamStopped | None = None
        self._response_deadline = float("inf")

        async def pump_body() -> None:
            nonlocal body_sent, failure
            failure = await self._pump_body(head, upstream, head_bytes)
            if failure is None:
                body_sent = True
                self._response_deadline = trio.current_time() + timeout
                if self.deadline.wait is Wait.RESPONSE:  # the response head's wait: its clock starts now
                    self.deadline.arm(self._response_deadline, Wait.RESPONSE)
            elif not isinstance(failure, _UpstreamStopped):
                nursery.cancel_scope.cancel()  # a request that cannot end gets no response to wait for

        result: tuple[bool, bool] | None = None
        broken: Failure | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_body)
            try:
                result = await self._relay_response(upstream, head, outcome)
            except _Stale:
                broken = Failure(Reason.UPSTREAM_CLOSED, 502, "upstream closed the connection without answering")
            except Failure as exc:
                broken = exc
            if not body_sent:
                # Final answer (or failure) before the whole body: stop reading it; neither
                # connection can be reused.
                nursery.cancel_scope.cancel()
        if isinstance(failure, Failure) and result is None:
            raise failure
        if broken is not None:
            raise broken
        assert result is not None
        keep, reusable = result
        await self.pool.release(upstream, reusable and body_sent)
        return keep and body_sent

    async def _pump_body(
        self, head: RequestHead, upstream: UpstreamConnection, head_bytes: bytes
    ) -> Failure | _UpstreamStopped | None:
        """Send the head, then the body as it arrives; how it ended (None: all of it was sent)."""
        framing = head.framing
        client = self.client
        stall = self.timeouts.body_timeout
        try:
            await upstream.send(head_bytes)
        except PeerClosed:
            return _UpstreamStopped()
        while True:
            try:
                with trio.move_on_after(stall) as waited:
                    events = await client.receive_events()
            except RemoteProtocolError as exc:
                return Failure(Reason.BAD_REQUEST, 400, f"malformed request body: {exc}")
            except PeerClosed:
                return _client_gone()
            if waited.cancelled_caught:
                return Failure(Reason.BODY_TIMEOUT, 408, f"the request body stalled for {stall:g}s")
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
                    return Failure(
                        Reason.UPSTREAM_BODY_TIMEOUT, 504, f"{upstream.key.address} stopped reading the request body"
                    )
            if done:
                return None

    async def _relay_response(
        self, upstream: UpstreamConnection, head: RequestHead, outcome: Outcome, plan: AttemptPlan | None = None
    ) -> tuple[bool, bool]:
        """Stream the response to the client. Returns (client keep-alive, upstream reusable).

        The response head must arrive by ``self._response_deadline`` (moved while the body streams):
        past it, the connection's deadline fires (``Wait.RESPONSE``). With a ``plan``, a final head
        that nothing of was sent yet is offered to it for a retry."""
        response: ResponseHead | None = None
        framing = Framing.NONE  # how the body goes to the client
        keep = False
        interim = False
        http10 = head.http_version == b"1.0"
        while True:
            try:
                if upstream.pending:
                    events, upstream.pending = upstream.pending, []
                elif response is None:
                    deadline = self.deadline
                    deadline.arm(self._response_deadline, Wait.RESPONSE)
                    try:
                        # upstream.receive_events(), inlined: a coroutine less per response
                        data = await upstream.receive_bytes()
                    finally:
                        deadline.disarm()
                    if not data:
                        raise PeerClosed()
                    events = upstream.reader.feed(data)
                    if not events:
                        continue  # a partial head: read on, by the same deadline
                else:
                    events = await upstream.receive_events()
            except PeerClosed:
                if response is None:
                    raise _Stale() from None
                try:
                    events = upstream.reader.feed_eof()
                except RemoteProtocolError as exc:
                    raise Failure(Reason.UPSTREAM_RESET, 502, str(exc)) from None
                if not events:
                    raise Failure(Reason.UPSTREAM_RESET, 502, "upstream closed the connection mid-response") from None
            except RemoteProtocolError as exc:
                reason = Reason.BAD_RESPONSE if response is None else Reason.UPSTREAM_RESET
                raise Failure(reason, 502, f"invalid response from upstream: {exc}") from None
            out: list[bytes] = []
            complete = False
            for index, event in enumerate(events):
                if isinstance(event, ResponseHead):
                    if event.informational:  # 100 Continue and friends: pass on, wait for the final one
                        if not http10:  # never a 1xx to an HTTP/1.0 client (RFC 9110 section 15.2)
                            out.append(encode_response_head(event.status, event.reason, event.headers, Framing.NONE))
                        interim = True
                        continue
                    if plan is not None and not out and plan.may_retry:
                        # Nothing of this response reached the client yet: it may be retried.
                        if not isinstance(plan.answered(event.status), GiveUp):
                            raise _TryAgain()
                    response = event
                    outcome.status = event.status
                    framing = response_framing(head, event.framing)
                    headers = strip_hop_by_hop(event.headers)
                    if framing is Framing.CLOSE and http10:
                        # Never chunked to HTTP/1.0: the whole body already in hand (a short one, read with
                        # the head) goes with its length and the connection may stay; else close-delimited.
                        length = complete_body_length(events, index + 1)
                        if length is not None:
                            framing = Framing.LENGTH
                            headers.append((b"Content-Length", b"%d" % length))
                    keep = (
                        head.keep_alive
                        and event.keep_alive
                        and framing is not Framing.CLOSE
                        and not self.drain.draining
                    )
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
                    complete = True
                    break
            if out or complete:  # one write per read (the client.send inlined: a coroutine less)
                try:
                    await self.client.send(b"".join(out))
                except PeerClosed:
                    raise _client_gone() from None
            if complete:
                assert response is not None
                return keep, response.keep_alive and response.framing is not Framing.CLOSE

    # -- CONNECT and Upgrade ------------------------------------------------

    async def _tunnel(self, head: RequestHead, forward: Forward, started: float, authority: bytes) -> bool:
        """CONNECT or Upgrade: after the handshake the connection carries raw bytes. Never reused."""
        client = self.client
        leftover = b""
        if client.pending and isinstance(last := client.pending[-1], Upgraded):
            client.pending.pop()
            leftover = last.leftover
        outcome = Outcome(forward=forward)
        recorded = False

        def established(status: int) -> None:
            nonlocal recorded
            outcome.status, recorded = status, True
            self._record(head, forward.peer_service, authority, started, outcome)

        try:
            stream = await open_upstream(forward.key, self.pool.contexts, self.pool.connect_timeout)
        except ConnectFailure as failure:
            outcome.failed(failure)
            established(failure.status)
            await client.send(mesh_error_response(failure, keep_alive=False))
            return False
        upstream = UpstreamConnection(stream, forward.key)
        try:
            if forward.tunnel:  # CONNECT
                await client.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                established(200)
                await relay_bytes(client.stream, stream, leftover)
                return False
            # Upgrade (WebSocket): send the request, relay the response head, then bytes.
            upstream.reader.expect(head.method)
            await upstream.send(self._request_head_bytes(head, forward))
            with trio.fail_after(forward.timeout):
                events = await upstream.receive_events()
                while not any(isinstance(e, ResponseHead) for e in events):
                    events += await upstream.receive_events()
            response = next(e for e in events if isinstance(e, ResponseHead))
            if response.status != 101:  # the upstream declined: an ordinary response
                upstream.pending = events[events.index(response) :]
                self._response_deadline = trio.current_time() + forward.timeout  # its head is here already
                await self._relay_response(upstream, head, outcome)
                established(outcome.status)
                return False
            upgraded = next((e.leftover for e in events if isinstance(e, Upgraded)), b"")
            await client.send(encode_response_head(101, response.reason, response.headers, Framing.NONE))
            established(101)
            await relay_bytes(client.stream, stream, leftover, upgraded)
            return False
        except (PeerClosed, Failure, _Stale, RemoteProtocolError, trio.TooSlowError) as exc:
            log.info("%s: upgrade to %s failed: %r", self.router.direction, forward.key.address, exc)
            if not recorded:
                declined = Failure(Reason.UPGRADE_FAILED, 502, f"upgrade failed: {exc!r}")
                outcome.failed(declined)
                established(declined.status)
                await self._answer(head, declined)
            return False
        finally:
            await upstream.aclose()
