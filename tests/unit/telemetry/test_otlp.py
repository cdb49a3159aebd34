"""mesh's OTLP encoder against the official message set: what it writes, opentelemetry-proto reads."""

from __future__ import annotations

import math
import time

from hypothesis import given, settings, strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan, Status as PbStatus

from mesh.telemetry import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    Span,
    SpanContext,
    TapEvent,
    encode_request,
    encode_resource,
    encode_scope,
    encode_span,
    resource_attributes,
    span_from,
)


def decode(spans: list[Span], resource: list[tuple[str, object]] | None = None) -> ExportTraceServiceRequest:
    body = encode_request(encode_resource(resource or [("service.name", "web")]), encode_scope("mesh", "1.2.3"), [encode_span(s) for s in spans])
    return ExportTraceServiceRequest.FromString(body)


def value_of(any_value: object) -> object:
    kind = any_value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(any_value, kind)


def test_a_span_reads_back_field_by_field() -> None:
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x1122334455667788, 0xB7AD6B7169203331, True, b"k=v")
    span = Span(context, SPAN_KIND_CLIENT, "GET reviews", 1_700_000_000_000_000_000, 1_700_000_000_005_000_000,
                [("a", "text"), ("b", 42), ("c", True), ("d", 0.25), ("e", -3)], error=True, message="no-endpoints")
    request = decode([span], [("service.name", "web"), ("service.version", "v2")])
    (resource_spans,) = request.resource_spans
    assert {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes} == {"service.name": "web", "service.version": "v2"}
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("mesh", "1.2.3")
    (got,) = scope_spans.spans
    assert got.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert got.span_id.hex() == "1122334455667788"
    assert got.parent_span_id.hex() == "b7ad6b7169203331"
    assert got.trace_state == "k=v"
    assert got.name == "GET reviews" and got.kind == PbSpan.SPAN_KIND_CLIENT
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (span.start_ns, span.end_ns)
    assert {kv.key: value_of(kv.value) for kv in got.attributes} == {"a": "text", "b": 42, "c": True, "d": 0.25, "e": -3}
    assert got.status.code == PbStatus.STATUS_CODE_ERROR and got.status.message == "no-endpoints"
    # W3C sampled flag, and "the parent is remote" (it came from another process).
    assert got.flags == 0x01 | 0x100 | 0x200


def test_a_root_span_has_no_parent_and_an_unset_status() -> None:
    span = Span(SpanContext(5, 6, None, True), SPAN_KIND_SERVER, "GET web", 1, 2)
    (got,) = decode([span]).resource_spans[0].scope_spans[0].spans
    assert got.parent_span_id == b"" and got.kind == PbSpan.SPAN_KIND_SERVER
    assert got.status.code == PbStatus.STATUS_CODE_UNSET and got.trace_state == ""
    assert got.flags == 0x01 | 0x100


attribute_values = st.one_of(
    st.text(max_size=300),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
)


@settings(max_examples=200)
@given(
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.one_of(st.none(), st.integers(1, 2**64 - 1)),
    st.booleans(),
    st.text(max_size=200),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.lists(st.tuples(st.text(max_size=40), attribute_values), max_size=30),
    st.booleans(),
    st.text(max_size=100),
    st.integers(0, 3),
)
def test_any_span_round_trips(trace_id: int, span_id: int, parent: int | None, sampled: bool, name: str, start: int,
                              end: int, attributes: list[tuple[str, object]], error: bool, message: str, count: int) -> None:
    span = Span(SpanContext(trace_id, span_id, parent, sampled), SPAN_KIND_CLIENT, name, start, end, attributes, error, message)  # type: ignore[arg-type]
    spans = decode([span] * count).resource_spans[0].scope_spans[0].spans
    assert len(spans) == count
    for got in spans:
        assert int.from_bytes(got.trace_id, "big") == trace_id and int.from_bytes(got.span_id, "big") == span_id
        assert (int.from_bytes(got.parent_span_id, "big") if got.parent_span_id else None) == parent
        assert got.name == name and (got.start_time_unix_nano, got.end_time_unix_nano) == (start, end)
        decoded = [(kv.key, value_of(kv.value)) for kv in got.attributes]
        assert len(decoded) == len(attributes)
        for (key, value), (got_key, got_value) in zip(attributes, decoded, strict=True):
            assert got_key == key
            if isinstance(value, float):
                assert got_value == value or (math.isinf(value) and got_value == value)
            else:
                assert got_value == value and type(got_value) is type(value)
        assert (got.status.code == PbStatus.STATUS_CODE_ERROR) == error
        assert got.flags & 1 == sampled


def test_a_proxys_span_from_its_tap_event() -> None:
    event = TapEvent(
        time.time(), "client", "outbound", "rid-1", "client", "spiffe://td/svc/client", "reviews",
        "spiffe://td/svc/reviews", "127.0.0.1:4143", "GET", "reviews", "/reviews/1?user=jason&x", 503, 12.5,
        "no-endpoints", True, 14, 99,
    )
    span = span_from(event, SpanContext(1, 2, 3, True), route="canary", retries=2, end_ns=2_000_000_000)
    (got,) = decode([span], resource_attributes("client", "spiffe://td/svc/client", {"version": "v1"}, "0.1.0")).resource_spans[0].scope_spans[0].spans
    attributes = {kv.key: value_of(kv.value) for kv in got.attributes}
    assert got.name == "GET reviews" and got.kind == PbSpan.SPAN_KIND_CLIENT
    assert got.end_time_unix_nano - got.start_time_unix_nano == 12_500_000
    assert attributes == {
        "mesh.direction": "outbound",
        "http.request.method": "GET",
        "server.address": "reviews",
        "url.path": "/reviews/1",
        "url.query": "user=REDACTED&x",
        "http.response.status_code": 503,
        "rpc.grpc.status_code": 14,
        "mesh.peer.service": "reviews",
        "mesh.peer.identity": "spiffe://td/svc/reviews",
        "mesh.peer.address": "127.0.0.1:4143",
        "mesh.route": "canary",
        "mesh.error": "no-endpoints",
        "mesh.retries": 2,
        "mesh.request_id": "rid-1",
    }
    assert got.status.code == PbStatus.STATUS_CODE_ERROR and got.status.message == "no-endpoints"
    inbound = TapEvent(time.time(), "reviews", "inbound", None, "client", "spiffe://td/svc/client", "reviews",
                       "spiffe://td/svc/reviews", "127.0.0.1:9080", "GET", "reviews", "/", 200, 1.0, None, True)
    served = span_from(inbound, SpanContext(1, 4, 2, True), route=None, retries=0, end_ns=10**9)
    assert served.kind == SPAN_KIND_SERVER and served.name == "GET reviews" and not served.error
    assert ("mesh.peer.identity", "spiffe://td/svc/client") in served.attributes
    assert ("mesh.peer.service", "client") in served.attributes
