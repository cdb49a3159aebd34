"""What the proxy does with each request beyond metrics and tap: nothing while tracing and access
logs are off; with them on, the trace context a request carries on, its span and its log line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mesh.config import parse_otlp_endpoint
from mesh.identity import SpiffeId
from mesh.proxy import _observe
from mesh.proxy._exchange import Forward, Reason, Reject, UpstreamKey
from mesh.proxy._export import Telemetry, TelemetrySettings
from mesh.proxy.protocol.http1 import Framing, RequestHead
from mesh.telemetry import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, TRACE_HEADERS, parse_traceparent
from tests.unit.proxy.test_tap_admin import fake_proxy, outbound_forward, record

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def decoded(spans: list[bytes]) -> list[Any]:
    """Queued spans (encoded as they are made) read back with the official message."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    return [Span.FromString(data) for data in spans]


def attributes(span: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def head(*headers: tuple[bytes, bytes], target: bytes = b"/api?token=abc") -> RequestHead:
    return RequestHead(b"GET", target, [(b"host", b"web"), *headers], b"1.1", True, Framing.NONE, None, False)


class StaticRouter:
    """A router that always decides the same."""

    direction = "outbound"

    def __init__(self, decision: Forward | Reject) -> None:
        self.decision = decision

    def route(self, head: RequestHead) -> Forward | Reject:
        return self.decision

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        pass

    def requested(self, forward: Forward) -> None:
        pass

    def retry_to(self, forward: Forward) -> Forward | None:
        return None

    def failover_to(self, forward: Forward) -> Forward | None:
        return None


def telemetry_proxy(tmp_path: Path, service: str = "client", sample: float = 1.0, trace: bool = True, log: bool = True) -> Any:
    proxy = fake_proxy(service)
    settings = TelemetrySettings(
        parse_otlp_endpoint("http://127.0.0.1:4318") if trace else None, sample, str(tmp_path / "access.log") if log else None
    )
    proxy.telemetry = Telemetry(settings, proxy.metrics, service, f"spiffe://mesh.local/svc/{service}", {"version": "v1"})
    return proxy


def test_off_the_router_is_the_connections_own_and_nothing_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = fake_proxy("client")
    inner = StaticRouter(outbound_forward())
    router, recorder = _observe.observe(proxy, inner)
    assert router is inner

    def explode(*args: object, **kwargs: object) -> None:
        raise AssertionError("built something with tracing and access logs off")

    for name in ("tap_event", "span_from", "access_line", "trace_id_of"):
        monkeypatch.setattr(_observe, name, explode)
    recorder(record(head=head((b"traceparent", TRACEPARENT)), forward=outbound_forward()))


def test_a_forwarded_request_carries_its_span_on(tmp_path: Path) -> None:
    proxy = telemetry_proxy(tmp_path)
    shared = [(b"mesh-client-id", b"x")]
    forward = Forward(UpstreamKey("127.0.0.1", 4143, "http/1.1", "spiffe://mesh.local/svc/web"), "web", b"/", add_headers=shared)
    router, _ = _observe.observe(proxy, StaticRouter(forward))
    assert isinstance(router, _observe.TracedRouter) and router.direction == "outbound"
    decision = router.route(head((b"traceparent", TRACEPARENT), (b"b3", b"1")))
    assert isinstance(decision, Forward) and decision.trace is not None
    assert shared == [(b"mesh-client-id", b"x")]  # the router's own list is never changed
    added = dict(decision.add_headers)
    assert parse_traceparent(added[b"traceparent"]) == (decision.trace.trace_id, decision.trace.span_id, True)
    assert decision.trace.parent_id == 0xB7AD6B7169203331
    assert added[b"b3"].endswith(b"-%s-1" % decision.trace.span_id_hex.encode())
    assert TRACE_HEADERS <= decision.drop_headers  # what the request came with is replaced


def test_spans_and_lines_of_routed_and_refused_requests(tmp_path: Path) -> None:
    proxy = telemetry_proxy(tmp_path)
    router, recorder = _observe.observe(proxy, StaticRouter(outbound_forward()))
    request = head((b"traceparent", TRACEPARENT), (b"x-request-id", b"r1"))
    forward = router.route(request)
    recorder(record(head=request, forward=forward, retries=1, bytes_in=99))
    refused = head((b"traceparent", TRACEPARENT))
    recorder(record(head=refused, peer_service="db", status=503, mesh_error=Reason.NO_ENDPOINTS.value))
    routed, rejected = decoded(proxy.telemetry.spans.take())
    assert int.from_bytes(routed.span_id, "big") == forward.trace.span_id and routed.kind == SPAN_KIND_CLIENT
    assert attributes(routed)["mesh.retries"] == 1 and attributes(routed)["url.query"] == "x=REDACTED"
    # The mesh answered the second itself: its span is made at the end, child of what it came with.
    assert rejected.parent_span_id.hex() == "b7ad6b7169203331"
    assert rejected.status.code == 2 and rejected.status.message == "no-endpoints"
    first, second = (json.loads(line) for line in proxy.telemetry.lines.take())
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and first["span_id"] == forward.trace.span_id_hex
    assert first["request_id"] == "r1" and first["retries"] == 1 and first["bytes_in"] == 99
    assert first["path"] == "/api?x=REDACTED"
    assert second["mesh_error"] == "no-endpoints" and second["status"] == 503 and second["dst_service"] == "db"


def test_inbound_spans_are_server_spans_naming_the_caller(tmp_path: Path) -> None:
    proxy = telemetry_proxy(tmp_path, "web")
    caller = SpiffeId.parse("spiffe://mesh.local/svc/client")
    inbound = Forward(UpstreamKey("127.0.0.1", 8080, None, None), "client", b"/api")
    router, recorder = _observe.observe(proxy, StaticRouter(inbound), caller)
    request = head((b"traceparent", TRACEPARENT))
    forward = router.route(request)
    recorder(record("inbound", peer_service="client", head=request, forward=forward))
    (span,) = decoded(proxy.telemetry.spans.take())
    assert span.kind == SPAN_KIND_SERVER and span.name == "GET web"
    assert attributes(span)["mesh.peer.identity"] == "spiffe://mesh.local/svc/client"


def test_unsampled_requests_make_no_span_but_carry_the_decision(tmp_path: Path) -> None:
    proxy = telemetry_proxy(tmp_path, sample=0.0, log=False)
    router, recorder = _observe.observe(proxy, StaticRouter(outbound_forward()))
    request = head()
    forward = router.route(request)
    assert dict(forward.add_headers)[b"traceparent"].endswith(b"-00")
    recorder(record(head=request, forward=forward))
    assert len(proxy.telemetry.spans) == 0 and proxy.telemetry.lines is None


def test_access_logs_alone_read_the_trace_id_the_request_came_with(tmp_path: Path) -> None:
    proxy = telemetry_proxy(tmp_path, trace=False)
    inner = StaticRouter(outbound_forward())
    router, recorder = _observe.observe(proxy, inner)
    assert router is inner  # no tracing: requests go on as they came
    recorder(record(head=head((b"traceparent", TRACEPARENT)), forward=outbound_forward()))
    recorder(record())  # a request the mesh could not even read: no head
    first, second = (json.loads(line) for line in proxy.telemetry.lines.take())
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and first["span_id"] is None
    assert second["trace_id"] is None


def test_a_tunnel_carries_no_trace_headers(tmp_path: Path) -> None:
    proxy = telemetry_proxy(tmp_path)
    tunnel = Forward(UpstreamKey("db", 5432, "mesh-tcp", None), "db", b"db:5432", tunnel=True)
    router, _ = _observe.observe(proxy, StaticRouter(tunnel))
    decision = router.route(head())
    assert decision.trace is None and decision.add_headers == []
