"""HTTP/1.1 as a sans-IO state machine on top of httptools (llhttp).

``RequestReader`` and ``ResponseReader`` take bytes and give events; the
``encode_*`` functions turn heads back into bytes. Nothing here does I/O, so the
proxy's I/O loops stay small and this file is tested without sockets.

Bodies are never buffered: each ``feed`` returns the body bytes it saw as
``Data`` events, so the caller forwards them before reading more.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import httptools

from mesh.proxy.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100

Headers = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1, plus the proxy-era ones clients still send. ``Trailer`` is not among
# them: it announces end-to-end trailer fields (RFC 9110 section 6.6.2), and those are relayed.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",  # only ever meaningful with Upgrade: h2c, which is never forwarded
    }
)


_NEVER_HOP_BY_HOP = frozenset({b"content-length", b"host"})


class Framing(enum.Enum):
    """How a message's body ends."""

    NONE = "none"  # no body at all
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding
    CLOSE = "close"  # response body ends when the connection closes


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    headers: Headers
    http_version: bytes
    keep_alive: bool
    framing: Framing
    content_length: int | None
    upgrade: bool  # CONNECT or Upgrade: the connection stops being HTTP/1 after this

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: bytes
    headers: Headers
    http_version: bytes
    keep_alive: bool
    framing: Framing
    content_length: int | None

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True)
class Data:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    trailers: Headers = field(default_factory=list)


@dataclass(slots=True)
class Upgraded:
    """The HTTP/1 part is over; ``leftover`` bytes belong to the new protocol."""

    leftover: bytes


Event = RequestHead | ResponseHead | Data | EndOfMessage | Upgraded


