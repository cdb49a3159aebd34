"""detect(): HTTP/1 request lines, the HTTP/2 preface, everything else opaque."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from mesh.proxy.protocol.detect import H2_PREFACE, Mode, Protocol, detect, listener_mode

REQUEST_LINES = [
    b"GET / HTTP/1.1\r\nHost: web\r\n\r\n",
    b"POST /api HTTP/1.1\r\n",
    b"DELETE /x HTTP/1.0\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"CONNECT web:443 HTTP/1.1\r\n",
    b"M-SEARCH * HTTP/1.1\r\n",
    b"PROPFIND /d HTTP/1.1\r\n",
    b"PRI /not-the-preface HTTP/1.1\r\n",  # "PRI" is a legal HTTP/1 method too
]

# A real TLS 1.2/1.3 ClientHello starts like this: handshake record, version, length, type 1.
CLIENT_HELLO = bytes.fromhex("160301020001000200fc03036a2b") + b"\x00" * 32
OPAQUE_SAMPLES = [
    CLIENT_HELLO,
    b"\x00\x00\x00\x0c\x00\x00\x00\x00",  # length-prefixed binary protocol
    b"\x80\x01\x00\x01",  # thrift
    b"*1\r\n$4\r\nPING\r\n",  # redis
    b"get foo\r\n",  # memcached text (lower case is not an HTTP method)
    b"SSH-2.0-OpenSSH_9.6\r\n",  # upper case, then something no method has
    b"\x16",
    b"{\"json\": 1}",
    b"GET\r\n",  # a token followed by CRLF, not a space
    b"GET\t/ HTTP/1.1",
]


def test_nothing_yet() -> None:
    assert detect(b"") is None


def test_every_prefix_of_the_h2_preface_waits() -> None:
    for n in range(1, len(H2_PREFACE)):
        assert detect(H2_PREFACE[:n]) is None, H2_PREFACE[:n]
    assert detect(H2_PREFACE) is Protocol.HTTP2
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    assert detect(H2_PREFACE + settings_frame) is Protocol.HTTP2


def test_h2_preface_constant() -> None:
    assert H2_PREFACE == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 section 3.4


@pytest.mark.parametrize("line", REQUEST_LINES, ids=lambda b: b.split(b" ")[0].decode())
def test_every_prefix_of_a_request_line_settles_on_http1(line: bytes) -> None:
    method_end = line.index(b" ")
    for n in range(1, len(line) + 1):
        got = detect(line[:n])
        if n <= method_end:
            assert got is None, line[:n]
        elif line.startswith(b"PRI ") and H2_PREFACE.startswith(line[:n]):
            assert got is None, line[:n]  # still could be the preface
        else:
            assert got is Protocol.HTTP1, line[:n]


def test_pri_diverging_from_the_preface_late() -> None:
    # Shares 15 bytes with the preface, then is an HTTP/1 request.
    line = b"PRI * HTTP/2.0\r\nHost: x\r\n\r\n"
    assert detect(line[:16]) is None
    assert detect(line) is Protocol.HTTP1


@pytest.mark.parametrize("data", OPAQUE_SAMPLES, ids=repr)
def test_opaque_samples(data: bytes) -> None:
    assert detect(data) is Protocol.OPAQUE


def test_tls_client_hello_is_opaque_from_the_first_byte() -> None:
    for n in range(1, len(CLIENT_HELLO) + 1):
        assert detect(CLIENT_HELLO[:n]) is Protocol.OPAQUE


TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 255).filter(lambda b: b not in TCHARS and b not in (0x0A, 0x0D)), st.binary(max_size=30))
def test_bytes_that_cannot_start_a_method_are_opaque_at_once(first: int, rest: bytes) -> None:
    assert detect(bytes([first])) is Protocol.OPAQUE
    assert detect(bytes([first]) + rest) is Protocol.OPAQUE


def test_any_method_token_is_http_once_its_line_says_http() -> None:
    # Lenient servers accept methods of any token characters: a request that starts with one must
    # be parsed (and refused or policed), never relayed as opaque bytes (found by fuzzing).
    assert detect(b"body-xxDELETE * HTTP/0.9\r\n") is Protocol.HTTP1
    assert detect(b"get / HTTP/1.1\r\n") is Protocol.HTTP1
    assert detect(b"get /") is None  # could still become one
    assert detect(b"get foo\r\n") is Protocol.OPAQUE  # memcached: the line ends without HTTP/
    assert detect(b"a b c") is Protocol.OPAQUE


def test_blank_lines_before_a_request_line_are_http1() -> None:
    # Servers skip them (RFC 9112 2.2), so they must not make a request pass as opaque bytes.
    assert detect(b"\r\nGET / HTTP/1.1\r\n") is Protocol.HTTP1
    assert detect(b"\r\n\r\nPOST /x HTTP/1.1") is Protocol.HTTP1
    assert detect(b"\r\n") is None
    assert detect(b"\r\nGE") is None
    assert detect(b"\r\n\x16\x03") is Protocol.OPAQUE
    # Never an unbounded wait: a run of blank lines is handed to the HTTP/1 parser.
    assert detect(b"\r\n" * 5) is Protocol.HTTP1


def test_listener_mode_follows_the_declared_protocol() -> None:
    assert listener_mode("tcp") is Mode.OPAQUE
    for protocol in ("http", "http2", "grpc"):
        assert listener_mode(protocol) is Mode.HTTP
    assert listener_mode("auto") is Mode.AUTO
    assert listener_mode("unknown") is Mode.AUTO


def test_a_token_without_a_request_line_gives_up_at_its_line_end_or_8_kib() -> None:
    assert detect(b"A" * 20) is None
    assert detect(b"A" * 20 + b" ") is Protocol.HTTP1
    assert detect(b"A" * 200) is None
    assert detect(b"A" * 200 + b"\r\n") is Protocol.OPAQUE
    assert detect(b"A" * 8192) is Protocol.OPAQUE


_mixed = st.lists(
    st.one_of(
        st.sampled_from([b"G", b"E", b"T", b"P", b"R", b"I", b" ", b"-", b"*", b"\r", b"\n", b"H", b"S", b"M"]),
        st.binary(min_size=1, max_size=1),
        st.sampled_from([H2_PREFACE[:k] for k in (3, 8, 16, 24)]),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(_mixed, st.binary(max_size=10))
def test_an_answer_never_changes_with_more_bytes(prefix: bytes, more: bytes) -> None:
    first = detect(prefix)
    if first is not None:
        assert detect(prefix + more) is first


@settings(max_examples=150, deadline=None)
@given(_mixed, st.binary(max_size=30))
def test_decided_by_the_end_of_the_first_line(prefix: bytes, more: bytes) -> None:
    # Past the preface's length, a first line that has ended (or 8 KiB without an end) decides.
    data = (prefix + more + b"\x00" * len(H2_PREFACE))[: max(len(H2_PREFACE), len(prefix))] + b"\r\n"
    assert detect(data) is not None
    assert detect(b"A" * 8192) is not None
