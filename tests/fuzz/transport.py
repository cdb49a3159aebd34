"""Talking to a door with bounded I/O, for both protocols: writes with pauses, reads with deadlines.

Every read has a timeout; an exchange ends when the door closes, when the protocol module says
everything asked for was answered (then a short grace for bytes that should not come), after
``QUIET`` seconds without a byte (``HARD_LIMIT`` while a message is half-way), or ``HARD_LIMIT``
seconds after the last write, whichever comes first.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from tests.fuzz.harness import Door, FrontDoors

QUIET = 0.5  # seconds without a byte: the door has said what it will say
GRACE = 0.05  # after the last expected answer: room for bytes that should not come
HARD_LIMIT = 3.0  # after the last write, whatever happens
MAX_PAUSES = 0.3  # total of the pauses between writes (slowloris-like, but bounded)
LINGER_ZERO = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on, 0 s}: close sends a reset


class Sink(Protocol):
    """What a protocol module reads the door's bytes into."""

    @property
    def closed(self) -> bool: ...

    def feed(self, data: bytes) -> None: ...

    def end(self, reset: bool) -> None: ...


def split_writes(data: bytes, cuts: tuple[int, ...], pauses_ms: tuple[int, ...]) -> list[tuple[float, bytes]]:
    """``data`` cut at ``cuts`` (taken modulo its length): (pause before, bytes) per write,
    the pauses together at most ``MAX_PAUSES``."""
    if not data:
        return []
    points = sorted({c % len(data) for c in cuts} - {0})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    pauses = [0.0] + [p / 1000 for p in pauses_ms]
    out, total = [], 0.0
    for i, piece in enumerate(pieces):
        pause = max(min(pauses[i] if i < len(pauses) else 0.0, MAX_PAUSES - total), 0.0)
        total += pause
        out.append((pause, piece))
    return out


def exchange(
    front: FrontDoors,
    door: Door,
    alpn: str,
    writes: list[tuple[float, bytes]],
    ending: str,
    sink: Sink,
    answered: Callable[[], bool],
    midway: Callable[[], bool] = lambda: False,
) -> bool:
    """Write (reading during the pauses), then end as ``ending`` says: ``read`` the answers,
    ``half-close`` and read, or ``abort`` (a reset, nothing read). Whether every byte went out."""
    sock = front.connect(door, alpn)
    sent_all = True
    try:
        for pause, piece in writes:
            if pause:
                receive_for(sock, sink, pause)
                if sink.closed:
                    sent_all = False
                    break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                sent_all = False
                break
        if ending == "abort":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            return sent_all
        if ending == "half-close" and sent_all:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        _read_answers(sock, sink, answered, midway)
        return sent_all
    finally:
        sock.close()


def receive(sock: socket.socket, sink: Sink, timeout: float) -> bool:
    """One read of at most ``timeout``; False when nothing came in that time."""
    sock.settimeout(max(timeout, 0.001))
    try:
        data = sock.recv(65536)
    except (TimeoutError, ssl.SSLWantReadError):
        return False
    except (ConnectionResetError, BrokenPipeError):
        sink.end(reset=True)
        return True
    except ssl.SSLError:  # the TLS stream broke: a close without close_notify
        sink.end(reset=True)
        return True
    if data:
        sink.feed(data)
    else:
        sink.end(reset=False)
    return True


def receive_for(sock: socket.socket, sink: Sink, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not sink.closed and (left := end - time.monotonic()) > 0:
        receive(sock, sink, left)


def _read_answers(sock: socket.socket, sink: Sink, answered: Callable[[], bool], midway: Callable[[], bool]) -> None:
    hard = time.monotonic() + HARD_LIMIT
    last_byte = time.monotonic()
    while not sink.closed:
        if answered():
            receive_for(sock, sink, GRACE)  # only unasked-for bytes (or a close) could follow
            return
        left = min(hard, last_byte + (HARD_LIMIT if midway() else QUIET)) - time.monotonic()
        if left <= 0:
            return
        if receive(sock, sink, left):
            last_byte = time.monotonic()
