"""What a received header block may hold (RFC 9113 8.2 and 8.3), as h2 checks it, in one pass.

The same accept/reject decisions and the same resulting fields as h2's
``normalize_inbound_headers`` + ``validate_headers`` (h2/utilities.py), which chain seven
generators per block: Cookie fields are joined at the end of the block first (RFC 9113
8.2.3), then every field is checked (lowercase, legal characters in names and values, no
surrounding whitespace, ``te`` only ``trailers``, no connection-specific fields, known
pseudo-headers first and once each), then the block (the pseudo-headers its kind needs,
``:authority`` and ``Host`` agreeing, a non-empty ``:path``). A name that passed the
name checks once is remembered (bounded): most blocks repeat the same few names.
"""

from __future__ import annotations

from h2.exceptions import ProtocolError
from hpack import NeverIndexedHeaderTuple

Header = tuple[bytes, bytes]

CONNECTION_HEADERS = frozenset([b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"])
_PSEUDO = frozenset([b":method", b":scheme", b":authority", b":path", b":status", b":protocol"])
_REQUEST_ONLY = frozenset([b":scheme", b":path", b":authority", b":method", b":protocol"])

# Names whose characters passed (lowercase, visible ASCII, no ':' but a leading one).
_GOOD_NAMES: set[bytes] = set()
_GOOD_NAMES_LIMIT = 4096


def join_cookies(headers: list[Header]) -> list[Header]:
    """h2's ``normalize_inbound_headers``: every ``cookie`` field joined with "; ", last, never indexed."""
    cookies = [value for name, value in headers if name == b"cookie"]
    if not cookies:
        return headers
    out = [header for header in headers if header[0] != b"cookie"]
    out.append(NeverIndexedHeaderTuple(b"cookie", b"; ".join(cookies)))
    return out


def _check_name(name: bytes) -> None:
    for c in name:
        if 65 <= c <= 90:
            raise ProtocolError(f"Received uppercase header name {name!r}.")
        if c <= 32 or c >= 127:
            raise ProtocolError(f"Illegal character '{chr(c)}' in header name: {name!r}")
    if name.find(b":", 1) != -1:
        raise ProtocolError(f"Illegal character ':' in header name: {name!r}")
    if not name:
        raise ProtocolError("Received header name with zero length.")
    if len(_GOOD_NAMES) >= _GOOD_NAMES_LIMIT:
        _GOOD_NAMES.clear()
    _GOOD_NAMES.add(name)


def validate(headers: list[Header], is_trailer: bool, is_response: bool) -> None:
    """Raise ProtocolError for a block h2 would refuse (``validate_headers``)."""
    request = not is_response and not is_trailer
    pseudo: set[bytes] = set()
    seen_regular = False
    method = authority = host = None
    good_names = _GOOD_NAMES
    for name, value in headers:
        if name not in good_names:
            _check_name(name)
        if value:
            if b"\x00" in value or b"\n" in value or b"\r" in value:
                bad = next(c for c in value if c in (0, 10, 13))
                raise ProtocolError(f"Illegal character '{chr(bad)}' in header value: {value!r}")
            if value[0] in (32, 9) or value[-1] in (32, 9):
                raise ProtocolError(f"Received header value surrounded by whitespace {value!r}")
        if name[0] == 58:  # ':'
            if name in pseudo:
                raise ProtocolError(f"Received duplicate pseudo-header field {name!r}")
            pseudo.add(name)
            if seen_regular:
                raise ProtocolError(f"Received pseudo-header field out of sequence: {name!r}")
            if name not in _PSEUDO:
                raise ProtocolError(f"Received custom pseudo-header field {name!r}")
            if name == b":method":
                method = value
            elif request:
                if name == b":authority":
                    authority = value
                elif name == b":path" and not value:
                    raise ProtocolError("An empty :path header is forbidden")
        else:
            seen_regular = True
            if name == b"te":
                if value.lower() != b"trailers":
                    raise ProtocolError(f"Invalid value for TE header: {value!r}")
            elif name in CONNECTION_HEADERS:
                raise ProtocolError(f"Connection-specific header field present: {name!r}.")
            elif name == b"host" and request:
                if host is not None:
                    raise ProtocolError("Request header block has multiple Host headers.")
                host = value
    if is_trailer:
        if pseudo:
            raise ProtocolError(f"Received pseudo-header in trailer {pseudo}")
        return
    if is_response:
        if b":status" not in pseudo:
            raise ProtocolError("Header block missing mandatory b':status' header")
        if pseudo & _REQUEST_ONLY:
            raise ProtocolError(f"Encountered request-only headers {pseudo & _REQUEST_ONLY}")
        return
    if b":method" not in pseudo:
        raise ProtocolError("Header block missing mandatory b':method' header")
    is_connect = method == b"CONNECT"
    if is_connect and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise ProtocolError("Ordinary CONNECT MUST NOT include :scheme or :path")
    else:
        if b":scheme" not in pseudo:
            raise ProtocolError("Header block missing mandatory b':scheme' header")
        if b":path" not in pseudo:
            raise ProtocolError("Header block missing mandatory b':path' header")
    if b":status" in pseudo:
        raise ProtocolError("Encountered response-only headers {b':status'}")
    if not is_connect and b":protocol" in pseudo:
        raise ProtocolError("Encountered connect-request-only headers {b':protocol'}")
    if authority is None and host is None:
        raise ProtocolError("Request header block does not have an :authority or Host header.")
    if authority is not None and host is not None and authority != host:
        raise ProtocolError(
            f"Request header block has mismatched :authority and Host headers: {authority!r} / {host!r}"
        )
