"""The proxy's HPACK encoder against hpack's decoder (the oracle): same fields out, sensitive ones
marked never-indexed, table size updates sent, and nothing depends on earlier blocks."""

from __future__ import annotations

import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import given, settings, strategies as st

from mesh.proxy._h2_encoder import CACHE_ENTRIES, ProxyEncoder, encode_field

field_bytes = st.binary(min_size=0, max_size=300)
names = st.one_of(st.sampled_from([b":path", b":status", b"content-type", b"user-agent", b"x-a", b"cookie"]), field_bytes)
values = st.one_of(st.sampled_from([b"GET", b"200", b"/", b"gzip, deflate", b""]), field_bytes)
fields = st.tuples(names, values, st.booleans())


def _tuples(block: list[tuple[bytes, bytes, bool]]) -> list[HeaderTuple]:
    return [NeverIndexedHeaderTuple(n, v) if secret else HeaderTuple(n, v) for n, v, secret in block]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(fields, max_size=12), min_size=1, max_size=5))
def test_hpack_decodes_what_it_encodes(blocks: list[list[tuple[bytes, bytes, bool]]]) -> None:
    encoder = ProxyEncoder()
    decoder = hpack.Decoder()
    decoder.max_header_list_size = 1 << 30
    for block in blocks:
        sent = _tuples(block)
        got = decoder.decode(encoder.encode(sent), raw=True)
        assert [tuple(f) for f in got] == [tuple(f) for f in sent]
        # A sensitive field arrives marked so; the next hop must not index it either (RFC 7541 7.1.3).
        assert [isinstance(f, NeverIndexedHeaderTuple) for f in got] == [secret for _, _, secret in block]
    assert len(decoder.header_table.dynamic_entries) == 0  # the peer's table is never used


def test_static_table_matches_are_one_byte_and_long_values_are_exact() -> None:
    assert encode_field(b":method", b"GET", False) == b"\x82"
    assert encode_field(b":status", b"200", False) == b"\x88"
    # A sensitive field is a never-indexed literal even when the static table has it whole.
    assert encode_field(b":method", b"GET", True)[0] & 0xF0 == 0x10
    long_value = b"v" * 20_000  # lengths past the 7-bit prefix, three bytes of it
    assert hpack.Decoder().decode(encode_field(b"x-long", long_value, False), raw=True) == [(b"x-long", long_value)]


def test_table_size_update_starts_the_next_block() -> None:
    encoder = ProxyEncoder()
    decoder = hpack.Decoder()
    encoder.header_table_size = 0  # the peer's SETTINGS_HEADER_TABLE_SIZE
    block = encoder.encode([(b":status", b"200")])
    assert block[0] & 0xE0 == 0x20  # dynamic table size update (RFC 7541 6.3)
    assert decoder.decode(block, raw=True) == [(b":status", b"200")]
    assert encoder.encode([(b":status", b"200")]) == b"\x88"  # once


@pytest.mark.parametrize("count", [CACHE_ENTRIES + 10])
def test_the_cache_is_bounded(count: int) -> None:
    encoder = ProxyEncoder()
    decoder = hpack.Decoder()
    for i in range(count):
        path = f"/item/{i}".encode()
        assert decoder.decode(encoder.encode([(b":path", path)]), raw=True) == [(b":path", path)]
    from mesh.proxy import _h2_encoder

    assert len(_h2_encoder._plain) <= CACHE_ENTRIES

