"""What the dashboard shows, built from the controller's answers (pure).

The page is fed by *topics*: named JSON values that the feed republishes when
it learns something new. Each server-sent events stream sends every topic once,
then each topic again whenever its version moves; ``/api/state`` is all of them
at once. Topics:

    link      is the controller answering (and since when, or why not)
    status    controller, endpoints per service with health, `mesh up`'s processes
    stats     golden metrics per service and version, edges (last minute, like `mesh stat`)
    history   golden metrics per service and version over the last minutes
    routes    routes and policies in force, with per-route metrics
    faults    faults in force: `mesh fault` ones (expiring) and those of routes
    check     `mesh check --proxy`'s last report
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from mesh.dashboard._sse import sse_json

HISTORY_SECONDS = 900.0  # "the last minutes": 15 of them, as Linkerd viz's default range
ALL_VERSIONS = ""  # the series of a whole service (every version)

Point = tuple[float, float | None, float | None, float | None, int | None]  # time, rps, success, p99, requests


class History:
    """One point per series poll for each service (and each of its versions), for ``keep`` seconds."""

    def __init__(self, keep: float = HISTORY_SECONDS) -> None:
        self.keep = keep
        self._series: dict[tuple[str, str], deque[Point]] = {}

    def add(self, stats: Mapping[str, Any]) -> None:
        """A /v1/stats answer whose window is the time since the previous one."""
        now = float(stats.get("time") or 0.0)
        rows = [*(stats.get("services") or []), *(stats.get("versions") or [])]
        for row in rows:
            key = (str(row.get("service", "")), str(row.get("version") or ALL_VERSIONS))
            latency = row.get("latency_ms") or {}
            point: Point = (now, row.get("rps"), row.get("success_rate"), latency.get("p99"), row.get("requests"))
            self._series.setdefault(key, deque()).append(point)
        for key in list(self._series):
            series = self._series[key]
            while series and series[0][0] < now - self.keep:
                series.popleft()
            if not series:
                del self._series[key]

    def to_dict(self) -> dict[str, Any]:
        """``{"keep_seconds", "series": {service: {version or "": [[t, rps, success, p99, requests], …]}}}``."""
        series: dict[str, dict[str, list[list[Any]]]] = {}
        for (service, version), points in sorted(self._series.items()):
            series.setdefault(service, {})[version] = [list(p) for p in points]
        return {"keep_seconds": self.keep, "series": series}


class Topics:
    """The latest value of each topic, with a version that moves on every publish."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self.version = 0
        self._values: dict[str, tuple[int, Any, bytes]] = {}
        self._on_change = on_change

    def publish(self, name: str, value: Any) -> None:
        self.version += 1
        # Encoded once, whoever is listening: every stream sends the same bytes.
        self._values[name] = (self.version, value, sse_json(name, value, str(self.version)))
        self._on_change()

    def get(self, name: str) -> Any:
        item = self._values.get(name)
        return None if item is None else item[1]

    def state(self) -> dict[str, Any]:
        return {name: value for name, (_, value, _) in sorted(self._values.items())}

    def messages_since(self, seen: dict[str, int]) -> list[bytes]:
        """The SSE messages of topics newer than ``seen`` (updated in place), oldest first."""
        fresh = sorted(
            (version, name, message)
            for name, (version, _, message) in self._values.items()
            if version > seen.get(name, 0)
        )
        for version, name, _ in fresh:
            seen[name] = version
        return [message for _, _, message in fresh]


# ------------------------------------------------------------------ topic values


def status_topic(status: Mapping[str, Any], stats: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    from mesh.debug.endpoints import endpoint_rows

    registered = set(status.get("services") or {})
    return {
        "controller": status.get("controller") or {},
        "endpoints": endpoint_rows(status, stats, now),
        # Gateways watch for config but never register as endpoints: name them from the watches.
        "gateways": sorted({w["service"] for w in status.get("watches") or [] if w.get("service") not in registered}),
        "units": status.get("units") or [],
        "config": status.get("config") or {},
        "time": now,
    }


def stats_topic(stats: Mapping[str, Any]) -> dict[str, Any]:
    from mesh.debug.stat import stat_json

    return {
        **stat_json(stats),
        "edges": [
            {
                key: edge.get(key)
                for key in (
                    "src",
                    "dst",
                    "mtls",
                    "rps",
                    "requests",
                    "success_rate",
                    "latency_ms",
                    "total_requests",
                    "src_identities",
                    "dst_identities",
                    "seen_by",
                )
            }
            for edge in stats.get("edges") or []
        ],
        "time": stats.get("time"),
    }


def routes_topic(config_answer: Mapping[str, Any], routes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``config_answer``: GET /v1/config; ``routes``: service → GET /v1/routes?service= for each routed service."""
    config = config_answer.get("config") or {}
    unreachable = sorted({u for answer in routes.values() for u in answer.get("unreachable") or []})
    return {
        "config_version": config_answer.get("version"),
        "authz_default": (config.get("mesh") or {}).get("authz_default", "allow"),
        "services": {service: list(answer.get("routes") or []) for service, answer in sorted(routes.items())},
        "policies": list(config.get("policy") or []),
        "unreachable": unreachable,
    }


def routed_services(config_answer: Mapping[str, Any]) -> list[str]:
    return sorted(
        {str(r.get("service")) for r in (config_answer.get("config") or {}).get("route") or [] if r.get("service")}
    )


def faults_topic(status: Mapping[str, Any], config_answer: Mapping[str, Any] | None, now: float) -> dict[str, Any]:
    """Every fault in force: `mesh fault`'s (until they expire), then those written in routes."""
    faults: list[dict[str, Any]] = []
    for fault in status.get("faults") or []:
        expires = fault.get("expires_at")
        if expires is not None and expires <= now:
            continue
        faults.append(
            {
                "service": fault.get("service"),
                "source": "mesh fault",
                "route": None,
                "delay_seconds": fault.get("delay_seconds"),
                "delay_percent": fault.get("delay_percent"),
                "abort_status": fault.get("abort_status"),
                "abort_percent": fault.get("abort_percent"),
                "expires_at": expires,
                "seconds_left": None if expires is None else round(expires - now, 1),
            }
        )
    from mesh.config import parse_duration

    routes = ((config_answer or {}).get("config") or {}).get("route") or []
    for index, route in enumerate(routes):
        fault = route.get("fault")
        if not fault:
            continue
        faults.append(
            {
                "service": route.get("service"),
                "source": "config",
                "route": route.get("name") or f"route-{index}",
                "delay_seconds": parse_duration(fault["delay"]) if fault.get("delay") else None,
                "delay_percent": fault.get("delay_percent"),
                "abort_status": fault.get("abort_status"),
                "abort_percent": fault.get("abort_percent"),
                "expires_at": None,
                "seconds_left": None,
            }
        )
    return {"faults": faults, "time": now}
