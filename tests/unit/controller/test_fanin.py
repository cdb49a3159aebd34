"""The controller's telemetry fan-in: snapshots, baselines and aggregation (pure), and the
tap merge and the scrape against real admin pages (the proxy's AdminApp) over mTLS on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from mesh.controller import _fanin_stats
from mesh.controller._fanin import StatsCollector, parse_window
from mesh.controller._fanin_admin import AdminDialer, AdminUnreachable, ProxyTarget
from mesh.controller._fanin_stats import ProxySnapshot, Traffic, aggregate, choose_baseline
from mesh.controller._fanin_tap import TapFanIn
from mesh.home import MeshHome
from mesh.identity import CertificateAuthority, server_context, service_identity
from mesh.net import ALPN_ADMIN, TLSStream
from mesh.proxy._admin import AdminApp, tap_handler
from mesh.proxy._exchange import RequestRecord
from mesh.proxy._metrics import ProxyMetrics
from mesh.telemetry import TapEvent, TapFilter, TapHub, parse_prometheus_text

pytestmark = pytest.mark.timeout(30)

TD = "mesh.local"


def served(metrics: ProxyMetrics, direction: str, peer: str, status: int = 200, latency: float = 5.0, n: int = 1) -> None:
    for _ in range(n):
        metrics.record(RequestRecord(direction, peer, b"GET", b"x", b"/", status, latency, None))


def snapshot(metrics: ProxyMetrics, at: float) -> ProxySnapshot:
    return ProxySnapshot.from_samples(parse_prometheus_text(metrics.render()), at)


def target(service: str, port: int = 9990, version: str | None = None, instance: str | None = None) -> ProxyTarget:
    labels = (("version", version),) if version else ()
    return ProxyTarget(instance or f"{service}-{port}", service, "127.0.0.1", port, f"spiffe://{TD}/svc/{service}", labels)


# ------------------------------------------------------------ snapshots (pure)


def test_snapshot_reads_the_proxy_metrics() -> None:
    metrics = ProxyMetrics()
    served(metrics, "inbound", "client", n=3)
    served(metrics, "inbound", "client", status=503)
    served(metrics, "outbound", "db", latency=50.0)
    metrics.tcp_open.labels("inbound").inc(2)
    snap = snapshot(metrics, 1000.0)
    inbound = snap.traffic[("inbound", "client")]
    assert (inbound.requests, inbound.successes) == (4, 3)
    assert inbound.buckets[float("inf")] == 4
    assert snap.traffic[("outbound", "db")].requests == 1
    assert snap.tcp_open == {"inbound": 2}
    assert snap.start_time == pytest.approx(metrics.start_time.value, abs=0.01)


def test_deltas_and_counter_resets() -> None:
    early = Traffic(10, 9, {5.0: 8, float("inf"): 10})
    late = Traffic(15, 13, {5.0: 12, float("inf"): 15})
    delta = late.minus(early)
    assert delta is not None and (delta.requests, delta.successes) == (5, 4)
    assert delta.buckets == {5.0: 4, float("inf"): 5}
    assert early.minus(late) is None  # went down: a restart


def test_baseline_closest_to_the_window_start() -> None:
    start = 1000.0
    history = [ProxySnapshot(at, start) for at in (1010.0, 1040.0, 1070.0, 1095.0)]
    current = ProxySnapshot(1100.0, start)
    assert choose_baseline(history, current, 60).at == 1040.0
    assert choose_baseline(history, current, 30).at == 1070.0
    assert choose_baseline(history, current, 3600).at == 1000.0  # the process start: counters were zero
    # First request, nothing kept yet: the process start is the baseline.
    assert choose_baseline([], current, 60).at == start
    # Another process (restarted): its old snapshots do not count.
    assert choose_baseline([ProxySnapshot(1090.0, 900.0)], current, 10).at == start
    # Too close to now to mean anything.
    assert choose_baseline([ProxySnapshot(1099.8, start)], ProxySnapshot(1100.0, 1099.5), 60) is None


def test_parse_window() -> None:
    assert parse_window(None) == 60.0
    assert parse_window("30") == 30.0
    assert parse_window("5m") == 300.0
    for bad in ("0", "2h", "soon", "nan"):
        with pytest.raises(ValueError):
            parse_window(bad)


# ------------------------------------------------------------ aggregation (pure)


def two_scrapes() -> tuple[list[ProxyTarget], dict[Any, Any], dict[Any, Any]]:
    """web v1 and v2 serve client; client also calls egress; db is down."""
    web1, web2, client = ProxyMetrics(), ProxyMetrics(), ProxyMetrics()
    t_web1, t_web2, t_client = target("web", 1, "v1"), target("web", 2, "v2"), target("client", 3)
    t_db = target("db", 4)
    before = {t.key: snapshot(m, 1000.0) for t, m in ((t_web1, web1), (t_web2, web2), (t_client, client))}
    served(web1, "inbound", "client", n=8, latency=4.0)
    served(web1, "inbound", "client", n=2, status=500, latency=40.0)
    served(web2, "inbound", "client", n=10, latency=2.0)
    served(client, "outbound", "web", n=20)
    served(client, "outbound", "egress", n=5)
    web1.tcp_open.labels("inbound").inc(3)
    after: dict[Any, Any] = {t.key: snapshot(m, 1010.0) for t, m in ((t_web1, web1), (t_web2, web2), (t_client, client))}
    after[t_db.key] = "127.0.0.1:4: connection refused"
    return [t_client, t_db, t_web1, t_web2], after, before


def test_aggregate_services_versions_and_edges() -> None:
    targets, scrapes, baselines = two_scrapes()
    stats = aggregate(targets, scrapes, baselines, 60.0, TD, 1010.0)
    assert json.loads(json.dumps(stats)) == stats  # the API sends it as JSON
    assert stats["window_seconds"] == 60.0
    services = {s["service"]: s for s in stats["services"]}
    web = services["web"]
    assert (web["instances"], web["reachable"]) == (2, 2)
    assert (web["requests"], web["successes"], web["failures"]) == (20, 18, 2)
    assert web["success_rate"] == pytest.approx(0.9)
    assert web["rps"] == pytest.approx(2.0)  # 20 requests in 10 s
    assert web["tcp_connections"] == 3
    assert web["window_seconds"] == 10.0
    p50, p99 = web["latency_ms"]["p50"], web["latency_ms"]["p99"]
    assert 1 <= p50 <= 5 and p99 >= 25
    assert services["client"]["requests"] == 0 and services["client"]["success_rate"] is None
    db = services["db"]
    assert (db["instances"], db["reachable"], db["requests"]) == (1, 0, None)
    versions = {(v["service"], v["version"]): v for v in stats["versions"]}
    assert versions[("web", "v1")]["success_rate"] == pytest.approx(0.8)
    assert versions[("web", "v2")]["success_rate"] == 1.0
    assert stats["unreachable"] == [
        {"instance": "db-4", "service": "db", "address": "127.0.0.1:4", "error": "127.0.0.1:4: connection refused"}
    ]

    edges = {(e["src"], e["dst"]): e for e in stats["edges"]}
    web_edge = edges[("client", "web")]
    assert web_edge["seen_by"] == ["source", "destination"]
    assert web_edge["src_identities"] == [f"spiffe://{TD}/svc/client"]
    assert web_edge["dst_identities"] == [f"spiffe://{TD}/svc/web"]
    assert web_edge["mtls"] is True
    assert web_edge["requests"] == 20 and web_edge["rps"] == pytest.approx(2.0)
    # Latency as the caller saw it (the source's buckets), for the dashboard's edges.
    assert web_edge["latency_ms"]["p99"] is not None and web_edge["latency_ms"]["p50"] <= web_edge["latency_ms"]["p99"]
    egress = edges[("client", "egress")]
    assert egress["mtls"] is False and egress["dst_identities"] == []


def test_aggregate_without_history_uses_the_whole_life() -> None:
    metrics = ProxyMetrics()
    served(metrics, "inbound", "client", n=4)
    t = target("web")
    scrape = snapshot(metrics, metrics.start_time.value + 20.0)
    stats = aggregate([t], {t.key: scrape}, {t.key: choose_baseline([], scrape, 60.0)}, 60.0, TD, scrape.at)
    (web,) = stats["services"]
    assert web["requests"] == 4 and web["window_seconds"] == pytest.approx(20.0, abs=0.1)
    assert web["rps"] == pytest.approx(0.2, abs=0.01)


def test_edges_seen_only_by_the_destination() -> None:
    metrics = ProxyMetrics()
    served(metrics, "inbound", "batch", n=2)
    t = target("web")
    scrape = snapshot(metrics, 2000.0)
    stats = aggregate([t], {t.key: scrape}, {t.key: None}, 60.0, TD, 2000.0)
    (edge,) = stats["edges"]
    assert (edge["src"], edge["dst"], edge["seen_by"]) == ("batch", "web", ["destination"])
    assert edge["src_identities"] == [f"spiffe://{TD}/svc/batch"]  # not in the registry: the default id


# ------------------------------------------------------------ I/O against real admin servers


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(MeshHome(tmp_path / "home"), trust_domain=TD)


@pytest.fixture
def dialer(ca: CertificateAuthority) -> AdminDialer:
    """The controller's side: its own identity, ALPN mesh-admin."""
    return AdminDialer.for_credentials(ca.issue(service_identity(TD, "mesh-controller")))


