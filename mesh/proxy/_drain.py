"""Graceful shutdown, and the deadlines of waits, shared by every connection of a proxy.

An HTTP/1 connection waits twice per request (for the response head, then for
the next request) and each wait has a deadline. A trio cancel scope per wait
cost ~9 µs (two per request: a third of the HTTP/1 loop's Python time, measured
in-process; docs/performance.md). So a connection keeps one cancel scope for as
long as no deadline passes, and states each wait's deadline as a float on its
``Deadline``; one watchdog task per proxy sleeps until the earliest deadline
that may have passed and cancels that connection's scope. Arming a deadline is
two attribute stores; the watchdog wakes about once per connection per
shortest timeout, not per request.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math

import trio

log = logging.getLogger("mesh.proxy")

INF = math.inf


class Wait(enum.Enum):
    """What a connection is waiting for while its deadline runs."""

    IDLE = "idle"  # the next request (cut at once by a drain)
    HEAD = "head"  # the rest of a request head
    RESPONSE = "response"  # the response head from upstream


class Deadline:
    """One connection's deadline: ``arm`` before a wait, ``disarm`` after it. When it passes,
    the watchdog records ``fired`` (what was being waited for) and cancels ``scope``."""

    __slots__ = ("at", "wait", "scope", "fired", "_queued", "_watchdog")

    def __init__(self, watchdog: _Watchdog) -> None:
        self.at = INF
        self.wait: Wait | None = None
        self.scope: trio.CancelScope | None = None  # set by the connection, one per run of requests
        self.fired: Wait | None = None
        self._queued = INF  # the earliest time this deadline is in the watchdog's heap for
        self._watchdog = watchdog

    def arm(self, at: float, wait: Wait) -> None:
        self.at = at
        self.wait = wait
        if at < self._queued:
            self._watchdog.push(self, at)

    def disarm(self) -> None:
        self.at = INF
        self.wait = None

    def fire(self) -> None:
        if self.scope is not None and self.fired is None:
            self.fired = self.wait
            self.scope.cancel()

    def __repr__(self) -> str:
        return f"<Deadline {self.wait.value if self.wait else 'none'} at={self.at:g}{' fired' if self.fired else ''}>"


class _Watchdog:
    """Sleeps until the earliest queued deadline; fires the ones that passed, re-queues the ones
    that moved later (a later deadline is only written down, never queued at once)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties never compare Deadlines
        self._wake_at = INF
        self._sleep: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None  # the run the task lives in

    def push(self, deadline: Deadline, at: float) -> None:
        deadline._queued = at
        heapq.heappush(self._heap, (at, next(self._order), deadline))
        if at < self._wake_at:
            self._wake_at = at
            if self._sleep is not None:
                self._sleep.deadline = at

    def ensure_running(self) -> None:
        token = trio.lowlevel.current_trio_token()
        if self._token is not token:  # first use, or a new trio run (tests)
            self._token = token
            self._heap.clear()
            self._wake_at = INF
            self._sleep = None
            trio.lowlevel.spawn_system_task(self._run, name="mesh.proxy deadlines")

    async def _run(self) -> None:
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=self._wake_at) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                queued_at, _, deadline = heapq.heappop(heap)
                if queued_at != deadline._queued:
                    continue  # superseded by an earlier entry for the same deadline
                deadline._queued = INF
                try:
                    if deadline.at <= now:
                        deadline.fire()
                    elif deadline.at < INF:
                        self.push(deadline, deadline.at)
                except Exception:  # noqa: BLE001 - a system task must never raise
                    log.exception("internal error in a connection deadline (the proxy keeps serving)")
            self._wake_at = heap[0][0] if heap else INF


class Drain:
    """Stop taking new requests, let the current ones end: idle waits are cut at once."""

    def __init__(self) -> None:
        self.draining = False
        self._idle_scopes: set[trio.CancelScope] = set()
        self._deadlines: set[Deadline] = set()
        self._watchdog = _Watchdog()

    def start(self) -> None:
        self.draining = True
        for scope in list(self._idle_scopes):
            scope.cancel()
        for deadline in list(self._deadlines):
            if deadline.wait is Wait.IDLE:
                deadline.fire()

    def deadline(self) -> Deadline:
        """A connection's ``Deadline``; ``release`` it when the connection ends."""
        self._watchdog.ensure_running()
        deadline = Deadline(self._watchdog)
        self._deadlines.add(deadline)
        return deadline

    def release(self, deadline: Deadline) -> None:
        deadline.disarm()
        deadline.scope = None
        self._deadlines.discard(deadline)

    def idle_scope(self, timeout: float) -> trio.CancelScope:
        scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        if self.draining:
            scope.cancel()
        self._idle_scopes.add(scope)
        return scope

    def done(self, scope: trio.CancelScope) -> None:
        self._idle_scopes.discard(scope)

    def __repr__(self) -> str:
        state = "draining" if self.draining else "serving"
        return f"<Drain {state} idle={len(self._idle_scopes)} connections={len(self._deadlines)}>"
