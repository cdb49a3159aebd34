"""The HTTP/2 frame layer's constants and the one body the codec parses apart (RFC 9113 4 and 6).

Frames are read in ``_connection.py`` straight from the received bytes; what hyperframe would
refuse is refused here with h2's exceptions (``FrameDataMissingError`` is FRAME_SIZE_ERROR).
"""

from __future__ import annotations

import struct

from h2.exceptions import FrameDataMissingError, ProtocolError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6; ALTSVC: RFC 7838).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION, ALTSVC = range(
    11
)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

HAS_STREAM, NO_STREAM, EITHER = 1, 2, 3
ASSOCIATION = (
    HAS_STREAM,  # DATA
    HAS_STREAM,  # HEADERS
    HAS_STREAM,  # PRIORITY
    HAS_STREAM,  # RST_STREAM
    NO_STREAM,  # SETTINGS
    HAS_STREAM,  # PUSH_PROMISE
    NO_STREAM,  # PING
    NO_STREAM,  # GOAWAY
    EITHER,  # WINDOW_UPDATE
    HAS_STREAM,  # CONTINUATION
    EITHER,  # ALTSVC
)
FRAME_NAMES = (
    "DataFrame",
    "HeadersFrame",
    "PriorityFrame",
    "RstStreamFrame",
    "SettingsFrame",
    "PushPromiseFrame",
    "PingFrame",
    "GoAwayFrame",
    "WindowUpdateFrame",
    "ContinuationFrame",
    "AltSvcFrame",
)
CONTINUATION_BACKLOG = 64  # frames in one header block, as h2's frame buffer allows

FRAME_HEADER = struct.Struct(">HBBBL")  # length (24 bits, split), type, flags, stream id
U32 = struct.Struct(">L")
U32_U8 = struct.Struct(">LB")
U16_U32 = struct.Struct(">HL")
U32_U32 = struct.Struct(">LL")
U16 = struct.Struct(">H")


def parse_header_block_frame(
    frame_type: int, flags: int, body: bytes
) -> tuple[bytes, tuple[int, int, bool], int | None]:
    """A HEADERS or PUSH_PROMISE frame's fragment, priority and promised stream, as hyperframe parses them."""
    start = 0
    pad = 0
    if flags & PADDED:
        if not body:
            raise FrameDataMissingError("Frame data missing or invalid")
        pad = body[0]
        start = 1
    if frame_type == PUSH_PROMISE:
        if len(body) < start + 4:
            raise FrameDataMissingError("Frame data missing or invalid")
        promised = U32.unpack_from(body, start)[0]
        fragment = body[start + 4 : len(body) - pad]
        if promised == 0 or promised % 2 != 0:
            raise ProtocolError("Received frame with non-compliant data")
        if pad and pad >= len(body):
            raise ProtocolError("Received frame with invalid padding.")
        return fragment, (0, 0, False), promised
    priority = (0, 0, False)
    rest = len(body) - start  # hyperframe's body_len: what follows the pad length
    if flags & PRIORITY_FLAG:
        if rest < 5:
            raise FrameDataMissingError("Frame data missing or invalid")
        depends_on, weight = U32_U8.unpack_from(body, start)
        priority = (depends_on & 0x7FFFFFFF, weight, bool(depends_on >> 31))
        fragment = body[start + 5 : len(body) - pad]
    else:
        fragment = body[start : len(body) - pad]
    if pad and pad >= rest:
        raise ProtocolError("Received frame with invalid padding.")
    return fragment, priority, None