async def admin_server(
    nursery: trio.Nursery, ca: CertificateAuthority, service: str, metrics: ProxyMetrics, hub: TapHub, creds: Any = None
) -> int:
    """A proxy's admin pages as the controller reads them: mTLS as spiffe://TD/svc/SERVICE, ALPN mesh-admin."""
    app = AdminApp(metrics.render, dict, lambda: True, {b"/tap": tap_handler(hub, query_values=True)})
    context = server_context(creds or ca.issue(service_identity(TD, service)), alpn=(ALPN_ADMIN,))

    async def serve(tcp: trio.SocketStream) -> None:
        tls = TLSStream(tcp, context, server_side=True)
        try:
            await tls.do_handshake()
            await app.serve_connection(tls)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await nursery.start(trio.serve_tcp, serve, 0)
    return listeners[0].socket.getsockname()[1]


def tap_event(proxy: str, request_id: str) -> TapEvent:
    return TapEvent(1.0, proxy, "inbound", request_id, "client", None, proxy, None, None, "GET", proxy, "/", 200, 1.0, None, True)


async def free_port() -> int:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    return port


async def test_tap_fan_in_merges_proxies_and_finds_new_ones(ca: CertificateAuthority, dialer: AdminDialer) -> None:
    hub_a, hub_b = TapHub(), TapHub()
    dead = await free_port()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port_a = await admin_server(nursery, ca, "a", ProxyMetrics(), hub_a)
            port_b = await admin_server(nursery, ca, "b", ProxyMetrics(), hub_b)
            targets = [target("a", port_a), target("gone", dead)]
            fanin = TapFanIn(lambda: list(targets), TapFilter(service="a"), None, dialer, refresh=0.1)
            seen: list[dict[str, Any]] = []

            async def next_item() -> dict[str, Any]:
                item = await fanin.__anext__()
                seen.append(item)
                return item

            first = [await next_item(), await next_item()]
            assert {i["type"] for i in first} == {"tapping", "unreachable"}
            assert next(i for i in first if i["type"] == "unreachable")["service"] == "gone"
            hub_a.publish(tap_event("a", "1"))
            item = await next_item()
            assert (item["type"], item["request_id"], item["instance"]) == ("request", "1", f"a-{port_a}")
            # A proxy that appears while tapping is picked up.
            targets.append(target("b", port_b))
            assert (await next_item())["type"] == "tapping"
            assert hub_b.active
            hub_b.publish(tap_event("b", "2"))  # filtered out at the proxy (service=a)
            hub_b.publish(tap_event("a", "3"))
            assert (await next_item())["request_id"] == "3"
            # The unreachable one is reported once, not at every refresh.
            assert sum(1 for i in seen if i["type"] == "unreachable") == 1
            await fanin.aclose()
            with pytest.raises(StopAsyncIteration):
                await fanin.__anext__()
            while hub_a.active or hub_b.active:  # the proxies see the listener go
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()


