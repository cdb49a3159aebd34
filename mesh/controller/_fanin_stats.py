"""Telemetry fan-in, pure: what a scrape of /metrics says, and the ``/v1/stats`` answer.

``_fanin.py`` ("Rates over a window") says how baselines are chosen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mesh.controller._fanin_admin import ProxyTarget
from mesh.telemetry import Sample, histogram_quantile

MIN_SPAN = 1.0  # a baseline this close to now says nothing about a rate
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


# ------------------------------------------------------------------ snapshots (pure)


@dataclass(slots=True)
class Traffic:
    """Cumulative counts of one (direction, peer service) at one proxy."""

    requests: float = 0.0
    successes: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le → cumulative count

    def add(self, other: Traffic) -> None:
        self.requests += other.requests
        self.successes += other.successes
        for le, count in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + count

    def minus(self, earlier: Traffic | None) -> Traffic | None:
        """The counts since ``earlier``; None when a counter went down (the proxy restarted)."""
        if earlier is None:
            return Traffic(self.requests, self.successes, dict(self.buckets))
        delta = Traffic(self.requests - earlier.requests, self.successes - earlier.successes)
        for le, count in self.buckets.items():
            delta.buckets[le] = count - earlier.buckets.get(le, 0.0)
        if delta.requests < 0 or delta.successes < 0 or any(v < 0 for v in delta.buckets.values()):
            return None
        return delta


@dataclass(slots=True)
class ProxySnapshot:
    """What one scrape of a proxy's /metrics says, reduced to what stats need."""

    at: float  # Unix time of the scrape (or of the proxy's start, for the zero baseline)
    start_time: float | None
    traffic: dict[tuple[str, str], Traffic] = field(default_factory=dict)  # (direction, peer service)
    tcp_open: dict[str, float] = field(default_factory=dict)  # direction → open connections

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], at: float) -> ProxySnapshot:
        snapshot = cls(at, None)
        traffic = snapshot.traffic
        for sample in samples:
            name = sample.name
            if name == "response_total":
                labels = sample.labels_dict
                key = (labels.get("direction", ""), labels.get("peer_service", ""))
                entry = traffic.setdefault(key, Traffic())
                entry.requests += sample.value
                if labels.get("classification") == "success":
                    entry.successes += sample.value
            elif name == "response_latency_ms_bucket":
                labels = sample.labels_dict
                key = (labels.get("direction", ""), labels.get("peer_service", ""))
                try:
                    le = float(labels.get("le", "+Inf"))
                except ValueError:
                    continue
                buckets = traffic.setdefault(key, Traffic()).buckets
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif name == "tcp_open_connections":
                direction = sample.label("direction") or ""
                snapshot.tcp_open[direction] = snapshot.tcp_open.get(direction, 0.0) + sample.value
            elif name == "process_start_time_seconds":
                snapshot.start_time = sample.value
        return snapshot

    @classmethod
    def zero(cls, start_time: float) -> ProxySnapshot:
        return cls(start_time, start_time)

    def since(self, baseline: ProxySnapshot) -> dict[tuple[str, str], Traffic]:
        """Traffic between ``baseline`` and this snapshot (all of it if a counter was reset)."""
        deltas: dict[tuple[str, str], Traffic] = {}
        for key, traffic in self.traffic.items():
            delta = traffic.minus(baseline.traffic.get(key))
            if delta is None:
                return {k: Traffic(t.requests, t.successes, dict(t.buckets)) for k, t in self.traffic.items()}
            deltas[key] = delta
        return deltas


def choose_baseline(history: Iterable[ProxySnapshot], current: ProxySnapshot, window: float) -> ProxySnapshot | None:
    """The earlier snapshot that best spans ``window`` up to ``current``.

    Candidates are the kept snapshots of the same process (same start time)
    at least ``MIN_SPAN`` older than ``current``, and the process start itself
    (all counters zero). The one closest to ``current.at - window`` wins.
    None when nothing qualifies (no start time, no history).
    """
    target = current.at - window
    candidates = [s for s in history if s.at <= current.at - MIN_SPAN and s.start_time == current.start_time]
    if current.start_time is not None and current.start_time <= current.at - MIN_SPAN:
        candidates.append(ProxySnapshot.zero(current.start_time))
    if not candidates:
        return None
    return min(candidates, key=lambda s: (abs(s.at - target), -s.at))


# ------------------------------------------------------------------ aggregation (pure)


@dataclass(slots=True)
class _Group:
    instances: int = 0
    reachable: int = 0
    traffic: Traffic = field(default_factory=Traffic)
    rps: float = 0.0
    tcp: float = 0.0
    span: float | None = None

    def add_instance(self, delta: Traffic | None, span: float | None, tcp: float) -> None:
        self.instances += 1
        if delta is None:
            return
        self.reachable += 1
        self.traffic.add(delta)
        if span:
            self.rps += delta.requests / span
            self.span = max(self.span or 0.0, span)
        self.tcp += tcp

    def to_dict(self) -> dict[str, Any]:
        t = self.traffic
        return {
            "instances": self.instances,
            "reachable": self.reachable,
            "requests": _int(t.requests) if self.reachable else None,
            "successes": _int(t.successes) if self.reachable else None,
            "failures": _int(t.requests - t.successes) if self.reachable else None,
            "success_rate": (t.successes / t.requests) if t.requests > 0 else None,
            "rps": round(self.rps, 3) if self.reachable else None,
            "latency_ms": _quantiles(t.buckets),
            "tcp_connections": _int(self.tcp) if self.reachable else None,
            "window_seconds": round(self.span, 1) if self.span is not None else None,
        }