def find_header(headers: Headers, name: bytes) -> bytes | None:
    """First value of ``name`` (lowercase) in ``headers``."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class _Reader:
    """What request and response parsing share: limits, headers, body, trailers."""

    _parser: Any  # httptools' request or response parser, set by the subclass

    __slots__ = (
        "_parser",
        "_events",
        "_headers",
        "_head_bytes",
        "_head_tail",
        "_field_bytes",
        "_in_body",
        "_in_head",
        "_trailers",
        "_upgraded",
        "_failed",
        "_framing",
    )

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._headers: Headers = []
        self._trailers: Headers = []
        self._head_bytes = 0  # bytes of the current head received in earlier reads
        self._head_tail = b""  # last bytes of the previous read: a CRLFCRLF may straddle two reads
        self._field_bytes = 0  # size of the fields so far (also bounds trailers and reason phrases)
        self._in_body = False
        self._in_head = False
        self._upgraded = False
        self._failed: ProtocolError | None = None  # an error held back behind complete messages
        self._framing = Framing.NONE

    # httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []
        self._trailers = []
        self._field_bytes = 0
        self._in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        # Headers after the head are chunked-body trailers, held to the same limits.
        fields = self._trailers if self._in_body else self._headers
        if len(fields) >= MAX_HEADERS:
            raise _HeadTooLarge(f"more than {MAX_HEADERS} {'trailers' if self._in_body else 'headers'}")
        size = self._field_bytes = self._field_bytes + len(name) + len(value) + 4  # _count_head_bytes, inlined
        if size > MAX_HEAD_BYTES:
            raise _HeadTooLarge(f"message head larger than {MAX_HEAD_BYTES // 1024} KiB")
        fields.append((name, value))

    def _count_head_bytes(self, size: int) -> None:
        self._field_bytes += size
        if self._field_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge(f"message head larger than {MAX_HEAD_BYTES // 1024} KiB")

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(body))

    def on_message_complete(self) -> None:
        self._events.append(EndOfMessage(self._trailers))
        self._in_body = False

    def _head_complete(self, framing: Framing) -> None:
        self._framing = framing
        self._in_head = False
        self._in_body = True
        self._head_bytes = 0
        self._head_tail = b""
        self._field_bytes = 0  # trailers get a budget of their own

    # helpers ----------------------------------------------------------------

    def _framing_of(self, headers: Headers, bodyless: bool) -> tuple[Framing, int | None]:
        if bodyless:
            return Framing.NONE, None
        length: int | None = None
        chunked = False
        for name, value in headers:
            size = len(name)  # compare only names of the right length (lower() per header shows)
            if size == 14 and name.lower() == b"content-length":
                length = int(value)  # llhttp already rejected non-digits and conflicts
            elif size == 17 and name.lower() == b"transfer-encoding":
                chunked = value.lower().rstrip().endswith(b"chunked")
        if chunked:
            return Framing.CHUNKED, None
        if length is not None:
            return (Framing.LENGTH if length else Framing.NONE), length
        return Framing.NONE, None

    def _check_head_size(self, data: bytes, side_error: type[ProtocolError], end: int) -> None:
        """Measure the head before llhttp sees it: the end of the head is the first CRLFCRLF
        (``end``, its offset in ``data`` or -1)."""
        if end < 0 and self._head_tail:
            joined = self._head_tail + data[:3]
            end = joined.find(b"\r\n\r\n")
            if end >= 0:
                end -= len(self._head_tail)
        if end >= 0:
            size = self._head_bytes + end + 4
        else:
            size = self._head_bytes = self._head_bytes + len(data)
            self._head_tail = (self._head_tail + data)[-3:]
        if size > MAX_HEAD_BYTES:
            raise side_error(f"message head larger than {MAX_HEAD_BYTES // 1024} KiB", status=431)

    def _feed(self, data: bytes, side_error: type[ProtocolError]) -> list[Event]:
        """Events of ``data``. A read that holds whole messages and then bytes that do not parse
        gives the whole messages first (each gets its answer); the error comes with the next feed."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._parse(data, side_error)
        except ProtocolError as exc:
            events, self._events = self._events, []
            last_end = max((i for i, e in enumerate(events) if isinstance(e, EndOfMessage)), default=-1)
            if last_end < 0:
                raise
            self._failed = exc
            return events[: last_end + 1]

    @property
    def failed(self) -> bool:
        """An error is held back: the next feed raises it."""
        return self._failed is not None

    def _parse(self, data: bytes, side_error: type[ProtocolError]) -> list[Event]:
        if self._upgraded:
            return [Data(data)] if data else []
        if not self._in_body:
            end = data.find(b"\r\n\r\n")
            # The common case inline: a whole head of a reasonable size within this read.
            if end < 0 or self._head_bytes or self._head_tail or end + 4 > MAX_HEAD_BYTES:
                self._check_head_size(data, side_error, end)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            if self._upgrade_declined():
                return self._parse(data[offset:], side_error)
            self._upgraded = True
            self._events.append(Upgraded(data[offset:]))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                raise side_error(str(cause), status=431) from None
            if isinstance(cause, (LocalProtocolError, RemoteProtocolError)):
                raise cause from None
            raise side_error(f"malformed HTTP/1 message ({exc})") from exc
        except httptools.HttpParserError as exc:
            raise side_error(f"malformed HTTP/1 message ({exc})") from None
        events, self._events = self._events, []
        return events

    def _upgrade_declined(self) -> bool:
        """True when the reader served an Upgrade as plain HTTP/1 and parsing goes on."""
        return False

    @property
    def in_body(self) -> bool:
        return self._in_body

    @property
    def in_head(self) -> bool:
        """Part of a head arrived and its end has not: the head deadline runs."""
        return self._in_head


class _HeadTooLarge(Exception):
    pass


_H2C_HEADERS = frozenset({b"upgrade", b"http2-settings"})


def _upgrades_only_to_h2c(headers: Headers) -> bool:
    offers = [
        token.strip().lower() for name, value in headers if name.lower() == b"upgrade" for token in value.split(b",")
    ]
    return bool(offers) and all(offer == b"h2c" for offer in offers)


