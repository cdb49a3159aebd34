"""Per-request load balancing: power of two choices over peak-EWMA latency.

Pure decision code (no I/O): the proxy reports when a request starts and ends,
and asks which endpoint to use. Like Linkerd and Finagle, cost is the
peak-sensitive moving average of latency times (outstanding requests + 1), so a
slow or overloaded endpoint is avoided quickly and forgiven slowly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

DECAY_SECONDS = 10.0
# An endpoint we have not measured yet gets this latency estimate: cheap enough
# to be tried, not so cheap that new endpoints take all the traffic.
DEFAULT_RTT_MS = 5.0


class HasAddress(Protocol):
    @property
    def address(self) -> str: ...


E = TypeVar("E", bound=HasAddress)


class EndpointLoad:
    __slots__ = ("ewma_ms", "pending", "stamp")

    def __init__(self, now: float) -> None:
        self.ewma_ms = DEFAULT_RTT_MS
        self.pending = 0
        self.stamp = now

    def cost(self, now: float) -> float:
        ewma = self._decayed(now)
        return ewma * (self.pending + 1)

    def _decayed(self, now: float) -> float:
        # With nothing observed the estimate decays toward zero (as in Finagle and tower), so an
        # endpoint that lost once is tried again; drifting back to a fixed default instead could
        # leave it costlier than a fast peer forever, and never picked while calls come one by one.
        # Not while requests are in flight: silence from an endpoint that holds requests (hung,
        # or serving long streams) is no good news.
        if self.pending:
            return self.ewma_ms
        return self.ewma_ms * math.exp(-max(now - self.stamp, 0.0) / DECAY_SECONDS)

    def observe(self, rtt_ms: float, now: float) -> None:
        if rtt_ms > self.ewma_ms:
            self.ewma_ms = rtt_ms  # peak: react at once to slowness
        else:
            weight = math.exp(-max(now - self.stamp, 0.0) / DECAY_SECONDS)
            self.ewma_ms = self.ewma_ms * weight + rtt_ms * (1 - weight)
        self.stamp = now

    def __repr__(self) -> str:
        return f"<EndpointLoad ewma={self.ewma_ms:.2f}ms pending={self.pending}>"


class Balancer:
    """Chooses endpoints; keeps one ``EndpointLoad`` per address it has seen."""

    def __init__(
        self,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._loads: dict[str, EndpointLoad] = {}
        self._rng = rng or random.Random()
        self._clock = clock

    def load(self, address: str) -> EndpointLoad:
        load = self._loads.get(address)
        if load is None:
            load = self._loads[address] = EndpointLoad(self._clock())
        return load

    def choose(self, endpoints: Sequence[E]) -> E:
        """Pick one of ``endpoints`` (which must not be empty)."""
        count = len(endpoints)
        if count == 1:
            return endpoints[0]
        i = self._rng.randrange(count)
        j = self._rng.randrange(count - 1)
        if j >= i:
            j += 1
        a, b = endpoints[i], endpoints[j]
        now = self._clock()
        return a if self.load(a.address).cost(now) <= self.load(b.address).cost(now) else b

    def start(self, address: str) -> float:
        self.load(address).pending += 1
        return self._clock()

    def finish(self, address: str, started: float, success: bool = True) -> None:
        load = self.load(address)
        load.pending = max(load.pending - 1, 0)
        now = self._clock()
        rtt_ms = (now - started) * 1000.0
        # Latency only, as in Linkerd: failures are the outlier detector's business
        # (consecutive failures eject an endpoint), so a failing endpoint is not
        # half-hidden here where ejection would never see enough of it.
        load.observe(rtt_ms, now)

    def abandon(self, address: str) -> None:
        """A request given up without an answer to time (connect failure, retried elsewhere)."""
        load = self.load(address)
        load.pending = max(load.pending - 1, 0)

    def forget(self, keep: set[str]) -> None:
        for address in list(self._loads):
            if address not in keep:
                del self._loads[address]

    def __repr__(self) -> str:
        return f"<Balancer endpoints={len(self._loads)}>"
