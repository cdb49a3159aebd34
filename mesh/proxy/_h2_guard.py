"""What a client may make an HTTP/2 connection do for free, and what ends it (sans-IO).

docs/security.md ("HTTP/2 budgets") lists every number and why. Two budgets per
client-facing connection, for apps and peer proxies alike:

- resets: the client's RST_STREAMs and the ones the proxy sends because of what the
  client did (the codec's answers to frames on closed streams, REFUSED_STREAM beyond the
  stream limit) — Rapid Reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671);
- frames that cost work and carry nothing: empty DATA, PING, PRIORITY, SETTINGS,
  unknown types, GOAWAYs (CVE-2019-9512/9516/9518).

Exhausting one ends the connection with GOAWAY(ENHANCE_YOUR_CALM). ``ServerConnection``
is the proxy's HTTP/2 codec (``mesh/proxy/protocol/http2``) where RFC 9113 asks for less
than h2 does, counting what the codec answers on its own so that ``Guard`` can charge it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import h2.events
from h2.config import H2Configuration
from h2.exceptions import StreamClosedError

from mesh.proxy._h2_transport import MAX_CONCURRENT_STREAMS
from mesh.proxy._policy import TokenBucket
from mesh.proxy.protocol.http2 import RECV_RST_STREAM, SEND_RST_STREAM, Connection

# Streams that end by a reset, per connection. What bounds the work is the stream limit (a reset
# stream holds its slot until its task has ended); the budget ends connections that do little else
# than reset. A client may cancel every stream it has, twice, then 100 a second (gRPC hedging and
# fan-out cancel the losers). A peer proxy gets the same budget: it multiplexes the cancels of many
# callers onto one connection, so the sending side (H2Upstream) spreads its streams over
# connections that can each afford to reset them all.
RESET_BURST = 2 * MAX_CONCURRENT_STREAMS
RESET_RATE = 100.0  # per second
IDLE_FRAME_BURST = 1000
IDLE_FRAME_RATE = 100.0  # per second

# Frames that carry nothing a stream needs (each costs a budget token).
IDLE_EVENTS = (
    h2.events.PingReceived,
    h2.events.PriorityUpdated,
    h2.events.RemoteSettingsChanged,
    h2.events.UnknownFrameReceived,
)


class ServerConnection(Connection):
    """The client-facing side of a connection, where RFC 9113 asks for less than h2 does.

    - HEADERS that open a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS (legal before the client
      has seen our SETTINGS) are a stream error (section 5.1.2), not a connection error: the
      stream is opened and listed in ``over_limit``, and the proxy refuses it (REFUSED_STREAM,
      which clients retry safely).
    - Frames still in flight on a stream after we reset it are ignored (section 5.1, "closed");
      h2 answers each DATA frame with one more RST_STREAM.
    - Every other RST_STREAM that the codec sends of its own accord (frames after the client's own
      reset or after its END_STREAM: MadeYouReset) is counted in ``resets_answered``, so the proxy
      charges it to the reset budget like the client's own resets. The first such reset of a
      stream is also reported as a ``StreamReset`` event (``remote_reset`` False) and counted there.
    """

    def __init__(self, config: H2Configuration, encoder: Any = None) -> None:
        super().__init__(config, encoder)
        self.over_limit: set[int] = set()
        self.resets_answered = 0
        self.idle_frames = 0  # frames on streams we reset, that carry nothing: the idle-frame budget's

    def _too_many_inbound(self, stream_id: int, count: int, limit: int) -> None:
        if stream_id <= self.highest_inbound_stream_id:
            super()._too_many_inbound(stream_id, count, limit)
        self.over_limit.add(stream_id)  # decoded and opened as usual (the HPACK state stays in step)

    def _data_on_closed_stream(self, exc: StreamClosedError, flow: int, end_stream: bool, events: list[Any]) -> None:
        if exc._events:
            super()._data_on_closed_stream(exc, flow, end_stream, events)  # the stream's first error reset
        elif self._stream_closed_by(exc.stream_id) is SEND_RST_STREAM:
            if not flow and not end_stream:
                self.idle_frames += 1  # an upload's last (empty) frame after an early answer is not
            increment = self._window.process(flow)  # its bytes count for the connection, no RST_STREAM
            if increment:
                self._emit_window_update(0, increment)
        else:
            self.resets_answered += 1
            super()._data_on_closed_stream(exc, flow, end_stream, events)

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:
        # Asked of a stream that got a frame after it closed; RST_STREAM is answered when true.
        closed_by = self._stream_closed_by(stream_id)
        if closed_by is RECV_RST_STREAM:
            self.resets_answered += 1
            return True
        if closed_by is SEND_RST_STREAM:
            self.idle_frames += 1  # in flight when we reset it (answered, harmless), or a flood
            return True
        return False


class Guard:
    """The budgets of one client-facing connection. Each charge returns why the connection
    must end (a sentence about the client), or None while it is within budget."""

    __slots__ = ("_resets", "_idle_frames", "spent")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._resets = TokenBucket(RESET_RATE, RESET_BURST, clock=clock)
        self._idle_frames = TokenBucket(IDLE_FRAME_RATE, IDLE_FRAME_BURST, clock=clock)
        self.spent = False  # a budget ran out: nothing more is charged (the connection is ending)

    def reset(self, why: str) -> str | None:
        return self._charge(self._resets, 1, why)

    def idle_frame(self, what: str) -> str | None:
        return self._charge(self._idle_frames, 1, f"sent a flood of frames that carry nothing ({what})")

    def answered(self, conn: ServerConnection) -> str | None:
        """Charge what the codec answered on its own in the last read: RST_STREAMs, ignored frames."""
        resets, idle, conn.resets_answered, conn.idle_frames = conn.resets_answered, conn.idle_frames, 0, 0
        why = self._charge(
            self._resets, resets, "sent frames on closed streams, each answered with RST_STREAM (MadeYouReset)"
        )
        if why is None:
            why = self._charge(self._idle_frames, idle, "sent a flood of frames on streams it had been told were reset")
        return why

    def _charge(self, bucket: TokenBucket, count: int, why: str) -> str | None:
        if self.spent or not count or bucket.take(count):
            return None
        self.spent = True
        return why

    def __repr__(self) -> str:
        spent = " spent" if self.spent else ""
        return f"<Guard resets={self._resets.level():.0f} idle-frames={self._idle_frames.level():.0f}{spent}>"
