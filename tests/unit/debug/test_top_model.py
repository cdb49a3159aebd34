"""`mesh top`'s model: tap events → rows by (source, destination, method, path), busiest first."""

from __future__ import annotations

from typing import Any

from mesh.debug.top import TopModel
from mesh.telemetry import TapEvent


def ev(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "request",
        "timestamp": 1.0,
        "direction": "outbound",
        "request_id": None,
        "src_service": "client",
        "dst_service": "web",
        "method": "GET",
        "authority": "web",
        "path": "/",
        "status": 200,
        "latency_ms": 1.0,
        "mesh_error": None,
        "tls": True,
    }
    base.update(changes)
    return base


def test_rows_count_latency_and_success() -> None:
    model = TopModel()
    for latency, status in ((5.0, 200), (1.0, 200), (9.0, 500), (3.0, 200)):
        model.add(ev(path="/api", latency_ms=latency, status=status))
    (row,) = model.rows()
    assert row.key == ("client", "web", "GET", "/api")
    assert row.count == 4
    assert (row.best_ms, row.worst_ms, row.last_ms) == (1.0, 9.0, 3.0)
    assert row.success_rate == 0.75
    assert row.to_dict()["success_rate"] == 0.75


def test_sorted_by_count_then_recency() -> None:
    model = TopModel()
    for i in range(3):
        model.add(ev(path="/a", timestamp=float(i)))
    model.add(ev(path="/b", timestamp=10.0))
    model.add(ev(path="/c", timestamp=20.0))
    model.add(ev(path="/c", timestamp=21.0))
    model.add(ev(method="POST", path="/a", timestamp=30.0))
    assert [(r.method, r.path, r.count) for r in model.rows()] == [
        ("GET", "/a", 3),
        ("GET", "/c", 2),
        ("POST", "/a", 1),  # more recent than /b
        ("GET", "/b", 1),
    ]
    assert len(model.rows(limit=2)) == 2


def test_query_strings_share_a_row() -> None:
    model = TopModel()
    model.add(ev(path="/items?id=1"))
    model.add(ev(path="/items?id=2"))
    model.add(ev(path=""))
    assert {(r.path, r.count) for r in model.rows()} == {("/items", 2), ("/", 1)}


def test_a_call_reported_by_both_proxies_counts_once() -> None:
    model = TopModel()
    assert model.add(ev(direction="inbound", request_id="r1", latency_ms=1.0))
    assert not model.add(ev(direction="outbound", request_id="r1", latency_ms=2.0))
    model.add(ev(direction="outbound", request_id="r2"))
    model.add(ev(direction="inbound", request_id="r2"))
    # The same id on another hop (an app passing x-request-id on) is another row, counted.
    model.add(ev(src_service="web", dst_service="db", request_id="r1"))
    rows = {r.key[:2]: r.count for r in model.rows()}
    assert rows == {("client", "web"): 2, ("web", "db"): 1}
    assert model.events == 3 and model.duplicates == 2


def test_dedupe_memory_is_bounded() -> None:
    model = TopModel(dedupe_memory=2)
    for rid in ("a", "b", "c"):
        model.add(ev(request_id=rid))
    model.add(ev(request_id="a"))  # forgotten: counted again
    model.add(ev(request_id="c"))  # remembered: not counted
    assert model.rows()[0].count == 4


def test_egress_and_unknown_sides() -> None:
    model = TopModel()
    model.add(ev(dst_service=None, authority="example.com"))
    model.add(ev(src_service=None, dst_service=None, authority="", dst_address="10.0.0.1:80"))
    assert {r.key[:2] for r in model.rows()} == {("client", "example.com"), ("-", "10.0.0.1:80")}


def test_takes_tap_events_too_and_counts_drops() -> None:
    model = TopModel()
    model.add(TapEvent.from_dict(ev()))
    model.add_all([ev(), ev()])
    model.note_dropped(5)
    assert model.rows()[0].count == 3 and model.dropped == 5


def test_failures_the_mesh_made() -> None:
    model = TopModel()
    model.add(ev(status=503, mesh_error="no-endpoints", latency_ms=0.1))
    model.add(ev(status=0, mesh_error="upstream-reset"))
    assert model.rows()[0].success_rate == 0.0
