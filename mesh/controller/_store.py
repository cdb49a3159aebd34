"""The controller's store: a small key-value interface with revisions, leases and watches.

Two backends implement ``Store``, with the same semantics (those of etcd v3, which
the embedded one copies on a small scale):

- ``EmbeddedStore`` (``_store_embedded.py``): SQLite in WAL mode under
  MESH_HOME/state/, for one controller;
- ``EtcdStore`` (``_store_etcd.py``): an etcd v3 cluster through its JSON
  gateway, for several controllers serving one mesh.

What the mesh keeps there and under which keys is written once, above both, in
``_durable.py``. Every change has a revision (one counter for the whole store);
``commit`` is all-or-nothing and may be conditional on keys' revisions
(compare-and-swap); a key may be tied to a lease that dies unless kept alive;
``watch`` yields every change after a revision, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from mesh.errors import StoreError


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One change: ``value`` None means the key was deleted (or its lease ran out)."""

    key: str
    value: bytes | None
    revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Compare:
    """The commit happens only if ``key`` was last changed at ``mod_revision`` (0: it must not exist)."""

    key: str
    mod_revision: int


@dataclass(frozen=True, slots=True)
class MemberHealth:
    name: str
    endpoint: str
    reachable: bool
    leader: bool = False
    rtt_ms: float | None = None
    error: str | None = None
    version: str | None = None
    raft_index: int | None = None


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """What `mesh check` and the read-only switch need to know about the store."""

    backend: str  # "embedded" | "etcd"
    location: str  # the file, or etcd://members/prefix
    writable: bool
    reason: str | None = None  # why it is not writable
    members: tuple[MemberHealth, ...] = ()
    leader: str | None = None
    quorum: bool = True
    revision: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "location": self.location,
            "writable": self.writable,
            "reason": self.reason,
            "quorum": self.quorum,
            "leader": self.leader,
            "revision": self.revision,
            "members": [
                {
                    "name": m.name,
                    "endpoint": m.endpoint,
                    "reachable": m.reachable,
                    "leader": m.leader,
                    "rtt_ms": m.rtt_ms,
                    "error": m.error,
                    "version": m.version,
                    "raft_index": m.raft_index,
                }
                for m in self.members
            ],
            **self.details,
        }


class StoreUnavailable(StoreError):
    """The store cannot answer now (no quorum, unreachable, disk full): read-only until it can."""


class StoreCompacted(StoreError):
    """A watch asked for revisions the store no longer keeps: read everything again."""


class Store(Protocol):
    """What the controller needs from a store. Every method may raise ``StoreUnavailable``."""

    @property
    def location(self) -> str:
        """Where the data is, for messages: a file path or ``etcd://…``."""
        ...

    async def open(self) -> None:
        """Reach the store and check it; a store that cannot serve raises StoreError here."""
        ...

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the revision the answer is at."""
        ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def commit(
        self, puts: Sequence[Put] = (), deletes: Sequence[str] = (), compares: Sequence[Compare] = ()
    ) -> int | None:
        """All of it or nothing: the new revision, or None when a compare did not hold."""
        ...

    async def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds; keys put with it go when it runs out."""
        ...

    async def keepalive(self, lease: int) -> bool:
        """Start the lease's time again; False when it has run out already (its keys are gone)."""
        ...

    async def revoke(self, lease: int) -> None: ...

    def watch(self, prefix: str, after: int) -> AbstractAsyncContextManager[AsyncIterator[list[StoreEvent]]]:
        """Batches of changes under ``prefix`` with revisions above ``after``, in order.

        Raises ``StoreCompacted`` when ``after`` is too old, ``StoreUnavailable``
        when the stream is lost (the caller watches again from where it was).
        """
        ...

    async def health(self) -> StoreHealth: ...

    async def aclose(self) -> None: ...


def open_store(url: Any, home: Any) -> Store:
    """The backend a ``StoreUrl`` names (not yet opened: ``_durable.open_durable`` does that)."""
    if url.embedded:
        from mesh.controller._store_embedded import EmbeddedStore

        return EmbeddedStore(home.root / "state" / "mesh.db")
    from mesh.controller._store_etcd import EtcdStore

    return EtcdStore(url)
