"""Protocol detection from the first bytes a client sends (sans-IO)."""

from __future__ import annotations

import enum
import re

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# A request line is a method token, a space, a target, a space and "HTTP/" (RFC 9112 3). Clients
# send upper-case methods: those are HTTP at the first space. Any other token (RFC 9110 5.6.2 allows
# lower case, digits, "-", "!"…) is HTTP once the first line says so: lenient servers accept such
# methods, so "body-xxDELETE * HTTP/1.1" must never pass as opaque bytes.
_UPPER_METHOD = re.compile(rb"[A-Z][A-Z-]{0,19} ")
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(_TOKEN + rb" [^ \r\n]+ HTTP/")
# What may still become a request line: a token, then a target, then the start of "HTTP/".
_PARTIAL_LINE = re.compile(_TOKEN + rb"( [^ \r\n]*( (H(T(T(P/?)?)?)?)?)?)?")
_MAX_LINE = 8192
_MAX_BLANK = 8


class Protocol(enum.Enum):
    HTTP1 = "http/1.1"
    HTTP2 = "h2"
    OPAQUE = "opaque"


class Mode(enum.Enum):
    """How a listener treats the first bytes of a connection (from the declared protocol)."""

    HTTP = "http"  # HTTP/1 or the HTTP/2 preface, nothing else: silence gets 408, other bytes 400
    OPAQUE = "opaque"  # declared tcp: relay bytes at once, no detection
    AUTO = "auto"  # detect; a client silent from the start means server-speaks-first: opaque


def listener_mode(protocol: str) -> Mode:
    """The mode for a declared protocol (``mesh.config.APP_PROTOCOLS``); unknown values detect."""
    if protocol == "tcp":
        return Mode.OPAQUE
    if protocol in ("http", "http2", "grpc"):
        return Mode.HTTP
    return Mode.AUTO


def detect(prefix: bytes) -> Protocol | None:
    """The protocol ``prefix`` starts, or None while more bytes could still change the answer.

    Empty lines before a request line are HTTP/1 (RFC 9112 section 2.2 lets servers skip
    them, and apps do): "\r\nGET / ..." must not pass as opaque bytes.
    """
    stripped = prefix.lstrip(b"\r\n")
    if not stripped:
        # Blank lines only: HTTP/1 once there are more than a client would send by mistake
        # (the parser then judges them); never an unbounded wait.
        return Protocol.HTTP1 if len(prefix) > _MAX_BLANK else None
    prefix = stripped
    if H2_PREFACE.startswith(prefix[: len(H2_PREFACE)]):
        if len(prefix) >= len(H2_PREFACE):
            return Protocol.HTTP2
        # "PRI" is also a possible HTTP/1 method prefix; wait for the whole preface.
        return None
    if _UPPER_METHOD.match(prefix):
        return Protocol.HTTP1
    end = prefix.find(b"\n")
    line = prefix if end < 0 else prefix[:end]
    if _REQUEST_LINE.match(line):
        return Protocol.HTTP1
    if end < 0 and len(prefix) < _MAX_LINE and _PARTIAL_LINE.fullmatch(prefix):
        return None  # still reading what could become a request line
    return Protocol.OPAQUE
