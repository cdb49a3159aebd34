"""`mesh top`: tap events aggregated into rows, the way `linkerd viz top` shows them (pure).

A row is one (source, destination, method, path) with its count, best, worst
and last latency, and success rate; rows are sorted by count. The path is
taken without its query string, so `/items?id=1` and `/items?id=2` are one row.

A call between two meshed services is seen twice, by the caller's proxy
(outbound) and by the callee's (inbound), with the same `x-request-id`. The
model counts each (request id, row) once: the first report wins. Events
without a request id are always counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.telemetry import TapEvent

RowKey = tuple[str, str, str, str]
DEDUPE_MEMORY = 10_000  # request ids remembered to drop a call's second report


@dataclass(slots=True)
class TopRow:
    source: str
    destination: str
    method: str
    path: str
    count: int = 0
    successes: int = 0
    best_ms: float = float("inf")
    worst_ms: float = 0.0
    last_ms: float = 0.0
    last_seen: float = 0.0

    @property
    def key(self) -> RowKey:
        return (self.source, self.destination, self.method, self.path)

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "method": self.method,
            "path": self.path,
            "count": self.count,
            "best_ms": round(self.best_ms, 3) if self.count else None,
            "worst_ms": round(self.worst_ms, 3) if self.count else None,
            "last_ms": round(self.last_ms, 3) if self.count else None,
            "success_rate": self.success_rate,
        }


def event_source(event: TapEvent) -> str:
    return event.src_service or "-"


def event_destination(event: TapEvent) -> str:
    """The destination service; for egress, the host the app asked for."""
    if event.dst_service:
        return event.dst_service
    return event.authority or event.dst_address or "-"


def row_key(event: TapEvent) -> RowKey:
    path = event.path.split("?", 1)[0] or "/"
    return (event_source(event), event_destination(event), event.method or "-", path)


class TopModel:
    """Feed it events (``TapEvent`` or their dicts); read ``rows()``."""

    def __init__(self, dedupe_memory: int = DEDUPE_MEMORY) -> None:
        self._rows: dict[RowKey, TopRow] = {}
        self._seen: OrderedDict[tuple[str, RowKey], None] = OrderedDict()
        self._memory = dedupe_memory
        self.events = 0  # requests counted
        self.duplicates = 0  # second reports of a call, not counted
        self.dropped = 0  # events the proxies could not deliver (slow listener)

    def add(self, event: TapEvent | Mapping[str, Any]) -> bool:
        """Count one request; returns False if it was a second report of a counted call."""
        if not isinstance(event, TapEvent):
            event = TapEvent.from_dict(event)
        key = row_key(event)
        if event.request_id:
            seen_key = (event.request_id, key)
            if seen_key in self._seen:
                self.duplicates += 1
                return False
            self._seen[seen_key] = None
            if len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = TopRow(*key)
        latency = event.latency_ms
        row.count += 1
        row.successes += event.success
        row.best_ms = min(row.best_ms, latency)
        row.worst_ms = max(row.worst_ms, latency)
        row.last_ms = latency
        row.last_seen = event.timestamp
        self.events += 1
        return True

    def add_all(self, events: Iterable[TapEvent | Mapping[str, Any]]) -> None:
        for event in events:
            self.add(event)

    def note_dropped(self, count: int) -> None:
        self.dropped += count

    def rows(self, limit: int | None = None) -> list[TopRow]:
        """Most requests first; ties by most recent, then by name (a stable table)."""
        rows = sorted(self._rows.values(), key=lambda r: (-r.count, -r.last_seen, r.key))
        return rows if limit is None else rows[:limit]
