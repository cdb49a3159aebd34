"""One client stream of the HTTP/2 proxy loop: what it queued, what it sent, and the headers it may pass on."""

from __future__ import annotations

import logging

import trio
from hpack import NeverIndexedHeaderTuple

from mesh.proxy._h2_transport import (
    Body,
    Headers,
    StreamEvent,
    StreamQueue,
)
from mesh.proxy.protocol.http1 import HOP_BY_HOP

log = logging.getLogger("mesh.proxy")

REPLAY_LIMIT = 64 * 1024  # request bytes kept for a replay after REFUSED_STREAM (or a retry)

_SECRET = frozenset({b"authorization", b"proxy-authorization"})
_STRIP = HOP_BY_HOP | {b"host", b"http2-settings"}


def clean_headers(headers: Headers) -> Headers:
    """Regular headers minus hop-by-hop and ``connection``-named ones; ``te: trailers`` kept."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(t.strip().lower() for t in value.split(b","))
    out: Headers = []
    for field in headers:
        name, value = field
        if name.startswith(b":"):
            continue
        if name == b"te":
            if value.strip().lower() == b"trailers":
                out.append((b"te", b"trailers"))
            continue
        if name in _STRIP or name in named:
            continue
        if name in _SECRET or (name == b"cookie" and len(value) < 20):
            # Never HPACK-indexed on a connection shared by many callers (RFC 7541 7.1.3), as h2
            # would mark them if its outbound normalisation were on.
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append(field)  # keeps the sender's never-indexed marking
    return out


class ClientStream:
    """One client stream: its events, its task's scope, and what was forwarded of its request."""

    __slots__ = (
        "id",
        "headers",
        "queue",
        "scope",
        "reset_code",
        "done",
        "sent",
        "sent_bytes",
        "request_ended",
        "received",
    )

    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.id = stream_id
        self.headers = headers
        self.queue = StreamQueue()
        self.scope = trio.CancelScope()
        self.reset_code: int | None = None
        self.done = False
        # What was forwarded of the request, for a replay (REFUSED_STREAM) or a retry; None once too big.
        self.sent: list[StreamEvent] | None = []
        self.sent_bytes = 0
        self.request_ended = False  # the whole request (END_STREAM included) was handed to h2
        self.received = 0  # request DATA bytes from the client

    def __repr__(self) -> str:
        reset = " reset" if self.reset_code is not None else ""
        return f"<ClientStream {self.id} queued={len(self.queue.items)} kept={self.sent_bytes}{reset}>"

    @property
    def replayable(self) -> bool:
        """The whole request was forwarded and kept: it can be sent again."""
        return self.request_ended and self.sent is not None

    def remember(self, item: StreamEvent) -> None:
        if self.sent is None:
            return
        if isinstance(item, Body):
            self.sent_bytes += len(item.data)
            if self.sent_bytes > REPLAY_LIMIT:
                self.sent = None
                return
        self.sent.append(item)

    def requeue(self) -> None:
        """Put what was forwarded back in front of the queue, for the next attempt."""
        assert self.sent is not None
        self.queue.items.extendleft(reversed(self.sent))
        self.sent = []
        self.sent_bytes = 0
        self.request_ended = False