class RequestReader(_Reader):
    """Parses requests arriving from a client (the server side of a connection).

    ``Upgrade: h2c`` is declined, as RFC 9113 lets a server do: the request is
    served as plain HTTP/1.1, without ``Upgrade`` and ``HTTP2-Settings``. (An h2c
    upgrade forwarded as a tunnel would carry HTTP/2 past the mesh's per-stream
    routing and hardening.)
    """

    __slots__ = ("_url", "_h2c_head", "_replaying")

    def __init__(self) -> None:
        super().__init__()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._h2c_head: bytes | None = None  # the declined upgrade's head, re-parsed without Upgrade
        self._replaying = False

    def on_message_begin(self) -> None:
        _Reader.on_message_begin(self)
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._count_head_bytes(len(url))
        self._url += url

    def on_headers_complete(self) -> None:
        parser = self._parser
        if self._replaying:
            self._head_complete(self._framing)
            return
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise RemoteProtocolError(f"HTTP/{version} is not supported", status=505)
        method = parser.get_method()
        headers = self._headers
        upgrade = parser.should_upgrade() or method == b"CONNECT"
        if upgrade and method != b"CONNECT" and _upgrades_only_to_h2c(headers):
            upgrade = False
            headers = [(k, v) for k, v in headers if k.lower() not in _H2C_HEADERS]
            self._h2c_head = b"%s %s HTTP/%s\r\n%s\r\n" % (
                method,
                self._url,
                version.encode(),
                b"".join(b"%s: %s\r\n" % field for field in headers),
            )
        framing, length = self._framing_of(headers, bodyless=upgrade)
        self._head_complete(framing)
        self._events.append(
            RequestHead(
                method, self._url, headers, version.encode(), parser.should_keep_alive(), framing, length, upgrade
            )
        )

    def on_message_complete(self) -> None:
        if self._h2c_head is not None:
            return  # httptools ends an Upgrade request at its head; the body is still to come
        _Reader.on_message_complete(self)

    def _upgrade_declined(self) -> bool:
        head = self._h2c_head
        if head is None:
            return False
        # A fresh parser is told the head again, without Upgrade, so it frames the body itself.
        self._h2c_head = None
        self._parser = httptools.HttpRequestParser(self)
        self._in_body = False
        self._replaying = True
        try:
            self._parser.feed_data(head)
        finally:
            self._replaying = False
        return True

    def feed(self, data: bytes) -> list[Event]:
        """Bytes from the client → events. Raises ``RemoteProtocolError`` (400/431/505)."""
        return self._feed(data, RemoteProtocolError)

    def __repr__(self) -> str:
        state = "upgraded" if self._upgraded else "body" if self._in_body else "head/idle"
        return f"<RequestReader {state}>"


class ResponseReader(_Reader):
    """Parses responses arriving from a server (the client side of a connection).

    Call ``expect(method)`` before each response so HEAD responses are read
    without a body.
    """

    __slots__ = ("_reason", "_head_request", "_close_delimited")

    def __init__(self) -> None:
        super().__init__()
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._head_request = False
        self._close_delimited = False

    def expect(self, method: bytes) -> None:
        self._head_request = method == b"HEAD"

    def on_message_begin(self) -> None:
        _Reader.on_message_begin(self)
        self._reason = b""

    def on_status(self, reason: bytes) -> None:
        self._count_head_bytes(len(reason))
        self._reason += reason

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        bodyless = self._head_request or status < 200 or status in (204, 304)
        framing, length = self._framing_of(self._headers, bodyless=bodyless)
        keep_alive = parser.should_keep_alive()
        if framing is Framing.NONE and not bodyless and length is None:
            framing = Framing.CLOSE
            keep_alive = False
        self._head_complete(framing)
        self._close_delimited = framing is Framing.CLOSE
        self._events.append(
            ResponseHead(
                status,
                self._reason,
                self._headers,
                parser.get_http_version().encode(),
                keep_alive,
                framing,
                length,
            )
        )
        if self._head_request and status >= 200:
            # llhttp cannot be told "no body follows" for HEAD; the response is
            # complete at its head, and the connection is not reused after it.
            self._events.append(EndOfMessage())
            self._in_body = False
            self._upgraded = True  # any further bytes are not part of this exchange

    def on_message_complete(self) -> None:
        if self._upgraded:
            return  # a HEAD response already ended at its head
        _Reader.on_message_complete(self)

    def feed(self, data: bytes) -> list[Event]:
        """Bytes from the server → events. Raises ``RemoteProtocolError``."""
        return self._feed(data, RemoteProtocolError)

    def feed_eof(self) -> list[Event]:
        """The server closed: ends a close-delimited body, else it is a truncation."""
        if self._in_body and self._close_delimited:
            self._close_delimited = False
            self._in_body = False
            return [EndOfMessage()]
        if self._in_body or self._head_bytes:
            raise RemoteProtocolError("upstream closed the connection in the middle of a response")
        return []

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request after this response."""
        return not self._upgraded

    def __repr__(self) -> str:
        state = "done" if self._upgraded else "body" if self._in_body else "head/idle"
        return f"<ResponseReader {state}>"


# --------------------------------------------------------------------------
# Writing


def strip_hop_by_hop(headers: Headers, keep_upgrade: bool = False) -> Headers:
    """Headers minus hop-by-hop ones (and those named in ``Connection``)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    # Connection may not remove what frames or routes the message (a smuggling vector).
    named -= _NEVER_HOP_BY_HOP
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named:
            if keep_upgrade and lname == b"upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    return out


