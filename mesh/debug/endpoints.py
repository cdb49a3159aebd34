"""Endpoints of each service with their health, from `/v1/status` and `/v1/stats` (pure).

`mesh status` shows an endpoint's config sync and certificate left; the
dashboard adds a health verdict that joins what the controller knows (is the
proxy watching, has it applied the current config, when does its certificate
expire) with what the stats scrape found (does its admin server answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CERT_WARN_SECONDS = 3600.0  # a leaf lives 24 h and is renewed at 70 %: under an hour left means renewal failed


def time_left(seconds: float) -> str:
    """``2h``, ``15m``, ``40s`` or ``expired``."""
    if seconds <= 0:
        return "expired"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def config_sync(entry: Mapping[str, Any], current: int) -> str:
    """``current``, ``at N`` (an older snapshot), ``not watching`` or ``zeroconf only``."""
    if not entry.get("watching"):
        return "zeroconf only" if entry.get("source") == "zeroconf" else "not watching"
    return "current" if entry.get("acked_version") == current else f"at {entry.get('acked_version')}"


def endpoint_health(
    entry: Mapping[str, Any], current: int, scrape_error: str | None, reachable: bool | None, now: float
) -> tuple[str, str]:
    """``(level, reason)``: level ``ok``, ``warn`` or ``fail``; ``reachable`` None when not scraped yet."""
    expiry = entry.get("cert_expiry")
    if expiry is not None and expiry <= now:
        return "fail", "certificate expired"
    if reachable is False:
        return "fail", f"admin server unreachable: {scrape_error}" if scrape_error else "admin server unreachable"
    sync = config_sync(entry, current)
    if sync not in ("current", "zeroconf only"):
        return "warn", f"config {sync} (controller at {current})"
    if expiry is not None and expiry - now < CERT_WARN_SECONDS:
        return "warn", f"certificate expires in {time_left(expiry - now)}"
    return "ok", "serving" if reachable else "registered"


def endpoint_rows(
    status: Mapping[str, Any], stats: Mapping[str, Any] | None, now: float
) -> dict[str, list[dict[str, Any]]]:
    """Service → its endpoints (by address), each with sync, certificate time left and health."""
    current = int((status.get("controller") or {}).get("state_version") or 0)
    scraped: dict[str, dict[str, Any]] = {p.get("instance", ""): p for p in (stats or {}).get("proxies") or []}
    services: dict[str, list[dict[str, Any]]] = {}
    for service, entries in sorted((status.get("services") or {}).items()):
        rows = []
        for entry in entries:
            proxy = scraped.get(str(entry.get("instance", "")))
            reachable = None if proxy is None else bool(proxy.get("reachable"))
            level, reason = endpoint_health(entry, current, proxy.get("error") if proxy else None, reachable, now)
            expiry = entry.get("cert_expiry")
            rows.append(
                {
                    "address": entry.get("address"),
                    "instance": entry.get("instance"),
                    "identity": entry.get("identity"),
                    "labels": dict(entry.get("labels") or {}),
                    "version": (entry.get("labels") or {}).get("version"),
                    "source": entry.get("source"),
                    "mesh_version": entry.get("mesh_version"),
                    "protocol": entry.get("protocol"),
                    "cert_expiry": expiry,
                    "cert_left": time_left(expiry - now) if expiry else None,
                    "config": config_sync(entry, current),
                    "health": level,
                    "reason": reason,
                }
            )
        services[service] = sorted(rows, key=lambda r: (r["version"] or "", str(r["address"])))
    return services
