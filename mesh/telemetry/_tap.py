"""Tap: live request events, published by the proxy, read by whoever listens.

Pure and synchronous (no trio): the proxy publishes from its request loop, the
admin server's ``/tap`` handler drains a ``Subscription`` from its own task.

Cost model. Nobody listening: ``TapHub.active`` is False, the proxy checks that
one attribute per request and builds no event (``if hub.active: hub.publish(...)``).
Somebody listening: one filter check per subscription and, for a matching event,
an append to that subscription's bounded queue. A listener that does not keep up
never slows the proxy: once its queue holds ``max_queue`` events, new ones are
dropped and counted (``Subscription.dropped``, the ``on_drop`` hook that feeds
``tap_dropped_events_total``), and the listener is told how many it missed.
``max_rps`` samples events per listener with a token bucket (events over the
rate are skipped, not counted as drops: the listener asked for them to be).

Wire format (one JSON object per NDJSON line): ``TapEvent.to_dict()`` with
``"type": "request"``, and ``{"type": "dropped", "count": N, "total": M}``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from mesh.telemetry._classify import classify

DIRECTIONS = ("inbound", "outbound")
DEFAULT_MAX_QUEUE = 1000


@dataclass(slots=True)
class TapEvent:
    """One request as one proxy saw it (a meshed call is seen twice: outbound, then inbound).

    Treat it as immutable: one event goes to every listener. (Not ``frozen``:
    a frozen dataclass is several times slower to build, and the proxy builds
    one per request while anyone taps.)
    """

    timestamp: float  # Unix time at request start
    proxy: str  # the service of the proxy that reports it
    direction: str  # "inbound" | "outbound"
    request_id: str | None
    src_service: str | None
    src_identity: str | None  # inbound: the caller's verified SPIFFE id; outbound: this proxy's own
    dst_service: str | None  # None for egress (see authority and dst_address)
    dst_identity: str | None  # the SPIFFE id the destination proved (None: egress, or not routed)
    dst_address: str | None  # outbound: the chosen endpoint; inbound: the app
    method: str
    authority: str
    path: str
    status: int  # 0 when no response was made
    latency_ms: float
    mesh_error: str | None  # the x-mesh-error reason when the mesh answered itself
    tls: bool  # the hop between proxies was mTLS (egress: False)
    grpc_status: int | None = None
    response_bytes: int | None = None
    src_address: str | None = None  # at a gateway: the outside client (X-Forwarded-For's, from a trusted peer)

    @property
    def success(self) -> bool:
        """Linkerd's classification: no mesh error, a response, and not a 5xx (a client-reset
        is not the service's failure)."""
        return classify(self.status, self.mesh_error, self.grpc_status) == "success"

    def to_dict(self, query_values: bool = False) -> dict[str, Any]:
        """The wire form; query-string values redacted unless ``query_values`` (see ``redact_query``)."""
        data = asdict(self)
        data["latency_ms"] = round(self.latency_ms, 3)
        data["timestamp"] = round(self.timestamp, 6)
        if not query_values:
            data["path"] = redact_query(self.path)
        return {"type": "request", **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TapEvent:
        """The inverse of ``to_dict``; unknown keys are ignored, missing optional ones are None."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = data[f.name]
        values.setdefault("timestamp", 0.0)
        values.setdefault("proxy", "")
        values.setdefault("direction", "")
        values.setdefault("method", "")
        values.setdefault("authority", "")
        values.setdefault("path", "")
        values.setdefault("status", 0)
        values.setdefault("latency_ms", 0.0)
        values.setdefault("tls", False)
        for name in (
            "request_id",
            "src_service",
            "src_identity",
            "dst_service",
            "dst_identity",
            "dst_address",
            "mesh_error",
        ):
            values.setdefault(name, None)
        return cls(**values)


REDACTED = "REDACTED"
# `show_query=1` on /tap: query-string values as they were (they may hold tokens, e-mail
# addresses, session ids); only mTLS callers (the controller, operators) may ask.
SHOW_QUERY = "show_query"


def redact_query(path: str) -> str:
    """``/search?q=cats&token=abc&flag`` → ``/search?q=REDACTED&token=REDACTED&flag``: which keys
    were sent stays visible, what they carried does not (as with secret headers)."""
    head, mark, query = path.partition("?")
    if not mark:
        return path
    pairs = [
        f"{key}={REDACTED}" if sep and value else f"{key}{sep}"
        for key, sep, value in (item.partition("=") for item in query.split("&"))
    ]
    return f"{head}?{'&'.join(pairs)}"


def query_values_asked(query: Mapping[str, str]) -> bool:
    """Whether a tap request says ``show_query=1`` (``0``/absent: no); ValueError otherwise."""
    value = query.get(SHOW_QUERY) or "0"
    if value not in ("0", "1"):
        raise ValueError(f"{SHOW_QUERY} must be 1 or 0, not {value!r}")
    return value == "1"


@dataclass(frozen=True, slots=True)
class TapFilter:
    """Which events a listener wants; every field that is set must match."""

    service: str | None = None  # the source or the destination service
    direction: str | None = None
    path_prefix: str | None = None
    method: str | None = None  # upper case
    authority: str | None = None  # lower case; "web" also matches "web:80"

    def matches(self, event: TapEvent) -> bool:
        if self.service is not None and self.service not in (event.src_service, event.dst_service):
            return False
        if self.direction is not None and event.direction != self.direction:
            return False
        if self.path_prefix is not None and not event.path.startswith(self.path_prefix):
            return False
        if self.method is not None and event.method.upper() != self.method:
            return False
        if self.authority is not None:
            authority = event.authority.lower()
            if authority != self.authority and authority.rsplit(":", 1)[0] != self.authority:
                return False
        return True

    def to_query(self) -> dict[str, str]:
        """Query parameters that ``from_query`` reads back (the names of the /tap API)."""
        query = {
            "service": self.service,
            "direction": self.direction,
            "path": self.path_prefix,
            "method": self.method,
            "authority": self.authority,
        }
        return {k: v for k, v in query.items() if v is not None}

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> tuple[TapFilter, float | None]:
        """``(filter, max_rps)`` from ``service, direction, path, method, authority, max_rps``.

        Raises ValueError saying which parameter is wrong.
        """
        known = {"service", "direction", "path", "method", "authority", "max_rps", SHOW_QUERY}
        unknown = sorted(set(query) - known)
        if unknown:
            raise ValueError(f"unknown tap parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")

        def value(name: str) -> str | None:
            text = query.get(name)
            return text if text else None

        direction = value("direction")
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"direction must be inbound or outbound, not {direction!r}")
        path = value("path")
        if path is not None and not path.startswith("/"):
            raise ValueError(f"path must start with '/', not {path!r}")
        max_rps: float | None = None
        rps_text = value("max_rps")
        if rps_text is not None:
            try:
                max_rps = float(rps_text)
            except ValueError:
                raise ValueError(f"max_rps must be a number, not {rps_text!r}") from None
            if not max_rps > 0 or max_rps != max_rps or max_rps == float("inf"):
                raise ValueError(f"max_rps must be a positive number, not {rps_text!r}")
        method = value("method")
        authority = value("authority")
        return (
            cls(
                service=value("service"),
                direction=direction,
                path_prefix=path,
                method=method.upper() if method else None,
                authority=authority.lower() if authority else None,
            ),
            max_rps,
        )


class Subscription:
    """One listener: a filter, a bounded queue, a drop count, an optional rate limit."""

    __slots__ = (
        "filter",
        "max_queue",
        "max_rps",
        "queue",
        "dropped",
        "rate_limited",
        "_unreported",
        "_notify",
        "_tokens",
        "_refilled",
        "_clock",
        "_on_drop",
    )

    def __init__(
        self,
        filter: TapFilter,
        max_queue: int,
        max_rps: float | None,
        clock: Callable[[], float],
        on_drop: Callable[[int], None] | None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if max_rps is not None and not max_rps > 0:
            raise ValueError("max_rps must be positive")
        self.filter = filter
        self.max_queue = max_queue
        self.max_rps = max_rps
        self.queue: deque[TapEvent] = deque()
        self.dropped = 0  # events lost because the queue was full, in all
        self.rate_limited = 0  # events skipped by max_rps
        self._unreported = 0  # drops the listener has not been told about
        self._notify: Callable[[], None] | None = None
        self._clock = clock
        self._on_drop = on_drop
        # Token bucket: up to one second's worth of events in a burst.
        self._tokens = max(1.0, max_rps) if max_rps else 0.0
        self._refilled = clock()

    def set_notify(self, notify: Callable[[], None] | None) -> None:
        """``notify()`` is called when an event lands in an empty queue (wake the reader)."""
        self._notify = notify

    def offer(self, event: TapEvent) -> None:
        if not self.filter.matches(event):
            return
        if self.max_rps is not None and not self._take_token():
            self.rate_limited += 1
            return
        queue = self.queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            self._unreported += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return
        queue.append(event)
        if len(queue) == 1 and self._notify is not None:
            self._notify()

    def _take_token(self) -> bool:
        assert self.max_rps is not None
        now = self._clock()
        burst = max(1.0, self.max_rps)
        self._tokens = min(burst, self._tokens + (now - self._refilled) * self.max_rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def take(self, limit: int | None = None) -> list[TapEvent]:
        """Remove and return the queued events (at most ``limit``)."""
        queue = self.queue
        if limit is None or limit >= len(queue):
            events = list(queue)
            queue.clear()
            return events
        return [queue.popleft() for _ in range(limit)]

    def take_dropped(self) -> int:
        """Drops since the last call: what to tell the listener now."""
        count, self._unreported = self._unreported, 0
        return count

    @property
    def pending(self) -> bool:
        return bool(self.queue) or self._unreported > 0


class TapHub:
    """Where the proxy publishes tap events; ``active`` is True while anyone listens."""

    __slots__ = ("active", "_subscriptions", "_on_drop", "_clock")

    def __init__(
        self,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.active = False
        self._subscriptions: tuple[Subscription, ...] = ()
        self._on_drop = on_drop
        self._clock = clock

    @property
    def listeners(self) -> int:
        return len(self._subscriptions)

    def subscribe(
        self,
        filter: TapFilter | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_rps: float | None = None,
    ) -> Subscription:
        subscription = Subscription(filter or TapFilter(), max_queue, max_rps, self._clock, self._on_drop)
        self._subscriptions = (*self._subscriptions, subscription)
        self.active = True
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
        self.active = bool(self._subscriptions)
        subscription.set_notify(None)

    def publish(self, event: TapEvent) -> None:
        if not self.active:
            return
        for subscription in self._subscriptions:
            subscription.offer(event)
