"""`GET /v1/routes?service=S`: the routes in force for S, with golden metrics per route.

Route names match the proxies' (``route.name``, or ``route-<index in the whole
config>``), so the per-route counters every caller's proxy keeps can be summed.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from mesh.telemetry import histogram_quantile, parse_prometheus_text


def routes_in_force(config: Any, service: str) -> list[tuple[str, Any]]:
    return [
        (route.name or f"route-{index}", route) for index, route in enumerate(config.routes) if route.service == service
    ]


async def routes_view(state: Any, service: str, dialer: Any) -> dict[str, Any]:
    """``dialer``: the AdminDialer that reads every proxy's /metrics over mTLS."""
    from mesh.controller._fanin_admin import AdminUnreachable, admin_get, proxy_targets

    routes = routes_in_force(state.config, service)
    counts: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, float], float] = {}
    unreachable: list[str] = []

    async def scrape(target: Any) -> None:
        try:
            status, body = await admin_get(dialer, target, "/metrics")
        except AdminUnreachable as exc:
            unreachable.append(str(exc))
            return
        if status != 200:
            return
        for sample in parse_prometheus_text(body.decode("utf-8", "replace")):
            labels = sample.labels_dict
            if labels.get("peer_service") != service:
                continue
            if sample.name == "route_response_total":
                key = (labels["route"], labels["classification"])
                counts[key] = counts.get(key, 0.0) + sample.value
            elif sample.name == "route_response_latency_ms_bucket":
                bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
                key2 = (labels["route"], bound)
                buckets[key2] = buckets.get(key2, 0.0) + sample.value

    async with trio.open_nursery() as nursery:
        for target in proxy_targets(state):
            nursery.start_soon(scrape, target)

    rows = []
    for name, route in routes:
        success = counts.get((name, "success"), 0.0)
        failure = counts.get((name, "failure"), 0.0)
        total = success + failure
        route_buckets = sorted((bound, count) for (r, bound), count in buckets.items() if r == name)
        rows.append(
            {
                "name": name,
                "route": route.to_dict(),
                "requests": int(total),
                "success_rate": (success / total) if total else None,
                "p50_ms": histogram_quantile(0.5, route_buckets) if total else None,
                "p99_ms": histogram_quantile(0.99, route_buckets) if total else None,
            }
        )
    return {"service": service, "config_version": state.config_version, "routes": rows, "unreachable": unreachable}