def _int(value: float) -> int:
    return int(round(value))


def _quantiles(buckets: Mapping[float, float]) -> dict[str, float | None]:
    pairs = sorted(buckets.items())
    result: dict[str, float | None] = {}
    for name, q in QUANTILES:
        value = histogram_quantile(q, pairs) if pairs else None
        result[name] = round(value, 3) if value is not None and math.isfinite(value) else None
    return result


def aggregate(
    targets: list[ProxyTarget],
    scrapes: Mapping[Any, ProxySnapshot | str],
    baselines: Mapping[Any, ProxySnapshot | None],
    window: float,
    trust_domain: str,
    now: float,
) -> dict[str, Any]:
    """The ``/v1/stats`` answer, from each target's scrape (or why it failed) and baseline.

    Services and versions count inbound traffic: what the service's own
    proxies served (Linkerd's view of a workload). Edges come from both ends:
    a source's outbound metrics and a destination's inbound ones (the latter
    only exist for calls that arrived over mTLS with a verified identity).
    """
    services: dict[str, _Group] = {}
    versions: dict[tuple[str, str], _Group] = {}
    identities: dict[str, set[str]] = {}
    proxies: list[dict[str, Any]] = []
    unreachable: list[dict[str, Any]] = []
    edges: dict[tuple[str, str], dict[str, Any]] = {}

    for target in targets:
        identities.setdefault(target.service, set()).add(target.identity)
        scrape = scrapes.get(target.key)
        entry = {**target.describe(), "identity": target.identity, "labels": dict(target.labels)}
        if not isinstance(scrape, ProxySnapshot):
            error = scrape if isinstance(scrape, str) else "not scraped"
            unreachable.append({**target.describe(), "error": error})
            proxies.append({**entry, "reachable": False, "error": error, "window_seconds": None})
            services.setdefault(target.service, _Group()).add_instance(None, None, 0.0)
            if target.version is not None:
                versions.setdefault((target.service, target.version), _Group()).add_instance(None, None, 0.0)
            continue
        baseline = baselines.get(target.key)
        if baseline is not None:
            deltas, span = scrape.since(baseline), scrape.at - baseline.at
        else:  # no start time and no history: treat the whole life as the window
            deltas, span = scrape.since(ProxySnapshot(scrape.at - window, None)), window
        proxies.append({**entry, "reachable": True, "error": None, "window_seconds": round(span, 1)})
        inbound = Traffic()
        for (direction, _peer), delta in deltas.items():
            if direction == "inbound":
                inbound.add(delta)
        tcp = scrape.tcp_open.get("inbound", 0.0)
        services.setdefault(target.service, _Group()).add_instance(inbound, span, tcp)
        if target.version is not None:
            versions.setdefault((target.service, target.version), _Group()).add_instance(inbound, span, tcp)
        for (direction, peer), total in scrape.traffic.items():
            if not peer or direction not in ("inbound", "outbound"):
                continue
            if direction == "outbound":
                key, side = (target.service, peer), "source"
            else:
                key, side = (peer, target.service), "destination"
            edge = edges.setdefault(key, {"source": None, "destination": None})
            delta = deltas.get((direction, peer)) or Traffic()
            seen = edge[side] or {"total": 0.0, "rps": 0.0, "window": Traffic()}
            seen["total"] += total.requests
            seen["window"].add(delta)
            seen["rps"] += delta.requests / span if span else 0.0
            edge[side] = seen

    def default_identity(service: str) -> list[str]:
        return sorted(identities.get(service) or {f"spiffe://{trust_domain}/svc/{service}"})

    edge_list = []
    for (src, dst), sides in sorted(edges.items()):
        # The source's view counts calls that never reached the destination (connect failures).
        counts = sides["source"] or sides["destination"]
        in_window: Traffic = counts["window"]
        egress = dst == "egress"
        edge_list.append(
            {
                "src": src,
                "dst": dst,
                "src_identities": default_identity(src),
                "dst_identities": [] if egress else default_identity(dst),
                # Proxies dial mesh services only over mTLS (identity checked), and
                # a destination only counts calls that arrived that way.
                "mtls": not egress,
                "seen_by": [side for side in ("source", "destination") if sides[side]],
                "total_requests": _int(counts["total"]),
                "requests": _int(in_window.requests),
                "success_rate": (in_window.successes / in_window.requests) if in_window.requests else None,
                "rps": round(counts["rps"], 3),
                # The source's view when there is one: its latency includes the hop between proxies.
                "latency_ms": _quantiles(in_window.buckets),
            }
        )
    return {
        "window_seconds": window,
        "time": round(now, 3),
        "services": [{"service": name, "version": None, **g.to_dict()} for name, g in sorted(services.items())],
        "versions": [
            {"service": name, "version": version, **g.to_dict()} for (name, version), g in sorted(versions.items())
        ],
        "edges": edge_list,
        "proxies": proxies,
        "unreachable": unreachable,
    }
