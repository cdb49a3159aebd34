"""HPACK decoding (RFC 7541) for the proxy's HTTP/2 codec: the ``hpack`` package's rules, one pass.

Same results and the same errors as ``hpack.Decoder.decode(raw=True)`` (the oracle in
tests/unit/proxy/test_h2_codec.py), without its costs: hpack copies the rest of the block
for every literal field (``memoryview.tobytes``) and logs every integer and header it
decodes. Huffman strings go through hpack's own decoder. Fields come out as plain
``(name, value)`` tuples, or ``NeverIndexedHeaderTuple`` for fields the sender marked
never-indexed (the proxy keeps that marking when it forwards them).
"""

from __future__ import annotations

from collections import deque

from hpack import NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, InvalidTableIndex, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]

_STATIC: tuple[Header, ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_LENGTH = len(_STATIC)
_VARINT_MAX_LENGTH = 5  # octets, as hpack: enough for a prefix and a uint32
DEFAULT_TABLE_SIZE = 4096


class Decoder:
    """One connection's HPACK decoding context: the dynamic table and its limits."""

    __slots__ = ("entries", "size", "maxsize", "max_allowed_table_size", "max_header_list_size")

    def __init__(self, max_header_list_size: int = 2**16) -> None:
        self.entries: deque[Header] = deque()
        self.size = 0
        self.maxsize = DEFAULT_TABLE_SIZE
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE  # what our SETTINGS_HEADER_TABLE_SIZE allows
        self.max_header_list_size = max_header_list_size

    def _resize(self, maxsize: int) -> None:
        old, self.maxsize = self.maxsize, maxsize
        if maxsize <= 0:
            self.entries.clear()
            self.size = 0
        elif old > maxsize:
            self._shrink()

    def _shrink(self) -> None:
        size = self.size
        while size > self.maxsize:
            name, value = self.entries.pop()
            size -= 32 + len(name) + len(value)
        self.size = size

    def _add(self, name: bytes, value: bytes) -> None:
        entry_size = 32 + len(name) + len(value)
        if entry_size > self.maxsize:
            self.entries.clear()
            self.size = 0
        else:
            self.entries.appendleft((name, value))
            self.size += entry_size
            self._shrink()

    def _field(self, index: int) -> Header:
        if 0 < index <= _STATIC_LENGTH:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_LENGTH - 1
        if 0 <= dynamic < len(self.entries):
            return self.entries[dynamic]
        raise InvalidTableIndex(f"Invalid table index {index}")

    def decode(self, data: bytes) -> list[Header]:
        headers: list[Header] = []
        end = len(data)
        pos = 0
        inflated = 0
        limit = self.max_header_list_size
        while pos < end:
            first = data[pos]
            if first & 0x80:  # indexed field (6.1)
                index, pos = _integer(data, pos, 0x7F)
                header = self._field(index)
            elif first & 0x20 and not first & 0x40:  # dynamic table size update (6.3)
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                new_size, pos = _integer(data, pos, 0x1F)
                if new_size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self._resize(new_size)
                continue
            else:  # literal: with incremental indexing (6.2.1), without (6.2.2), never indexed (6.2.3)
                indexing = bool(first & 0x40)
                name_index = first & (0x3F if indexing else 0x0F)
                if name_index:
                    index, pos = _integer(data, pos, 0x3F if indexing else 0x0F)
                    name = self._field(index)[0]
                else:
                    name, pos = _string(data, pos + 1)
                value, pos = _string(data, pos)
                if indexing:
                    self._add(name, value)
                    header = (name, value)
                elif first & 0x10:
                    header = NeverIndexedHeaderTuple(name, value)
                else:
                    header = (name, value)
            headers.append(header)
            inflated += 32 + len(header[0]) + len(header[1])
            if inflated > limit:
                raise OversizedHeaderListError(f"A header list larger than {limit} has been received")
        if self.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        return headers


def _integer(data: bytes, pos: int, mask: int) -> tuple[int, int]:
    """RFC 7541 5.1: the integer at ``pos`` (``mask`` its prefix) and the position after it."""
    try:
        number = data[pos] & mask
        if number != mask:
            return number, pos + 1
        start = pos
        pos += 1
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            number += (byte & 0x7F) << shift
            if byte < 0x80:
                return number, pos
            shift += 7
            if pos - start > _VARINT_MAX_LENGTH:
                raise HPACKDecodingError(f"Variable integer representation is too long at {start}")
    except IndexError as err:
        raise HPACKDecodingError("Unable to decode HPACK integer representation") from err


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 7541 5.2: the string literal at ``pos`` (Huffman-decoded) and the position after it."""
    length, start = _integer(data, pos, 0x7F)
    end = start + length
    if end > len(data):
        raise HPACKDecodingError("Truncated header block")
    if data[pos] & 0x80:
        return decode_huffman(data[start:end]), end
    return data[start:end], end
