"""Protocol detection from the first bytes a client sends (sans-IO)."""

from __future__ import annotations

import enum
import re

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# A request line starts with a method token and a space. Methods are tokens
# (RFC 9110 5.6.2); we accept upper-case ones, which is what clients send.
_METHOD = re.compile(rb"[A-Z][A-Z-]{0,19} ")
_MAX_METHOD = 21


class Protocol(enum.Enum):
    HTTP1 = "http/1.1"
    HTTP2 = "h2"
    OPAQUE = "opaque"


def detect(prefix: bytes) -> Protocol | None:
    """The protocol ``prefix`` starts, or None while more bytes could still change the answer."""
    if not prefix:
        return None
    if H2_PREFACE.startswith(prefix[: len(H2_PREFACE)]):
        if len(prefix) >= len(H2_PREFACE):
            return Protocol.HTTP2
        # "PRI" is also a possible HTTP/1 method prefix; wait for the whole preface.
        return None
    if _METHOD.match(prefix):
        return Protocol.HTTP1
    # Still reading an upper-case token that could become a method.
    head = prefix[:_MAX_METHOD]
    if len(head) < _MAX_METHOD and re.fullmatch(rb"[A-Z][A-Z-]*", head):
        return None
    return Protocol.OPAQUE
