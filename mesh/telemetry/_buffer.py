"""A bounded queue between the request path and a background writer (pure, no trio).

The request path only appends; a writer task takes batches. Past ``limit`` items, new
ones are dropped and counted (``dropped``, and the ``on_drop`` hook that feeds a metric):
memory stays bounded and a request never waits for a slow collector or a full disk.
The writer is woken twice per batch at most: when the first item arrives (``on_first``:
start the batch timer) and when ``batch`` items are waiting (``on_full``: send now).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    __slots__ = ("items", "limit", "batch", "dropped", "on_first", "on_full", "_on_drop")

    def __init__(self, limit: int, batch: int, on_drop: Callable[[int], None] | None = None) -> None:
        if limit < 1 or not 1 <= batch <= limit:
            raise ValueError("need 1 <= batch <= limit")
        self.items: list[T] = []
        self.limit = limit
        self.batch = batch
        self.dropped = 0
        self.on_first: Callable[[], None] | None = None
        self.on_full: Callable[[], None] | None = None
        self._on_drop = on_drop

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and counted) when the queue is full."""
        items = self.items
        size = len(items)
        if size >= self.limit:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return False
        items.append(item)
        if size == 0 and self.on_first is not None:
            self.on_first()
        if size + 1 == self.batch and self.on_full is not None:
            self.on_full()
        return True

    def take(self, limit: int | None = None) -> list[T]:
        """Remove and return the oldest items (at most ``limit``)."""
        items = self.items
        if limit is None or limit >= len(items):
            self.items = []
            return items
        taken, self.items = items[:limit], items[limit:]
        return taken

    def drop_batch(self, count: int) -> None:
        """Count ``count`` items the writer took but could not deliver."""
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    def __len__(self) -> int:
        return len(self.items)
