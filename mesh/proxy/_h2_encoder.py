"""The proxy's HPACK encoder: every field coded on its own, so the coding of a field is cached.

hpack's ``Encoder`` indexes fields into the dynamic table and Huffman-codes every
literal: a block's bytes depend on every block before it, and each field costs a
table search, an insertion (with evictions) and a Huffman pass, ~8 % of an HTTP/2
proxy's CPU. This encoder uses only the static table and literals "without
indexing" (or "never indexed", RFC 7541 6.2.3, for fields marked sensitive), so a
field's bytes do not depend on the connection: they are computed once and looked
up afterwards (a bounded, process-wide cache). Literals are not Huffman-coded
(cheaper for the peer's decoder too). The price is a few dozen bytes per header
block on the wire; the peer's decoder state is never touched, which is always
valid HPACK. Dynamic table size updates the peer's SETTINGS ask for are still
sent at the start of the next block (RFC 7541 4.2), by hpack's code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Encoder, HeaderTuple
from hpack.table import HeaderTable

CACHE_ENTRIES = 1024  # distinct fields remembered (cleared when full: :path values vary)
CACHE_FIELD_LIMIT = 512  # longer fields are coded each time, not kept

_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def _integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """RFC 7541 5.1, with ``flags`` in the first byte's bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data  # H bit clear: raw octets


def encode_field(name: bytes, value: bytes, sensitive: bool) -> bytes:
    """One field's representation, independent of any table state but the static table's."""
    if not sensitive:
        index = _STATIC_FIELDS.get((name, value))
        if index is not None:
            return _integer(index, 7, 0x80)  # indexed (6.1)
    flags = 0x10 if sensitive else 0x00  # never indexed (6.2.3) / without indexing (6.2.2)
    name_index = _STATIC_NAMES.get(name)
    if name_index is not None:
        return _integer(name_index, 4, flags) + _string(value)
    return bytes((flags,)) + _string(name) + _string(value)


_plain: dict[tuple[bytes, bytes], bytes] = {}
_secret: dict[tuple[bytes, bytes], bytes] = {}


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class ProxyEncoder(Encoder):
    """A drop-in ``hpack.Encoder`` for the HTTP/2 codec (``conn.encoder = ProxyEncoder()``): see the module's doc."""

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        block: list[bytes] = []
        if self.header_table.resized:
            block.append(self._encode_table_size_change())
            self.header_table.resized = False
        for header in headers:  # a list of tuples, pseudo-headers first
            if isinstance(header, HeaderTuple):
                sensitive = not header.indexable
            else:
                sensitive = len(header) > 2 and bool(header[2])
            name, value = header[0], header[1]
            if type(name) is not bytes or type(value) is not bytes:
                name, value = _as_bytes(name), _as_bytes(value)
            key = (name, value)
            cache = _secret if sensitive else _plain
            coded = cache.get(key)
            if coded is None:
                coded = encode_field(name, value, sensitive)
                if len(name) + len(value) <= CACHE_FIELD_LIMIT:
                    if len(cache) >= CACHE_ENTRIES:
                        cache.clear()
                    cache[key] = coded
            block.append(coded)
        return b"".join(block)