async def test_merged_stream_max_rps(ca: CertificateAuthority, dialer: AdminDialer) -> None:
    hub = TapHub()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = await admin_server(nursery, ca, "a", ProxyMetrics(), hub)
            fanin = TapFanIn(lambda: [target("a", port)], TapFilter(), 1000.0, dialer, refresh=0.1)
            assert (await fanin.__anext__())["type"] == "tapping"
            for i in range(5):
                hub.publish(tap_event("a", str(i)))
            assert (await fanin.__anext__())["request_id"] == "0"
            await fanin.aclose()
            nursery.cancel_scope.cancel()


async def test_stats_scrape_concurrently_and_skip_the_dead(ca: CertificateAuthority, dialer: AdminDialer) -> None:
    web = ProxyMetrics()
    served(web, "inbound", "client", n=6)
    dead = await free_port()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = await admin_server(nursery, ca, "web", web, TapHub())
            impostor = await admin_server(nursery, ca, "db", ProxyMetrics(), TapHub())
            targets = [target("web", port), target("db", dead), target("x", impostor)]
            collector = StatsCollector(lambda: targets, TD, dialer, period=0.2)
            stats = await collector.stats(60.0)
            services = {s["service"]: s for s in stats["services"]}
            assert services["web"]["requests"] == 6 and services["web"]["reachable"] == 1
            assert services["db"]["reachable"] == 0
            reasons = {u["service"]: u["error"] for u in stats["unreachable"]}
            assert "refused" in reasons["db"]
            # Who answers must be who the registry says: a proxy of another service is not read.
            assert reasons["x"] == f"127.0.0.1:{impostor}: peer presented spiffe://{TD}/svc/db, expected spiffe://{TD}/svc/x"
            # The sampler keeps a ring of snapshots; later requests compare with them.
            served(web, "inbound", "client", n=3)
            await trio.sleep(_fanin_stats.MIN_SPAN + 0.3)
            served(web, "inbound", "client", n=2)
            stats = await collector.stats(_fanin_stats.MIN_SPAN)
            # A baseline about 1 s back: a sampled snapshot taken after the first 6 and the next 3.
            web_row = next(s for s in stats["services"] if s["service"] == "web")
            assert web_row["requests"] == 2
            assert web_row["window_seconds"] < 2
            nursery.cancel_scope.cancel()


