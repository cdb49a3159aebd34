"""The dashboard's data: the controller's answers, polled as the operator, turned into topics.

What is asked, and how often (``Periods``):

    GET /v1/status               2 s    status, faults (and the link topic: is the controller there)
    GET /v1/stats?window=60      5 s    stats: the tables and the graph, the last minute as `mesh stat`
    GET /v1/stats?window=10     10 s    history: one point per 10 s, each covering exactly those 10 s
    GET /v1/config, /v1/routes  10 s    routes and policies, with per-route metrics
    mesh check --proxy          60 s    check (in a worker thread: the checks block)

The tap is not polled: ``/api/tap`` opens the controller's ``/v1/tap`` only
while a page shows the tap view, so the proxies build no tap events otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import trio

from mesh.dashboard._model import (
    History,
    Topics,
    faults_topic,
    routed_services,
    routes_topic,
    stats_topic,
    status_topic,
)
from mesh.errors import MeshError

log = logging.getLogger("mesh.dashboard")

REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ControllerAccess:
    """How the dashboard reaches the controller as the operator; `mesh dashboard` hands it the CLI's own code."""

    connect: Callable[[], AbstractAsyncContextManager[Any]]  # enters a connected ApiClient
    body_of: Callable[[Any, str], Any]  # a 2xx answer's JSON body; raises MeshError otherwise
    open_tap: Callable[[Any, dict[str, str]], AbstractAsyncContextManager[AsyncIterator[Any]]]  # /v1/tap items
    run_check: Callable[[], dict[str, Any]]  # `mesh check --proxy` as JSON; blocks, so it runs in a thread


@dataclass(frozen=True, slots=True)
class Periods:
    status: float = 2.0
    stats: float = 5.0
    series: float = 10.0
    routes: float = 10.0
    check: float = 60.0
    stats_window: float = 60.0


class RefusedAnswer(MeshError):
    """The controller answered, with an error (the connection is fine)."""


class ControllerLink:
    """One operator connection to the controller, shared by every request and tap; reopened when it drops."""

    def __init__(self, access: ControllerAccess) -> None:
        self._access = access
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = trio.Lock()

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None or self._client.closed:
                await self._drop()
                stack = AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(self._access.connect())
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack = stack
            return self._client

    async def get(self, path: str, what: str) -> Any:
        client = await self.client()
        try:
            response = await client.request("GET", path, None, timeout=REQUEST_TIMEOUT)
        except MeshError:
            async with self._lock:
                await self._drop()
            raise
        try:
            return self._access.body_of(response, what)
        except MeshError as exc:
            raise RefusedAnswer(exc.message, hint=exc.hint) from None

    @asynccontextmanager
    async def tap(self, query: dict[str, str]) -> AsyncIterator[AsyncIterator[Any]]:
        client = await self.client()
        async with self._access.open_tap(client, query) as events:
            yield events

    async def _drop(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with trio.CancelScope(shield=True):
                try:
                    await stack.aclose()
                except (MeshError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


class Feed:
    """Keeps every topic fresh while the dashboard runs."""

    def __init__(
        self,
        link: ControllerLink,
        topics: Topics,
        run_check: Callable[[], dict[str, Any]],
        periods: Periods = Periods(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._controller = link
        self._topics = topics
        self._run_check = run_check
        self._periods = periods
        self._clock = clock
        self._history = History()
        self._stats: dict[str, Any] | None = None
        self._config: dict[str, Any] | None = None
        self._link: tuple[bool, str | None] = (False, "not connected yet")  # (answers, what is wrong)
        self._steps: dict[str, tuple[bool, str | None]] = {}

    async def run(self) -> None:
        p = self._periods
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._every, p.stats, self._poll_stats)
            nursery.start_soon(self._every, p.status, self._poll_status)
            nursery.start_soon(self._every, p.series, self._poll_series)
            nursery.start_soon(self._every, p.routes, self._poll_routes)
            nursery.start_soon(self._every, p.check, self._poll_check, False)

    async def _every(self, period: float, step: Callable[[], Awaitable[None]], asks_controller: bool = True) -> None:
        name = step.__name__
        while True:
            try:
                await step()
            except RefusedAnswer as exc:
                self._step_done(name, True, exc.message)
            except MeshError as exc:
                self._step_done(name, False, exc.message)
            except Exception as exc:  # noqa: BLE001 - an answer we did not expect: say so, keep serving
                log.warning(
                    "%s failed: %s: %s", name, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG)
                )
            else:
                if asks_controller:
                    self._step_done(name, True, None)
            await trio.sleep(period)

    def _step_done(self, step: str, connected: bool, problem: str | None) -> None:
        """The link topic says what every poll found last: one failing poll is not hidden by the others."""
        self._steps[step] = (connected, problem)
        link = (all(c for c, _ in self._steps.values()), next((p for _, p in self._steps.values() if p), None))
        if link == self._link:
            return
        if link[1] is None:
            log.info("the controller answers")
        else:
            log.warning("the controller %s: %s", "refused a request" if link[0] else "does not answer", link[1])
        self._link = link
        self._topics.publish("link", {"connected": link[0], "error": link[1], "since": self._clock()})

    async def _poll_status(self) -> None:
        status = await self._controller.get("/v1/status", "status")
        now = self._clock()
        self._topics.publish("status", status_topic(status, self._stats, now))
        self._topics.publish("faults", faults_topic(status, self._config, now))

    async def _poll_stats(self) -> None:
        self._stats = await self._controller.get(f"/v1/stats?window={self._periods.stats_window:g}", "stats")
        self._topics.publish("stats", stats_topic(self._stats))

    async def _poll_series(self) -> None:
        self._history.add(await self._controller.get(f"/v1/stats?window={self._periods.series:g}", "stats"))
        self._topics.publish("history", self._history.to_dict())

    async def _poll_routes(self) -> None:
        config = await self._controller.get("/v1/config", "config")
        routes = {
            service: await self._controller.get(f"/v1/routes?service={quote(service)}", f"routes of {service}")
            for service in routed_services(config)
        }
        self._config = config
        self._topics.publish("routes", routes_topic(config, routes))

    async def _poll_check(self) -> None:
        started = self._clock()
        try:
            report = await trio.to_thread.run_sync(self._run_check, abandon_on_cancel=True)
        except MeshError as exc:  # a check that cannot run at all says why; the link is not at fault
            self._topics.publish("check", {"ran_at": started, "error": exc.message, "hint": exc.hint})
            return
        self._topics.publish(
            "check", {"ran_at": started, "seconds": round(self._clock() - started, 1), "report": report}
        )
