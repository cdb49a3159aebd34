"""Several registries seen as one (static file, zeroconf, the controller's view).

The proxy asks ``endpoints(service)`` on every request: the merged tuple is
cached per service and rebuilt only when a part's version moves.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from mesh.discovery._endpoint import Endpoint
from mesh.discovery._registry import Registry


class CompositeRegistry:
    def __init__(self, parts: Sequence[Registry]) -> None:
        self.parts = tuple(parts)
        self._cache: dict[str, tuple[Endpoint, ...]] = {}
        self._cache_key = self._versions()

    def _versions(self) -> tuple[int, ...]:
        return tuple([part.version for part in self.parts])  # a list is quicker than a generator here (per request)

    @property
    def version(self) -> int:
        return sum(self._versions())

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        key = self._versions()
        if key != self._cache_key:
            self._cache.clear()
            self._cache_key = key
        cached = self._cache.get(service)
        if cached is None:
            merged: dict[str, Endpoint] = {}
            for part in self.parts:  # earlier parts win for the same address
                for endpoint in part.endpoints(service):
                    merged.setdefault(endpoint.address, endpoint)
            cached = self._cache[service] = tuple(merged.values())
        return cached

    def services(self) -> frozenset[str]:
        names: set[str] = set()
        for part in self.parts:
            names |= part.services()
        return frozenset(names)

    async def wait_changed(self, version: int) -> int:
        async with trio.open_nursery() as nursery:
            for part in self.parts:

                async def wait(part: Registry = part) -> None:
                    await part.wait_changed(part.version)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait)
        return self.version

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the parts that need a task (file polling, zeroconf browsing)."""
        async with trio.open_nursery() as nursery:
            for part in self.parts:
                runner = getattr(part, "run", None)
                if runner is not None:
                    await nursery.start(runner)
            task_status.started()

    def __repr__(self) -> str:
        return f"<CompositeRegistry parts={len(self.parts)} version={self.version}>"