def encode_request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    framing: Framing,
    upgrade: bool = False,
) -> bytes:
    """``headers`` carry Content-Length as received; chunked framing is added here."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    _append_headers(parts, headers)
    if framing is Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade and method != b"CONNECT":
        parts.append(b"Connection: upgrade\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_framing(request: RequestHead, framing: Framing) -> Framing:
    """How a response body that arrived with ``framing`` goes to the client that sent ``request``.

    An HTTP/1.1 client gets a chunked or close-delimited body chunked, so its connection survives.
    An HTTP/1.0 client never gets chunked (RFC 9112 section 6.1): close-delimited (or, when the
    whole body is in hand, length-delimited: ``complete_body_length``).
    """
    if framing is Framing.CHUNKED or framing is Framing.CLOSE:
        return Framing.CLOSE if request.http_version == b"1.0" else Framing.CHUNKED
    return framing


def complete_body_length(events: list[Event], start: int) -> int | None:
    """The body's length when all of it (up to its ``EndOfMessage``) is in ``events[start:]``, else None."""
    length = 0
    for index in range(start, len(events)):
        event = events[index]
        if isinstance(event, Data):
            length += len(event.data)
        elif isinstance(event, EndOfMessage):
            return length
        else:
            return None
    return None


def encode_response_head(
    status: int,
    reason: bytes,
    headers: Headers,
    framing: Framing,
    keep_alive: bool = True,
    upgrade: bool = False,
    http10: bool = False,
) -> bytes:
    """``framing`` is how the body goes out (``response_framing``): chunked adds the coding, close
    says ``Connection: close``. ``headers`` carry Content-Length as received (HEAD and 304 keep theirs).
    An HTTP/1.0 client's connection persists only when the response says ``Connection: keep-alive``
    (RFC 9112 appendix C.2.2)."""
    parts = [b"HTTP/1.1 ", str(status).encode(), b" ", reason or _REASONS.get(status, b"Unknown"), b"\r\n"]
    _append_headers(parts, headers)
    if framing is Framing.CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade:
        parts.append(b"Connection: upgrade\r\n")
    elif not keep_alive or framing is Framing.CLOSE:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _append_headers(parts: list[bytes], headers: Headers) -> None:
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")


def encode_chunk(data: bytes) -> bytes:
    # An empty chunk would be the last-chunk marker: encode nothing instead.
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def encode_last_chunk(trailers: Headers | None = None) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    parts = [b"0\r\n"]
    _append_headers(parts, trailers)
    parts.append(b"\r\n")
    return b"".join(parts)


def simple_response(
    status: int,
    body: bytes,
    headers: Headers | None = None,
    keep_alive: bool = True,
    http10: bool = False,
    head_request: bool = False,
) -> bytes:
    """A complete small response (mesh-made errors, admin pages); to HEAD, the head alone
    (with the Content-Length a GET would get, RFC 9110 section 9.3.2)."""
    all_headers: Headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
    ]
    if headers:
        all_headers += headers
    head = encode_response_head(status, b"", all_headers, Framing.LENGTH, keep_alive, http10=http10)
    return head if head_request else head + body


_REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")
