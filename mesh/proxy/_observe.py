"""Where each request's ``RequestRecord`` goes: metrics always, a tap event while anyone listens,
a span and an access log line when those are configured; and the trace context a
request carries on to the next hop.

The HTTP/1 and HTTP/2 loops hand every finished request to a ``Recorder``; the proxy
gives each connection one made here (``observe``), with its router. What is off costs
nothing per request: the recorder made when neither tracing nor access logs are
configured is exactly metrics plus one attribute check (``tap.active``), and the
router is the connection's own. With tracing on, ``TracedRouter`` gives each
forwarded request this hop's span context (``Forward.trace``) and the headers that
carry it on (the loops send ``Forward.add_headers`` and drop ``Forward.drop_headers``
as for every other header the mesh adds), and the recorder turns the record into a
span; with access logs on, into a line. Both go into bounded queues that background
tasks drain (``mesh.proxy._export``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mesh.proxy._edge import EdgeClient
from mesh.proxy._exchange import Forward, Recorder, Reject, RequestRecord, Router
from mesh.proxy.protocol.http1 import RequestHead
from mesh.telemetry import SpanContext, TapEvent, Tracer, access_line, encode_span, span_from, trace_id_of

if TYPE_CHECKING:
    from mesh.proxy._server import Proxy

REQUEST_ID = b"x-request-id"


def observe(proxy: Proxy, router: Router, caller: Any = None) -> tuple[Router, Recorder]:
    """The router and the recorder of one connection; ``caller`` is the peer's SpiffeId on
    inbound connections."""
    telemetry = proxy.telemetry
    if telemetry is not None and telemetry.tracer is not None:
        router = TracedRouter(router, telemetry.tracer)
    return router, recorder(proxy, caller)


def recorder(proxy: Proxy, caller: Any = None) -> Recorder:
    """The recorder of one connection; ``caller`` is the peer's SpiffeId on inbound connections, the
    outside client (``EdgeClient``) on a gateway's."""
    record_metrics = proxy.metrics.record
    tap = proxy.tap
    telemetry = proxy.telemetry

    if telemetry is None:

        def record(rec: RequestRecord) -> None:
            record_metrics(rec)
            if tap.active:
                tap.publish(tap_event(proxy, rec, caller))

        return record

    tracer, spans, lines = telemetry.tracer, telemetry.spans, telemetry.lines

    def record_all(rec: RequestRecord) -> None:
        record_metrics(rec)
        forward = rec.forward
        context: SpanContext | None = None
        if tracer is not None and rec.head is not None:
            # Routed requests got their span context before they left; the others (the mesh
            # answered them itself) get one now, child of what they came with.
            context = forward.trace if forward is not None and forward.trace is not None else None
            if context is None:
                context = tracer.start(rec.head.headers)
        sampled = context is not None and context.sampled
        if not (sampled or lines is not None or tap.active):
            return
        event = tap_event(proxy, rec, caller)
        if tap.active:
            tap.publish(event)
        route = forward.route if forward is not None else None
        if sampled:
            assert context is not None and spans is not None
            # Encoded now: a queued span is ~600 bytes, not ~1.7 KB of objects, and the cost is
            # spread over requests instead of stalling the loop for a whole batch.
            spans.put(encode_span(span_from(event, context, route=route, retries=rec.retries, end_ns=time.time_ns())))
        if lines is not None:
            trace_id: str | None
            span_id: str | None
            if context is not None:
                trace_id, span_id = context.trace_id_hex, context.span_id_hex
            else:
                trace_id, span_id = (trace_id_of(rec.head.headers) if rec.head is not None else None), None
            line = access_line(
                event, route=route, bytes_in=rec.bytes_in, retries=rec.retries, trace_id=trace_id, span_id=span_id
            )
            lines.put(line)

    return record_all


class TracedRouter:
    """A connection's router, whose forwarded requests carry this hop's span on.

    The span's parent is the context the request came with; the request leaves with the
    span's own (``traceparent``, and B3 when it came with B3), in place of what it came
    with. CONNECT tunnels are not HTTP requests upstream: they pass untouched.
    """

    __slots__ = ("inner", "tracer", "direction", "finished", "requested", "retry_to", "failover_to")

    def __init__(self, inner: Router, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer
        self.direction = inner.direction
        self.finished = inner.finished
        self.requested = inner.requested
        self.retry_to = inner.retry_to
        self.failover_to = inner.failover_to

    def route(self, head: RequestHead) -> Forward | Reject:
        decision = self.inner.route(head)
        if isinstance(decision, Forward) and not decision.tunnel:
            context = self.tracer.start(head.headers)
            decision.trace = context
            decision.add_headers = decision.add_headers + context.headers()  # a new list: it may be shared
            decision.drop_headers = self.tracer.dropping(decision.drop_headers)
        return decision

    def __repr__(self) -> str:
        return f"<TracedRouter {self.inner!r}>"


def tap_event(proxy: Proxy, rec: RequestRecord, caller: Any = None) -> TapEvent:
    own_service = proxy.settings.service
    own_identity = str(proxy.identity.creds.identity)
    forward = rec.forward
    key = forward.key if forward is not None else None
    if rec.direction == "inbound":
        src_service = rec.peer_service or (caller.name if caller is not None else None)
        src_identity = str(caller) if caller is not None else None
        dst_service: str | None = own_service
        dst_identity: str | None = own_identity
        dst_address = key.address if key is not None else _app_address(proxy)
        tls = True  # the inbound listener only speaks mTLS
    else:
        src_service, src_identity = own_service, own_identity
        peer = rec.peer_service
        dst_service = peer if peer and peer != "egress" else None
        dst_identity = key.identity if key is not None else None
        dst_address = key.address if key is not None else None
        tls = key is not None and key.alpn is not None
    authority, path = _authority_and_path(rec)
    return TapEvent(
        timestamp=time.time() - rec.latency_ms / 1000.0,
        proxy=own_service,
        direction=rec.direction,
        request_id=_request_id(rec),
        src_service=src_service,
        src_identity=src_identity,
        dst_service=dst_service,
        dst_identity=dst_identity,
        dst_address=dst_address,
        method=rec.method.decode("latin-1"),
        authority=authority,
        path=path,
        status=rec.status,
        latency_ms=rec.latency_ms,
        mesh_error=rec.mesh_error,
        tls=tls,
        response_bytes=rec.bytes_out or None,
        grpc_status=rec.grpc_status,
        src_address=str(caller.address(rec.head)) if isinstance(caller, EdgeClient) else None,
    )


def _authority_and_path(rec: RequestRecord) -> tuple[str, str]:
    """Origin-form path: an HTTP proxy request (``GET http://web/a``) shows as ``/a``, like it does inbound."""
    authority = rec.authority.decode("latin-1")
    target = rec.path.decode("latin-1")
    if rec.method == b"CONNECT":
        return authority or target, ""
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        host, slash, path = rest.partition("/")
        if not slash:
            host, question, query = rest.partition("?")
            path = "/" + (question + query if question else "")
        else:
            path = "/" + path
        return authority or host, path
    return authority, target


def _request_id(rec: RequestRecord) -> str | None:
    """The request's x-request-id: as it arrived, or the one the outbound side added."""
    value = rec.head.header(REQUEST_ID) if rec.head is not None else None
    if value is None and rec.forward is not None:
        value = next((v for k, v in rec.forward.add_headers if k.lower() == REQUEST_ID), None)
    return value.decode("latin-1") if value is not None else None


def _app_address(proxy: Proxy) -> str | None:
    key = proxy.app_key
    return key.address if key is not None else None
