"""Telemetry fan-in: ``GET /v1/tap``, every proxy's ``/tap`` merged into one stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import trio

from mesh.controller._fanin_admin import (
    AdminDialer,
    AdminStream,
    AdminUnreachable,
    ProxyTarget,
    _spawn_guarded,
)
from mesh.telemetry import SHOW_QUERY, TapFilter

TAP_REFRESH = 2.0  # look for new (or returning) proxies this often while tapping
TAP_BUFFER = 1000  # merged events waiting for the CLI; beyond it readers wait and proxies drop


class TapFanIn:
    """One merged NDJSON stream of the ``/tap`` streams of every proxy (an async iterator).

    Items: the proxies' own lines (``request`` and ``dropped``) with ``instance``
    added, ``{"type": "tapping" | "unreachable", "instance", "service",
    "address", ...}`` as proxies are joined or fail (each said once per change),
    and ``{"type": "waiting", "message"}`` once if no proxy is registered yet.
    A CLI that reads slowly makes the readers wait; the proxies then drop (and
    count) what their queues cannot hold, so nothing piles up here.
    """

    def __init__(
        self,
        targets: Callable[[], list[ProxyTarget]],
        tap_filter: TapFilter,
        max_rps: float | None,
        dialer: AdminDialer,
        refresh: float = TAP_REFRESH,
        clock: Callable[[], float] = time.monotonic,
        query_values: bool = False,
    ) -> None:
        self._targets = targets
        self._dialer = dialer
        query = tap_filter.to_query()
        if max_rps is not None:
            query["max_rps"] = f"{max_rps:g}"
        if query_values:
            query[SHOW_QUERY] = "1"
        self._path = "/tap" + (f"?{urlencode(query)}" if query else "")
        self._max_rps = max_rps
        self._refresh = refresh
        self._clock = clock
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](TAP_BUFFER)
        self._scope = trio.CancelScope()
        self._started = False
        self._following: dict[Any, trio.CancelScope] = {}
        self._failing: set[Any] = set()  # told the listener it is unreachable; not again until it is back
        self._tokens = max(1.0, max_rps or 1.0)
        self._refilled = clock()

    def __aiter__(self) -> TapFanIn:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if not self._started:
            self._started = True
            _spawn_guarded(self._run, "tap fan-in")
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._scope.cancel()
        self._receive.close()

    async def _run(self) -> None:
        with self._scope:
            async with self._send, trio.open_nursery() as nursery:
                waiting_said = False
                while True:
                    targets = {t.key: t for t in self._targets()}
                    if not targets and not waiting_said:
                        waiting_said = True
                        await self._emit(
                            {"type": "waiting", "message": "no proxy is registered yet; waiting for the first one"}
                        )
                    for key, scope in list(self._following.items()):
                        if key not in targets:
                            scope.cancel()  # withdrawn from the registry
                    for key, target in targets.items():
                        if key not in self._following:
                            scope = self._following[key] = trio.CancelScope()
                            nursery.start_soon(self._follow, target, scope)
                    await trio.sleep(self._refresh)

    async def _follow(self, target: ProxyTarget, scope: trio.CancelScope) -> None:
        try:
            with scope:
                stream = await AdminStream.open(self._dialer, target, self._path)
                try:
                    self._failing.discard(target.key)
                    await self._emit({"type": "tapping", **target.describe()})
                    async for item in stream.lines():
                        if not isinstance(item, dict):
                            continue
                        if item.get("type") == "request" and not self._allowed():
                            continue
                        item["instance"] = target.instance
                        await self._send.send(item)
                finally:
                    await stream.aclose()
        except AdminUnreachable as exc:
            if target.key not in self._failing:
                self._failing.add(target.key)
                await self._emit({"type": "unreachable", **target.describe(), "error": str(exc)})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the listener left
        finally:
            if self._following.get(target.key) is scope:
                del self._following[target.key]

    async def _emit(self, item: dict[str, Any]) -> None:
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _allowed(self) -> bool:
        """The merged stream's own max_rps (each proxy also applies it to its part)."""
        if self._max_rps is None:
            return True
        now = self._clock()
        self._tokens = min(max(1.0, self._max_rps), self._tokens + (now - self._refilled) * self._max_rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
