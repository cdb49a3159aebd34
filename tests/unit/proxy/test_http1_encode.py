"""encode_* round trips through the readers, strip_hop_by_hop, simple_response."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mesh.proxy.protocol.http1 import (
    HOP_BY_HOP,
    Data,
    EndOfMessage,
    Framing,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    Upgraded,
    complete_body_length,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
    encode_response_head,
    reason_phrase,
    response_framing,
    simple_response,
    strip_hop_by_hop,
)

from ._h1 import body_of, ends, feed_all, kinds, normalise, pieces

ROUND_TRIP = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
RESERVED = HOP_BY_HOP | {b"content-length", b"host"}

token = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
header_name = token.filter(lambda n: n.lower() not in RESERVED)
_vchar = st.sampled_from([bytes([c]) for c in [*range(0x21, 0x7F), *range(0x80, 0x100)]])
_inner = st.one_of(_vchar, st.sampled_from([b" ", b"\t"]))
header_value = st.one_of(
    st.just(b""),
    st.tuples(_vchar, st.lists(_inner, max_size=20), _vchar).map(lambda t: t[0] + b"".join(t[1]) + t[2]),
    _vchar,
)
headers = st.lists(st.tuples(header_name, header_value), max_size=8)
method = st.one_of(
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"M-SEARCH", b"PROPFIND"]),
)
_path_chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%?"
target = st.text(_path_chars, max_size=40).map(lambda t: b"/" + t.encode())
body_chunks = st.lists(st.binary(min_size=1, max_size=40), max_size=5)
trailers = st.lists(st.tuples(header_name, header_value), max_size=3)


def _parse_request(raw: bytes) -> list:
    return normalise(feed_all(RequestReader(), [raw]))


def _parse_response(raw: bytes, method: bytes = b"GET", eof: bool = False) -> list:
    reader = ResponseReader()
    reader.expect(method)
    return normalise(feed_all(reader, [raw], eof=eof))


@ROUND_TRIP
@given(method, target, headers, st.sampled_from(list(Framing)), body_chunks, trailers)
def test_request_round_trip(
    method: bytes, target: bytes, hdrs: list, framing: Framing, chunks: list[bytes], trls: list
) -> None:
    if framing is Framing.CLOSE:  # a request body cannot be close-delimited
        framing = Framing.NONE
    body = b"".join(chunks)
    sent = list(hdrs)
    if framing is Framing.LENGTH:
        if not body:
            framing = Framing.NONE
        else:
            sent.append((b"Content-Length", b"%d" % len(body)))
    raw = encode_request_head(method, target, sent, framing)
    if framing is Framing.LENGTH:
        raw += body
    elif framing is Framing.CHUNKED:
        raw += b"".join(encode_chunk(c) for c in chunks) + encode_last_chunk(trls)
    events = _parse_request(raw)
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.http_version) == (method, target, b"1.1")
    expected = sent + ([(b"Transfer-Encoding", b"chunked")] if framing is Framing.CHUNKED else [])
    assert head.headers == expected
    assert head.framing is framing
    assert head.keep_alive and not head.upgrade
    if framing is Framing.NONE:
        assert events[1:] == [EndOfMessage([])]
    else:
        assert body_of(events) == body
        assert events[-1] == EndOfMessage(trls if framing is Framing.CHUNKED else [])


@ROUND_TRIP
@given(
    st.integers(200, 599).filter(lambda s: s not in (204, 304)),
    st.one_of(st.just(b""), st.text(TCHAR + " ", min_size=1, max_size=20).map(str.encode).map(bytes.strip)),
    headers,
    st.sampled_from(list(Framing)),
    st.booleans(),
    body_chunks,
    trailers,
)
def test_response_round_trip(
    status: int, reason: bytes, hdrs: list, framing: Framing, keep_alive: bool, chunks: list[bytes], trls: list
) -> None:
    body = b"".join(chunks)
    sent = list(hdrs)
    if framing is Framing.LENGTH or framing is Framing.NONE:
        sent.append((b"Content-Length", b"%d" % (len(body) if framing is Framing.LENGTH else 0)))
    raw = encode_response_head(status, reason, sent, framing, keep_alive)
    if framing is Framing.LENGTH or framing is Framing.CLOSE:
        raw += body
    elif framing is Framing.CHUNKED:
        raw += b"".join(encode_chunk(c) for c in chunks) + encode_last_chunk(trls)
    close_delimited = framing is Framing.CLOSE
    events = _parse_response(raw, eof=close_delimited)
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert head.status == status
    assert head.reason == (reason or reason_phrase(status))
    extra = []
    if framing is Framing.CHUNKED:
        extra.append((b"Transfer-Encoding", b"chunked"))
    if not keep_alive or close_delimited:
        extra.append((b"Connection", b"close"))
    assert head.headers == sent + extra
    assert head.keep_alive is (keep_alive and not close_delimited)
    assert isinstance(events[-1], EndOfMessage)  # complete without waiting for a close (or at the close)
    assert body_of(events) == (b"" if framing is Framing.NONE else body)
    if framing is Framing.CHUNKED:
        assert events[-1] == EndOfMessage(trls)


def test_response_reason_defaults() -> None:
    assert encode_response_head(404, b"", [], Framing.NONE).startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert encode_response_head(599, b"", [], Framing.NONE).startswith(b"HTTP/1.1 599 Unknown\r\n")
    assert encode_response_head(200, b"Fine", [], Framing.NONE).startswith(b"HTTP/1.1 200 Fine\r\n")
    assert reason_phrase(431) == b"Request Header Fields Too Large"


def test_interim_response_encoding_is_parseable() -> None:
    raw = encode_response_head(100, b"", [], Framing.NONE) + encode_response_head(
        200, b"", [(b"Content-Length", b"2")], Framing.LENGTH
    ) + b"ok"
    events = _parse_response(raw)
    assert [e.status for e in events if isinstance(e, ResponseHead)] == [100, 200]
    assert events[-2:] == [Data(b"ok"), EndOfMessage([])]


def test_upgrade_request_round_trip() -> None:
    original = (
        b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        b"Keep-Alive: timeout=5\r\nSec-WebSocket-Key: k\r\n\r\n"
    )
    head = RequestReader().feed(original)[0]
    assert isinstance(head, RequestHead) and head.upgrade
    kept = strip_hop_by_hop(head.headers, keep_upgrade=True)
    assert kept == [(b"Host", b"web"), (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Key", b"k")]
    raw = encode_request_head(head.method, head.target, kept, head.framing, upgrade=True)
    again = RequestReader().feed(raw + b"frame")
    assert again[0].upgrade  # type: ignore[union-attr]
    assert again[-1] == Upgraded(b"frame")


def test_connect_round_trip_has_no_connection_header() -> None:
    raw = encode_request_head(b"CONNECT", b"web:443", [(b"Host", b"web:443")], Framing.NONE, upgrade=True)
    assert b"connection" not in raw.lower()
    events = RequestReader().feed(raw + b"\x16\x03")
    assert events[0].upgrade and events[-1] == Upgraded(b"\x16\x03")  # type: ignore[union-attr]


def test_101_response_encoding_upgrades() -> None:
    raw = encode_response_head(101, b"", [(b"Upgrade", b"websocket")], Framing.NONE, upgrade=True)
    assert raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    events = ResponseReader().feed(raw + b"xyz")
    assert events[-1] == Upgraded(b"xyz")


def test_proxy_style_round_trip_of_a_request() -> None:
    """What the proxy does: parse, strip hop-by-hop, re-encode; the upstream sees the same request."""
    body = b'{"k": "v"}'
    original = (
        b"POST /api?q=1 HTTP/1.1\r\nHost: web\r\nProxy-Connection: keep-alive\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nTE: trailers\r\nKeep-Alive: 5\r\n"
        b"Content-Length: %d\r\nX-End: 1\r\n\r\n" % len(body)
    ) + body
    events = normalise(RequestReader().feed(original))
    head = events[0]
    assert isinstance(head, RequestHead)
    forwarded = encode_request_head(head.method, head.target, strip_hop_by_hop(head.headers), head.framing)
    forwarded += body_of(events)
    again = normalise(RequestReader().feed(forwarded))
    assert kinds(again) == ["RequestHead", "Data", "EndOfMessage"]
    assert again[0].headers == [  # type: ignore[union-attr]
        (b"Host", b"web"),
        (b"Content-Length", b"%d" % len(body)),
        (b"X-End", b"1"),
    ]
    assert again[1] == Data(body)


def test_chunked_request_reframed_round_trip() -> None:
    original = (
        b"POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext\r\nabcd\r\n2\r\nef\r\n0\r\nX-Sum: 9\r\n\r\n"
    )
    events = feed_all(RequestReader(), pieces(original, [30, 55, 61, 70]))
    head = events[0]
    assert isinstance(head, RequestHead)
    out = encode_request_head(head.method, head.target, strip_hop_by_hop(head.headers), head.framing)
    for event in events[1:]:
        if isinstance(event, Data):
            out += encode_chunk(event.data)
        elif isinstance(event, EndOfMessage):
            out += encode_last_chunk(event.trailers)
    again = normalise(RequestReader().feed(out))
    assert again[0].headers == [(b"Host", b"web"), (b"Transfer-Encoding", b"chunked")]  # type: ignore[union-attr]
    assert again[1:] == [Data(b"abcdef"), EndOfMessage([(b"X-Sum", b"9")])]


@pytest.mark.parametrize("named", [b"content-length", b"Content-Length", b"keep-alive, content-length"])
def test_connection_cannot_strip_the_framing_of_a_forwarded_request(named: bytes) -> None:
    # BUG (request smuggling): strip_hop_by_hop drops any header named in
    # Connection, Content-Length included, while the body is still forwarded
    # as-is. The upstream then reads the body as a second request.
    smuggled = b"GET /admin HTTP/1.1\r\nHost: web\r\nmesh-client-id: spiffe://td/svc/admin\r\n\r\n"
    original = (
        b"POST / HTTP/1.1\r\nHost: web\r\nConnection: " + named + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(smuggled)
    ) + smuggled
    events = normalise(RequestReader().feed(original))
    head = events[0]
    assert isinstance(head, RequestHead) and head.framing is Framing.LENGTH
    forwarded = encode_request_head(head.method, head.target, strip_hop_by_hop(head.headers), head.framing)
    forwarded += body_of(events)
    again = normalise(RequestReader().feed(forwarded))
    assert [e.target for e in again if isinstance(e, RequestHead)] == [b"/"], "body became a request"
    assert body_of(again) == smuggled


# --------------------------------------------------------------------------
# Chunks


def test_encode_chunk_sizes_are_hex() -> None:
    assert encode_chunk(b"a" * 255) == b"ff\r\n" + b"a" * 255 + b"\r\n"
    assert encode_chunk(b"abc") == b"3\r\nabc\r\n"
    assert encode_last_chunk() == b"0\r\n\r\n"
    assert encode_last_chunk([]) == b"0\r\n\r\n"
    assert encode_last_chunk([(b"grpc-status", b"0")]) == b"0\r\ngrpc-status: 0\r\n\r\n"


def test_encode_chunk_of_nothing_does_not_end_the_body() -> None:
    # BUG: encode_chunk(b"") is b"0\r\n\r\n", the last-chunk marker: forwarding an
    # empty piece of body (an empty HTTP/2 DATA frame, a zero-length read) ends the
    # chunked body early, and the rest is read as a new message.
    parts = [
        encode_request_head(b"POST", b"/", [(b"Host", b"web")], Framing.CHUNKED),
        encode_chunk(b"ab"),
        encode_chunk(b""),
        encode_chunk(b"cd"),
        encode_last_chunk(),
    ]
    events, error = _try_parse_request(parts)
    assert error is None
    assert [e.target for e in events if isinstance(e, RequestHead)] == [b"/"]
    assert body_of(events) == b"abcd"
    assert len(ends(events)) == 1


def _try_parse_request(parts: list[bytes]) -> tuple[list, Exception | None]:
    reader = RequestReader()
    events: list = []
    try:
        for part in parts:
            events += reader.feed(part)
    except Exception as exc:  # noqa: BLE001 - the test reports what it got
        return normalise(events), exc
    return normalise(events), None


# --------------------------------------------------------------------------
# simple_response


@pytest.mark.parametrize("keep_alive", [True, False])
def test_simple_response_parses_back(keep_alive: bool) -> None:
    body = "no endpoints for service 'wéb'\n".encode()
    raw = simple_response(503, body, [(b"x-mesh-error", b"no-endpoints")], keep_alive=keep_alive)
    events = _parse_response(raw)
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert (head.status, head.reason) == (503, b"Service Unavailable")
    assert head.header(b"x-mesh-error") == b"no-endpoints"
    assert head.header(b"content-length") == b"%d" % len(body)
    assert head.header(b"content-type") == b"text/plain; charset=utf-8"
    assert head.keep_alive is keep_alive
    assert (head.header(b"connection") == b"close") is not keep_alive
    assert events[1:] == [Data(body), EndOfMessage([])]


def test_simple_response_empty_body() -> None:
    events = _parse_response(simple_response(204, b""))
    assert kinds(events) == ["ResponseHead", "EndOfMessage"]


# --------------------------------------------------------------------------
# strip_hop_by_hop


def test_strip_removes_every_hop_by_hop_header_case_insensitively() -> None:
    hop = [
        (b"CONNECTION", b"close"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"UPGRADE", b"websocket"),
    ]
    end_to_end = [(b"Host", b"web"), (b"Authorization", b"Bearer t"), (b"X-Sum", b"1"), (b"Accept", b"*/*")]
    mixed = [hop[0], end_to_end[0], *hop[1:5], end_to_end[1], *hop[5:], *end_to_end[2:]]
    assert strip_hop_by_hop(mixed) == end_to_end  # order of the rest kept


def test_strip_removes_headers_named_by_connection() -> None:
    hdrs = [
        (b"Connection", b" X-Foo ,x-bar,, "),
        (b"Connection", b"X-Baz"),
        (b"x-foo", b"1"),
        (b"X-BAR", b"2"),
        (b"x-baz", b"3"),
        (b"X-Foobar", b"kept"),
    ]
    assert strip_hop_by_hop(hdrs) == [(b"X-Foobar", b"kept")]


def test_strip_keeps_upgrade_only_when_asked() -> None:
    hdrs = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Host", b"web")]
    assert strip_hop_by_hop(hdrs) == [(b"Host", b"web")]
    assert strip_hop_by_hop(hdrs, keep_upgrade=True) == [(b"Upgrade", b"websocket"), (b"Host", b"web")]
    # keep_upgrade keeps Upgrade, nothing else hop-by-hop.
    more = [*hdrs, (b"Keep-Alive", b"1"), (b"TE", b"trailers")]
    assert strip_hop_by_hop(more, keep_upgrade=True) == [(b"Upgrade", b"websocket"), (b"Host", b"web")]


def test_strip_does_not_mutate_its_input() -> None:
    hdrs = [(b"Connection", b"x"), (b"x", b"1"), (b"y", b"2")]
    copy = list(hdrs)
    strip_hop_by_hop(hdrs)
    assert hdrs == copy


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*sorted(HOP_BY_HOP), b"x-a", b"x-b", b"host", b"X-A"]), header_value)))
def test_strip_result_has_no_hop_by_hop(hdrs: list) -> None:
    out = strip_hop_by_hop(hdrs)
    named = {t.strip().lower() for n, v in hdrs if n.lower() == b"connection" for t in v.split(b",")}
    assert all(n.lower() not in HOP_BY_HOP and n.lower() not in named for n, _ in out)
    assert out == [h for h in hdrs if h in out]  # a subsequence, in order


def test_trailer_is_end_to_end() -> None:
    """``Trailer`` announces trailer fields, which are relayed: it is not hop-by-hop (RFC 9110 6.6.2)."""
    hdrs = [(b"Trailer", b"grpc-status"), (b"TE", b"trailers"), (b"Content-Type", b"text/plain")]
    assert strip_hop_by_hop(hdrs) == [(b"Trailer", b"grpc-status"), (b"Content-Type", b"text/plain")]


# --------------------------------------------------------------------------
# HTTP/1.0 clients


def _request(version: bytes, connection: bytes | None = None) -> RequestHead:
    raw = b"GET / HTTP/" + version + b"\r\nHost: web\r\n"
    if connection is not None:
        raw += b"Connection: " + connection + b"\r\n"
    head = RequestReader().feed(raw + b"\r\n")[0]
    assert isinstance(head, RequestHead)
    return head


def test_http10_keep_alive_only_when_asked() -> None:
    assert _request(b"1.0", b"keep-alive").keep_alive
    assert not _request(b"1.0").keep_alive
    assert _request(b"1.1").keep_alive and not _request(b"1.1", b"close").keep_alive


@pytest.mark.parametrize("framing", list(Framing))
def test_response_framing_is_never_chunked_for_http10(framing: Framing) -> None:
    http11, http10 = response_framing(_request(b"1.1"), framing), response_framing(_request(b"1.0", b"keep-alive"), framing)
    assert http11 is (Framing.CHUNKED if framing is Framing.CLOSE else framing)
    assert http10 is (Framing.CLOSE if framing in (Framing.CHUNKED, Framing.CLOSE) else framing)


def test_http10_heads_say_keep_alive_or_close() -> None:
    kept = encode_response_head(200, b"", [(b"Content-Length", b"2")], Framing.LENGTH, True, http10=True)
    assert b"\r\nConnection: keep-alive\r\n" in kept
    closed = encode_response_head(200, b"", [], Framing.CLOSE, True, http10=True)
    assert b"Transfer-Encoding" not in closed and b"\r\nConnection: close\r\n" in closed
    assert b"Connection" not in encode_response_head(200, b"", [], Framing.CHUNKED, True)  # HTTP/1.1: implied
    error = simple_response(503, b"no\n", keep_alive=True, http10=True)
    assert b"\r\nConnection: keep-alive\r\n" in error


def test_complete_body_length() -> None:
    events = [Data(b"ab"), Data(b"cde"), EndOfMessage([(b"x", b"1")])]
    assert complete_body_length(events, 0) == 5
    assert complete_body_length(events[:2], 0) is None  # still streaming
    assert complete_body_length([ResponseHead(200, b"", [], b"1.1", True, Framing.CHUNKED, None), *events], 1) == 5
    assert complete_body_length([EndOfMessage()], 0) == 0
