"""`mesh stat`: the controller's ``/v1/stats`` answer shaped into rows (pure).

One row per service (all its instances), followed by one row per value of its
``version`` label when its instances carry one, like `linkerd viz stat`:
meshed instances, success rate, requests per second, latency p50/p95/p99 and
open TCP connections, over the window the controller could cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StatRow:
    service: str
    version: str | None  # None: every instance of the service
    instances: int
    reachable: int
    success_rate: float | None
    rps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    tcp_connections: int | None
    requests: int | None
    window_seconds: float | None

    @property
    def meshed(self) -> str:
        """``reachable/known`` proxies: every instance the registry knows is meshed."""
        return f"{self.reachable}/{self.instances}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meshed": self.meshed}


def _row(entry: Mapping[str, Any]) -> StatRow:
    latency = entry.get("latency_ms") or {}
    return StatRow(
        service=str(entry.get("service", "")),
        version=entry.get("version"),
        instances=int(entry.get("instances") or 0),
        reachable=int(entry.get("reachable") or 0),
        success_rate=entry.get("success_rate"),
        rps=entry.get("rps"),
        p50_ms=latency.get("p50"),
        p95_ms=latency.get("p95"),
        p99_ms=latency.get("p99"),
        tcp_connections=entry.get("tcp_connections"),
        requests=entry.get("requests"),
        window_seconds=entry.get("window_seconds"),
    )


def stat_rows(stats: Mapping[str, Any], service: str | None = None) -> list[StatRow]:
    """Services by name, each followed by its versions; only ``service`` when given."""
    versions: dict[str, list[StatRow]] = {}
    for entry in stats.get("versions") or []:
        row = _row(entry)
        versions.setdefault(row.service, []).append(row)
    rows: list[StatRow] = []
    for entry in sorted(stats.get("services") or [], key=lambda e: str(e.get("service", ""))):
        row = _row(entry)
        if service is not None and row.service != service:
            continue
        rows.append(row)
        rows.extend(sorted(versions.get(row.service, []), key=lambda r: r.version or ""))
    return rows


def covered_window(stats: Mapping[str, Any]) -> float | None:
    """The longest span any reachable proxy's numbers cover (the requested window, or less, or its life)."""
    spans = [p["window_seconds"] for p in stats.get("proxies") or [] if p.get("window_seconds") is not None]
    return max(spans) if spans else None


def stat_json(stats: Mapping[str, Any], service: str | None = None) -> dict[str, Any]:
    """What `mesh stat -o json` prints: the rows, the window, and the proxies that did not answer."""
    return {
        "window_seconds": stats.get("window_seconds"),
        "covered_seconds": covered_window(stats),
        "rows": [row.to_dict() for row in stat_rows(stats, service)],
        "unreachable": [u for u in stats.get("unreachable") or [] if service is None or u.get("service") == service],
    }
