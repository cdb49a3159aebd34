"""`mesh stat`: the controller's stats answer shaped into rows, and the table at 80 columns."""

from __future__ import annotations

import io
from typing import Any

from mesh.debug.render import stat_table
from mesh.debug.stat import covered_window, stat_json, stat_rows


def entry(service: str, version: str | None = None, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "service": service,
        "version": version,
        "instances": 2,
        "reachable": 2,
        "requests": 120,
        "successes": 118,
        "failures": 2,
        "success_rate": 118 / 120,
        "rps": 2.0,
        "latency_ms": {"p50": 1.2, "p95": 8.5, "p99": 42.0},
        "tcp_connections": 3,
        "window_seconds": 60.0,
    }
    base.update(changes)
    return base


STATS: dict[str, Any] = {
    "window_seconds": 60.0,
    "services": [
        entry("web"),
        entry("client", requests=0, successes=0, failures=0, success_rate=None, rps=0.0,
              latency_ms={"p50": None, "p95": None, "p99": None}, tcp_connections=0, instances=1, reachable=1),
        entry("db", instances=1, reachable=0, requests=None, success_rate=None, rps=None,
              latency_ms={"p50": None, "p95": None, "p99": None}, tcp_connections=None, window_seconds=None),
    ],
    "versions": [entry("web", "v2", instances=1, reachable=1), entry("web", "v1", instances=1, reachable=1)],
    "edges": [],
    "proxies": [{"window_seconds": 60.0}, {"window_seconds": 41.5}, {"window_seconds": None}],
    "unreachable": [{"instance": "db-1", "service": "db", "admin": "127.0.0.1:9", "error": "connection refused"}],
}


def test_rows_are_services_each_followed_by_its_versions() -> None:
    rows = stat_rows(STATS)
    assert [(r.service, r.version) for r in rows] == [
        ("client", None),
        ("db", None),
        ("web", None),
        ("web", "v1"),
        ("web", "v2"),
    ]
    web = rows[2]
    assert web.meshed == "2/2" and web.success_rate == 118 / 120 and web.rps == 2.0
    assert (web.p50_ms, web.p95_ms, web.p99_ms) == (1.2, 8.5, 42.0)
    assert web.tcp_connections == 3
    assert rows[1].meshed == "0/1" and rows[1].rps is None


def test_one_service() -> None:
    assert [(r.service, r.version) for r in stat_rows(STATS, "web")] == [("web", None), ("web", "v1"), ("web", "v2")]
    assert stat_rows(STATS, "nope") == []
    assert stat_rows({}) == []


def test_json_shape() -> None:
    data = stat_json(STATS, "db")
    assert data["window_seconds"] == 60.0 and data["covered_seconds"] == 60.0
    assert [r["service"] for r in data["rows"]] == ["db"]
    assert data["rows"][0]["meshed"] == "0/1"
    assert data["unreachable"][0]["error"] == "connection refused"
    assert stat_json(STATS, "web")["unreachable"] == []
    assert covered_window({"proxies": []}) is None


def test_table_fits_80_columns() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=80, force_terminal=False, color_system=None).print(stat_table(stat_rows(STATS)))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split() == ["SERVICE", "VERSION", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP"]
    web = next(line for line in lines if line.startswith("web"))
    assert web.split() == ["web", "-", "2/2", "98.33%", "2.0rps", "1.2ms", "8.5ms", "42ms", "3"]
    assert any(line.split()[:2] == ["web", "v1"] for line in lines)
    db = next(line for line in lines if line.startswith("db"))
    assert db.split() == ["db", "-", "0/1", "-", "-", "-", "-", "-", "-"]
