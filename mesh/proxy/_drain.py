"""Graceful shutdown, shared by every connection of a proxy."""

from __future__ import annotations

import trio


class Drain:
    """Stop taking new requests, let the current ones end: idle waits are cut at once."""

    def __init__(self) -> None:
        self.draining = False
        self._idle_scopes: set[trio.CancelScope] = set()

    def start(self) -> None:
        self.draining = True
        for scope in list(self._idle_scopes):
            scope.cancel()

    def idle_scope(self, timeout: float) -> trio.CancelScope:
        scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        if self.draining:
            scope.cancel()
        self._idle_scopes.add(scope)
        return scope

    def done(self, scope: trio.CancelScope) -> None:
        self._idle_scopes.discard(scope)

    def __repr__(self) -> str:
        return f"<Drain {'draining' if self.draining else 'serving'} idle={len(self._idle_scopes)}>"