async def test_a_revoked_proxy_is_not_read(ca: CertificateAuthority) -> None:
    """The controller reads no pages of a proxy whose certificate an operator revoked (its list is
    read at each connect, so a revocation counts from the next one)."""
    web = ca.issue(service_identity(TD, "web"))
    revoked: list[str] = []
    dialer = AdminDialer.for_credentials(ca.issue(service_identity(TD, "mesh-controller")), revoked_now=lambda: revoked)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = await admin_server(nursery, ca, "web", ProxyMetrics(), TapHub(), creds=web)
            stream = await dialer.connect(target("web", port), 5.0)
            await stream.aclose()
            revoked.append(format(web.leaf.serial_number, "x"))
            with pytest.raises(AdminUnreachable, match="revoked"):
                await dialer.connect(target("web", port), 5.0)
            nursery.cancel_scope.cancel()


async def test_tap_with_no_proxies_says_it_is_waiting(dialer: AdminDialer) -> None:
    with trio.fail_after(10):
        fanin = TapFanIn(lambda: [], TapFilter(), None, dialer, refresh=0.05)
        item = await fanin.__anext__()
        assert item["type"] == "waiting" and "no proxy" in item["message"]
        with trio.move_on_after(0.3):  # said once, not at every refresh
            await fanin.__anext__()
            raise AssertionError("a second item with nothing to tap")
        await fanin.aclose()
