"""An immutable, hashable mapping for the dict-shaped fields of the config model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenMap(Mapping[_K, _V], Generic[_K, _V]):
    """A read-only dict: equal to a dict with the same items, and hashable.

    Why not ``types.MappingProxyType``: a proxy is neither hashable nor picklable,
    and the config model is meant to be both (frozen dataclasses all the way down).
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = (), /) -> None:
        self._data: dict[_K, _V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._data,))

    def to_dict(self) -> dict[_K, _V]:
        """A plain, mutable copy."""
        return dict(self._data)
