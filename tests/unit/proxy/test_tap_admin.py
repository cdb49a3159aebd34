"""The proxy side of tap: the recorder builds events only while someone listens; /tap streams them."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from mesh.identity import SpiffeId
from mesh.net import ALPN_HTTP1
from mesh.proxy import _observe
from mesh.proxy._admin import AdminApp, tap_handler
from mesh.proxy._exchange import Forward, RequestRecord, UpstreamKey
from mesh.proxy._metrics import ProxyMetrics
from mesh.proxy.protocol.http1 import Data, EndOfMessage, Framing, RequestHead, ResponseHead, ResponseReader
from mesh.telemetry import TapEvent, TapHub, parse_prometheus_text

pytestmark = pytest.mark.timeout(30)


def fake_proxy(service: str = "web") -> Any:
    metrics = ProxyMetrics()
    return SimpleNamespace(
        metrics=metrics,
        tap=TapHub(on_drop=metrics.tap_dropped.inc),
        settings=SimpleNamespace(service=service),
        identity=SimpleNamespace(creds=SimpleNamespace(identity=f"spiffe://mesh.local/svc/{service}")),
        app_key=UpstreamKey("127.0.0.1", 8080, None, None),
        telemetry=None,
    )


def record(direction: str = "outbound", **changes: Any) -> RequestRecord:
    values: dict[str, Any] = dict(
        direction=direction,
        peer_service="web",
        method=b"GET",
        authority=b"web",
        path=b"/api?x=1",
        status=200,
        latency_ms=2.0,
        mesh_error=None,
    )
    values.update(changes)
    return RequestRecord(**values)


def outbound_forward(identity: str | None = "spiffe://mesh.local/svc/web", alpn: str | None = ALPN_HTTP1) -> Forward:
    return Forward(
        UpstreamKey("127.0.0.1", 4143, alpn, identity),
        "web",
        b"/api?x=1",
        add_headers=[(b"x-request-id", b"feedface")],
    )


# ------------------------------------------------------------ recorder


def test_no_listener_no_event_built(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = fake_proxy("client")

    def explode(*args: object) -> None:
        raise AssertionError("an event was built with nobody listening")

    monkeypatch.setattr(_observe, "tap_event", explode)
    recorder = _observe.recorder(proxy)
    recorder(record(forward=outbound_forward()))
    samples = parse_prometheus_text(proxy.metrics.render())
    assert [s.value for s in samples if s.name == "request_total"] == [1]  # metrics still count


def test_outbound_event_names_both_sides_and_the_endpoint() -> None:
    proxy = fake_proxy("client")
    sub = proxy.tap.subscribe()
    _observe.recorder(proxy)(record(path=b"http://web/api?x=1", forward=outbound_forward(), bytes_out=120))
    (event,) = sub.take()
    assert event.direction == "outbound" and event.proxy == "client"
    assert (event.src_service, event.src_identity) == ("client", "spiffe://mesh.local/svc/client")
    assert (event.dst_service, event.dst_identity) == ("web", "spiffe://mesh.local/svc/web")
    assert event.dst_address == "127.0.0.1:4143"
    assert event.path == "/api?x=1"  # absolute-form shown as origin-form
    assert event.request_id == "feedface"  # added by the outbound side
    assert event.tls is True and event.status == 200 and event.response_bytes == 120
    assert event.grpc_status is None


def test_inbound_event_names_the_verified_caller() -> None:
    proxy = fake_proxy("web")
    sub = proxy.tap.subscribe()
    caller = SpiffeId.parse("spiffe://mesh.local/svc/client")
    head = RequestHead(b"GET", b"/api", [(b"x-request-id", b"cafe")], b"1.1", True, Framing.NONE, None, False)
    inbound = Forward(UpstreamKey("127.0.0.1", 8080, None, None), "client", b"/api")
    _observe.recorder(proxy, caller)(record("inbound", peer_service="client", head=head, forward=inbound))
    (event,) = sub.take()
    assert (event.src_service, event.src_identity) == ("client", "spiffe://mesh.local/svc/client")
    assert (event.dst_service, event.dst_identity) == ("web", "spiffe://mesh.local/svc/web")
    assert event.dst_address == "127.0.0.1:8080"  # the app
    assert event.tls is True and event.request_id == "cafe"


def test_egress_and_mesh_made_errors() -> None:
    proxy = fake_proxy("client")
    sub = proxy.tap.subscribe()
    egress = Forward(UpstreamKey("example.com", 80, None, None), "egress", b"/")
    _observe.recorder(proxy)(record(peer_service="egress", authority=b"example.com", forward=egress))
    _observe.recorder(proxy)(record(peer_service="db", status=503, mesh_error="no-endpoints"))
    first, second = sub.take()
    assert first.dst_service is None and first.tls is False and first.dst_address == "example.com:80"
    assert second.dst_service == "db" and second.mesh_error == "no-endpoints" and not second.success
    assert second.dst_identity is None and second.tls is False  # never routed


# ------------------------------------------------------------ /tap


async def read_response(client: trio.abc.Stream, reader: ResponseReader, until: int) -> tuple[ResponseHead | None, list[Any]]:
    """Read until ``until`` JSON lines arrived (or the stream ended)."""
    head: ResponseHead | None = None
    lines: list[Any] = []
    buffer = b""
    while len(lines) < until:
        data = await client.receive_some(65536)
        if not data:
            break
        for ev in reader.feed(data):
            if isinstance(ev, ResponseHead):
                head = ev
            elif isinstance(ev, Data):
                buffer += ev.data
            elif isinstance(ev, EndOfMessage):
                return head, lines
        *complete, buffer = buffer.split(b"\n")
        lines += [json.loads(line) for line in complete if line]
    return head, lines


def sample_event(i: int, service: str = "web") -> TapEvent:
    return TapEvent(
        1.0, "client", "outbound", str(i), "client", None, service, None, None, "GET", service, "/", 200, 1.0, None, True
    )


async def test_tap_streams_ndjson_until_the_client_leaves() -> None:
    hub = TapHub()
    app = AdminApp(lambda: "", dict, lambda: True, {b"/tap": tap_handler(hub)})
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.serve_connection, server)
            await client.send_all(b"GET /tap?service=web HTTP/1.1\r\nHost: admin\r\n\r\n")
            while not hub.active:
                await trio.sleep(0.01)
            reader = ResponseReader()
            reader.expect(b"GET")
            hub.publish(sample_event(1))
            hub.publish(sample_event(2, service="db"))  # filtered out
            hub.publish(sample_event(3))
            head, lines = await read_response(client, reader, until=2)
            assert head is not None and head.status == 200
            assert head.header(b"content-type") == b"application/x-ndjson"
            assert head.header(b"transfer-encoding") == b"chunked"
            assert [line["request_id"] for line in lines] == ["1", "3"]
            assert all(line["type"] == "request" for line in lines)
            await client.aclose()  # the listener leaves
            while hub.active:
                await trio.sleep(0.01)
    assert hub.listeners == 0


async def test_a_slow_listener_is_told_what_it_missed() -> None:
    hub = TapHub()
    client, server = trio.testing.memory_stream_pair()
    handler = tap_handler(hub, max_queue=2)
    head = RequestHead(b"GET", b"/tap", [], b"1.1", True, Framing.NONE, None, False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handler, head, server)
            while not hub.active:
                await trio.sleep(0.01)
            for i in range(5):  # no checkpoint: the handler cannot drain in between
                hub.publish(sample_event(i))
            reader = ResponseReader()
            reader.expect(b"GET")
            _, lines = await read_response(client, reader, until=3)
            assert lines[0] == {"type": "dropped", "count": 3, "total": 3}
            assert [line["request_id"] for line in lines[1:]] == ["0", "1"]
            await client.aclose()
    assert not hub.active


async def refusal(hub: TapHub, target: bytes, until: bytes) -> bytes:
    """What the loopback admin server answers to ``GET target``, read until ``until`` shows."""
    app = AdminApp(lambda: "", dict, lambda: True, {b"/tap": tap_handler(hub)})
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.serve_connection, server)
            await client.send_all(b"GET " + target + b" HTTP/1.1\r\nHost: admin\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or until not in data:
                data += await client.receive_some(65536)
    return data


async def test_bad_tap_queries_get_400() -> None:
    hub = TapHub()
    assert (await refusal(hub, b"/tap?direction=up", b"direction")).startswith(b"HTTP/1.1 400")
    assert not hub.active


async def test_query_values_are_redacted_and_shown_only_where_allowed() -> None:
    """The loopback admin server answers anyone on the host: it never shows query values, and
    says how to see them; the one over mTLS (the controller, operators) shows them on request."""
    hub = TapHub()
    secret = TapEvent(1.0, "web", "inbound", "1", "client", None, "web", None, None, "GET", "web", "/login?user=ada&token=s3cret", 200, 1.0, None, True)
    for allowed, query, expected in (
        (False, b"", "/login?user=REDACTED&token=REDACTED"),
        (True, b"", "/login?user=REDACTED&token=REDACTED"),
        (True, b"?show_query=1", "/login?user=ada&token=s3cret"),
    ):
        app = AdminApp(lambda: "", dict, lambda: True, {b"/tap": tap_handler(hub, query_values=allowed)})
        client, server = trio.testing.memory_stream_pair()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(app.serve_connection, server)
                await client.send_all(b"GET /tap" + query + b" HTTP/1.1\r\nHost: admin\r\n\r\n")
                while not hub.active:
                    await trio.sleep(0.01)
                hub.publish(secret)
                reader = ResponseReader()
                reader.expect(b"GET")
                _, lines = await read_response(client, reader, until=1)
                assert lines[0]["path"] == expected
                await client.aclose()
    assert (await refusal(hub, b"/tap?show_query=1", b"mesh tap --show-query")).startswith(b"HTTP/1.1 403")
    assert not hub.active
