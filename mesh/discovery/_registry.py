"""The Registry interface every discovery backend offers, and the in-memory table they share.

The proxy calls ``endpoints(service)`` on every request, so a lookup is one dict
read that returns the very same tuple until something changes. Change
notification is the only part that needs trio: ``wait_changed`` creates a
``trio.Event`` lazily, the first time someone waits, and a change sets it and
drops it (trio events cannot be reset). Lookups and updates never touch trio, so
a backend's pure code and the tests can use MemoryRegistry without a trio loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import trio

from mesh.discovery._endpoint import Endpoint


@runtime_checkable
class Registry(Protocol):
    """Where the endpoints of services come from (static file, zeroconf, controller)."""

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        """The endpoints of ``service`` now; ``()`` for an unknown service."""
        ...

    def services(self) -> frozenset[str]:
        """Services that have at least one endpoint."""
        ...

    @property
    def version(self) -> int:
        """Bumped on every change of any service's endpoints."""
        ...

    async def wait_changed(self, version: int) -> int:
        """Return the current version as soon as it differs from ``version``."""
        ...


class MemoryRegistry:
    """A Registry held in memory; backends fill it, the proxy reads it.

    A service is listed while it has endpoints: setting an empty sequence removes
    it. An update that changes nothing keeps the version, so watchers wake only
    for real changes.
    """

    __slots__ = ("_changed", "_services", "_table", "_version")

    def __init__(self, initial: Mapping[str, Iterable[Endpoint]] | None = None) -> None:
        self._table: dict[str, tuple[Endpoint, ...]] = {}
        self._services: frozenset[str] = frozenset()
        self._version = 0
        self._changed: trio.Event | None = None
        if initial:
            self.replace_all(initial)

    # -- reads (hot path: no allocation, no trio)

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        return self._table.get(service, ())

    def services(self) -> frozenset[str]:
        return self._services

    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> dict[str, tuple[Endpoint, ...]]:
        """A copy of the whole table (for /config and the controller's view)."""
        return dict(self._table)

    # -- updates

    def set_endpoints(self, service: str, endpoints: Iterable[Endpoint]) -> bool:
        """Replace the endpoints of one service; True when that changed anything."""
        table = dict(self._table)
        _put(table, service, endpoints)
        return self._commit(table)

    def remove(self, service: str) -> bool:
        """Forget a service; True when it was there."""
        if service not in self._table:
            return False
        table = dict(self._table)
        del table[service]
        return self._commit(table)

    def replace_all(self, mapping: Mapping[str, Iterable[Endpoint]]) -> bool:
        """Replace the whole table at once (one version bump); True when anything changed."""
        table: dict[str, tuple[Endpoint, ...]] = {}
        for service, endpoints in mapping.items():
            _put(table, service, endpoints)
        return self._commit(table)

    def _commit(self, table: dict[str, tuple[Endpoint, ...]]) -> bool:
        if table == self._table:
            return False
        # Keep the old tuple object of every service that did not change, so that
        # readers holding it (or comparing by identity) see no change there.
        for service, endpoints in table.items():
            old = self._table.get(service)
            if old is not None and old == endpoints:
                table[service] = old
        self._table = table
        if table.keys() != self._services:
            self._services = frozenset(table)
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return True

    # -- notification

    async def wait_changed(self, version: int) -> int:
        if self._version != version:
            await trio.lowlevel.checkpoint()  # an async call always yields, even when it need not wait
            return self._version
        while self._version == version:
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()
        return self._version


def _put(table: dict[str, tuple[Endpoint, ...]], service: str, endpoints: Iterable[Endpoint]) -> None:
    endpoints = tuple(endpoints)
    for endpoint in endpoints:
        if endpoint.service != service:
            raise ValueError(f"endpoint {endpoint.address} of service {endpoint.service!r} listed under {service!r}")
    if endpoints:
        table[service] = endpoints
    else:
        table.pop(service, None)
