"""Helpers for the HTTP/1 reader tests: feeding, splitting, normalising events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import Data, EndOfMessage, Event, RequestReader, ResponseReader, Upgraded


def pieces(message: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``message`` cut at the (sorted, deduplicated) offsets ``cuts``."""
    points = sorted({c for c in cuts if 0 < c < len(message)})
    out, start = [], 0
    for point in points:
        out.append(message[start:point])
        start = point
    out.append(message[start:])
    return out


def bytewise(message: bytes) -> list[bytes]:
    return [message[i : i + 1] for i in range(len(message))]


def feed_all(reader: RequestReader | ResponseReader, chunks: Sequence[bytes], eof: bool = False) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += reader.feed(chunk)
    if eof:
        assert isinstance(reader, ResponseReader)
        events += reader.feed_eof()
    return events


def outcome(
    reader: RequestReader | ResponseReader, chunks: Sequence[bytes], eof: bool = False
) -> tuple[list[Event], int | None]:
    """(normalised events seen, error status or None); events before an error are kept."""
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += reader.feed(chunk)
        if eof:
            assert isinstance(reader, ResponseReader)
            events += reader.feed_eof()
    except RemoteProtocolError as exc:
        return normalise(events), exc.status
    return normalise(events), None


def normalise(events: Sequence[Event]) -> list[Event]:
    """Events with the split-dependent parts merged away.

    Consecutive ``Data`` are joined (a body may arrive in any number of pieces),
    and the bytes after ``Upgraded`` (its leftover plus any later ``Data``) are
    folded into one ``Upgraded``. Empty ``Data`` events are kept as they are a
    bug of their own (an empty chunk ends a chunked body).
    """
    out: list[Event] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Upgraded):
            out[-1] = Upgraded(out[-1].leftover + event.data)
        elif isinstance(event, Data) and event.data and out and isinstance(out[-1], Data) and out[-1].data:
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def body_of(events: Sequence[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def kinds(events: Sequence[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def ends(events: Sequence[Event]) -> list[EndOfMessage]:
    return [e for e in events if isinstance(e, EndOfMessage)]
