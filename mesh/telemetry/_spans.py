"""What a proxy's span says (pure): one span per request and hop, made from the request's
``TapEvent`` (the source and destination the tap and ``mesh top`` show) and its span context.

Names and attributes follow OpenTelemetry's HTTP and RPC conventions where they have one,
and say ``mesh.*`` where they do not:

- name ``GET reviews`` (the method and the destination service, the same on both sides of a hop);
- kind CLIENT on the outbound side, SERVER on the inbound side;
- ``http.request.method``, ``server.address`` (the authority), ``url.path``, ``url.query``
  (values redacted, as in the tap), ``http.response.status_code``, ``rpc.grpc.status_code``;
- ``mesh.direction``, ``mesh.peer.service`` and ``mesh.peer.identity`` (outbound: the service
  called and the SPIFFE id its endpoint proved; inbound: the caller's), ``mesh.peer.address``,
  ``mesh.route``, ``mesh.error`` (the ``x-mesh-error`` reason), ``mesh.retries``,
  ``mesh.request_id``;
- status ERROR when the request failed as metrics classify it, with the mesh error as message.

The resource says which proxy: ``service.name``, ``service.version`` (the ``version``
label), ``mesh.identity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.telemetry._classify import classify
from mesh.telemetry._tap import TapEvent, redact_query
from mesh.telemetry._trace import SpanContext

AttributeValue = str | bool | int | float
Attributes = list[tuple[str, AttributeValue]]

# opentelemetry.proto.trace.v1.Span.SpanKind
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3


@dataclass(slots=True)
class Span:
    """One finished span, as a proxy reports it."""

    context: SpanContext
    kind: int  # SPAN_KIND_SERVER (inbound) or SPAN_KIND_CLIENT (outbound)
    name: str
    start_ns: int  # Unix time in nanoseconds
    end_ns: int
    attributes: Attributes = field(default_factory=list)
    error: bool = False
    message: str = ""  # the status message (a mesh error's reason)


def span_from(event: TapEvent, context: SpanContext, *, route: str | None, retries: int, end_ns: int) -> Span:
    """The span of one request as ``event`` describes it."""
    outbound = event.direction == "outbound"
    path, mark, query = event.path.partition("?")
    attributes: Attributes = [
        ("mesh.direction", event.direction),
        ("http.request.method", event.method),
        ("server.address", event.authority),
        ("url.path", path),
    ]
    if mark:
        attributes.append(("url.query", redact_query(event.path).partition("?")[2]))
    if event.status:
        attributes.append(("http.response.status_code", event.status))
    if event.grpc_status is not None:
        attributes.append(("rpc.grpc.status_code", event.grpc_status))
    peer_service = event.dst_service if outbound else event.src_service
    peer_identity = event.dst_identity if outbound else event.src_identity
    if peer_service:
        attributes.append(("mesh.peer.service", peer_service))
    if peer_identity:
        attributes.append(("mesh.peer.identity", peer_identity))
    if event.dst_address and outbound:
        attributes.append(("mesh.peer.address", event.dst_address))
    if route is not None:
        attributes.append(("mesh.route", route))
    if event.mesh_error is not None:
        attributes.append(("mesh.error", event.mesh_error))
    attributes.append(("mesh.retries", retries))
    if event.request_id is not None:
        attributes.append(("mesh.request_id", event.request_id))
    failed = classify(event.status, event.mesh_error, event.grpc_status) == "failure"
    destination = event.dst_service or event.authority or "egress"
    return Span(
        context,
        SPAN_KIND_CLIENT if outbound else SPAN_KIND_SERVER,
        f"{event.method} {destination}" if event.method else destination,
        end_ns - int(event.latency_ms * 1_000_000),
        end_ns,
        attributes,
        failed,
        event.mesh_error or "",
    )


def resource_attributes(service: str, identity: str, labels: dict[str, str], version: str) -> Attributes:
    """The resource of a proxy's spans."""
    attributes: Attributes = [("service.name", service)]
    if labels.get("version"):
        attributes.append(("service.version", labels["version"]))
    attributes += [
        ("mesh.identity", identity),
        ("telemetry.sdk.name", "mesh"),
        ("telemetry.sdk.language", "python"),
        ("telemetry.sdk.version", version),
    ]
    return attributes
