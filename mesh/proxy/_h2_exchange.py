"""One client stream's exchange with its upstreams: routing, the attempt plan, relaying both ways."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING

import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.net import ALPN_H2, ALPN_HTTP1
from mesh.proxy._exchange import (
    AttemptPlan,
    ConnectFailure,
    Failure,
    Forward,
    GiveUp,
    Outcome,
    Reason,
    Replay,
    Step,
    UpstreamKey,
)
from mesh.proxy._grpc import failure_response, grpc_status_of, parse_grpc_timeout, status_for_retry
from mesh.proxy._h2_stream import ClientStream, clean_headers
from mesh.proxy._h2_transport import (
    END,
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
)
from mesh.proxy._h2_upstream import GoingAway, H2Upstream
from mesh.proxy._policy import may_retry
from mesh.proxy.protocol.http1 import Framing, RequestHead

if TYPE_CHECKING:
    from mesh.proxy._h2_server import H2ProxyConnection

log = logging.getLogger("mesh.proxy")


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


class StreamExchange:
    """One client stream's request, forwarded attempt after attempt as its ``AttemptPlan`` says."""

    def __init__(self, conn: H2ProxyConnection, st: ClientStream) -> None:
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
                            if len(status) != 3 or not status.isdigit():  # the codec does not check it (nor does h2)
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
                            if not up_queue.items:  # else the head goes out with what follows: one write
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
