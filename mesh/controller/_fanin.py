"""Telemetry fan-in: the controller reads every proxy's admin pages for the CLI.

    GET /v1/tap    → ``TapFanIn``: ``/tap`` opened on every known proxy, merged into one stream
    GET /v1/stats  → ``StatsCollector``: ``/metrics`` scraped from every proxy, aggregated

Proxies come from the controller's registry: every endpoint, dialled at the
address it registered (its inbound listener) over mTLS with ALPN
``mesh-admin``. The proxy answers the admin pages there only to the
controller's identity and to operators, and the controller checks that the
proxy is who the registry says; the plain admin servers stay on loopback
(docs/security.md, "The trust boundary on one host"). After the handshake it
is HTTP/1.1, so the client here is a few lines of trio streams around the
proxy's own sans-IO ``ResponseReader``.

Background work. The API server calls a handler per request and iterates what
it returns in the same task, so a handler has no nursery that outlives it. Both
the tap fan-in (one reader per proxy, running while the CLI listens) and the
stats sampler (a scrape every ``SAMPLE_PERIOD`` seconds, started by the first
stats request, stopped after ``SAMPLER_IDLE_STOP`` seconds without one) run as
trio system tasks, guarded so that no error can escape into the controller.

Rates over a window. Counters are cumulative, so a rate needs an earlier value.
The sampler keeps a ring of snapshots per proxy (``SAMPLE_PERIOD`` apart, up to
``MAX_WINDOW``); a stats request scrapes afresh and compares with the baseline
closest to ``now - window``. A proxy's start (``process_start_time_seconds``,
when every counter was zero) is a baseline too, so the very first request
already has one: for a young proxy it is exact, for an old one the numbers
cover its whole life, and ``window_seconds`` in the answer says so.

The modules: the proxies and the admin client (``_fanin_admin.py``), the tap
fan-in (``_fanin_tap.py``), snapshots and aggregation, pure (``_fanin_stats.py``),
and here the stats collector and its sampler.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from mesh.controller._fanin_admin import (
    SCRAPE_TIMEOUT,
    AdminDialer,
    AdminUnreachable,
    ProxyTarget,
    _spawn_guarded,
    admin_get,
)
from mesh.controller._fanin_stats import MIN_SPAN, ProxySnapshot, aggregate, choose_baseline
from mesh.telemetry import parse_prometheus_text

log = logging.getLogger("mesh.controller.fanin")

SAMPLE_PERIOD = 5.0
SAMPLER_IDLE_STOP = 900.0
MAX_WINDOW = 3600.0


# ------------------------------------------------------------------ stats collector


class StatsCollector:
    """Scrapes every proxy on demand, and every ``SAMPLE_PERIOD`` in the background once asked."""

    def __init__(
        self,
        targets: Callable[[], list[ProxyTarget]],
        trust_domain: str,
        dialer: AdminDialer,
        clock: Callable[[], float] = time.time,
        period: float = SAMPLE_PERIOD,
    ) -> None:
        self._targets = targets
        self._dialer = dialer
        self._trust_domain = trust_domain
        self._clock = clock
        self._period = period
        self._history: dict[Any, deque[ProxySnapshot]] = {}
        self._sampler_running = False
        self._last_asked = 0.0

    async def stats(self, window: float) -> dict[str, Any]:
        self._last_asked = self._clock()
        self._start_sampler()
        targets = self._targets()
        scrapes = await self.scrape(targets)
        baselines: dict[Any, ProxySnapshot | None] = {}
        for key, scrape in scrapes.items():
            if isinstance(scrape, ProxySnapshot):
                history = [s for s in self._history.get(key, ()) if s is not scrape]
                baselines[key] = choose_baseline(history, scrape, window)
        return aggregate(targets, scrapes, baselines, window, self._trust_domain, self._clock())

    async def scrape(self, targets: list[ProxyTarget]) -> dict[Any, ProxySnapshot | str]:
        """Every target's /metrics, concurrently, each under SCRAPE_TIMEOUT; kept in the history."""
        results: dict[Any, ProxySnapshot | str] = {}

        async def one(target: ProxyTarget) -> None:
            try:
                status, body = await admin_get(self._dialer, target, "/metrics", SCRAPE_TIMEOUT)
                if status != 200:
                    raise AdminUnreachable(f"{target.address}: /metrics answered {status}")
                samples = parse_prometheus_text(body.decode("utf-8", "replace"))
            except AdminUnreachable as exc:
                results[target.key] = str(exc)
                return
            except ValueError as exc:
                results[target.key] = f"{target.address}: unreadable metrics: {exc}"
                return
            results[target.key] = self._remember(target.key, ProxySnapshot.from_samples(samples, self._clock()))

        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(one, target)
        self._forget_gone({t.key for t in targets})
        return results

    def _remember(self, key: Any, snapshot: ProxySnapshot) -> ProxySnapshot:
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque(maxlen=int(MAX_WINDOW / self._period) + 2)
        if history and history[-1].start_time != snapshot.start_time:
            history.clear()  # a new process: its counters started again
        if history and snapshot.at - history[-1].at < self._period / 2:
            history.pop()  # keep the ring about one period apart
        history.append(snapshot)
        return snapshot

    def _forget_gone(self, present: set[Any]) -> None:
        now = self._clock()
        for key in [k for k, h in self._history.items() if k not in present]:
            history = self._history[key]
            if not history or now - history[-1].at > MAX_WINDOW:
                del self._history[key]

    def _start_sampler(self) -> None:
        if self._sampler_running:
            return
        self._sampler_running = True
        _spawn_guarded(self._sample, "stats sampler")

    async def _sample(self) -> None:
        try:
            while self._clock() - self._last_asked < SAMPLER_IDLE_STOP:
                await trio.sleep(self._period)
                with trio.move_on_after(self._period * 2):
                    await self.scrape(self._targets())
            log.info("stats sampler stopped: no stats asked for in %gs", SAMPLER_IDLE_STOP)
        finally:
            self._sampler_running = False


def parse_window(text: str | None, default: float = 60.0) -> float:
    """``window`` in seconds (a number, or a duration like ``1m``); ValueError when out of range."""
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        from mesh.config import parse_duration

        value = parse_duration(text)
    if not MIN_SPAN <= value <= MAX_WINDOW or math.isnan(value):
        raise ValueError(f"window must be from {MIN_SPAN:g}s to {MAX_WINDOW:g}s, not {text!r}")
    return value
