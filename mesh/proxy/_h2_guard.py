"""What a client may make an HTTP/2 connection do for free, and what ends it (sans-IO).

docs/security.md ("HTTP/2 budgets") lists every number and why. Two budgets per
client-facing connection, for apps and peer proxies alike:

- resets: the client's RST_STREAMs and the ones the proxy sends because of what the
  client did (h2's answers to frames on closed streams, REFUSED_STREAM beyond the
  stream limit) — Rapid Reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671);
- frames that cost work and carry nothing: empty DATA, PING, PRIORITY, SETTINGS,
  unknown types, GOAWAYs (CVE-2019-9512/9516/9518).

Exhausting one ends the connection with GOAWAY(ENHANCE_YOUR_CALM). ``ServerConnection``
is h2's state machine where RFC 9113 asks for less than h2 does, counting what h2
answers on its own so that ``Guard`` can charge it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import h2.events
import h2.exceptions
from h2.stream import StreamClosedBy
from hyperframe.frame import RstStreamFrame

from mesh.proxy._h2_transport import MAX_CONCURRENT_STREAMS, Connection
from mesh.proxy._policy import TokenBucket

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
      h2 answered each DATA frame with one more RST_STREAM.
    - Every other RST_STREAM that h2 sends of its own accord (frames after the client's own reset
      or after its END_STREAM: MadeYouReset) is counted in ``resets_answered``, so the proxy charges
      it to the reset budget like the client's own resets. The first such reset of a stream is also
      reported as a ``StreamReset`` event (``remote_reset`` False) and counted there instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.over_limit: set[int] = set()
        self.resets_answered = 0
        self.idle_frames = 0  # frames on streams we reset, that carry nothing: the idle-frame budget's
        self._lift_limit = False

    @property
    def open_inbound_streams(self) -> int:
        count: int = super().open_inbound_streams  # also forgets closed streams: always computed
        return 0 if self._lift_limit else count

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            if frame.stream_id <= self.highest_inbound_stream_id:
                raise
        # h2 refused before decoding the header block, so the HPACK state is untouched: receive it
        # again with the limit lifted, as a stream to refuse.
        self.over_limit.add(frame.stream_id)
        self._lift_limit = True
        try:
            return super()._receive_headers_frame(frame)
        finally:
            self._lift_limit = False

    def _handle_data_on_closed_stream(self, events: list[Any], exc: Any, frame: Any) -> tuple[list[Any], list[Any]]:
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if exc._events:
            return frames, events  # the stream's first error reset: reported as a StreamReset event
        if self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM:
            if not frame.flow_controlled_length and "END_STREAM" not in frame.flags:
                self.idle_frames += 1  # an upload's last (empty) frame after an early answer is not
            return [f for f in frames if not isinstance(f, RstStreamFrame)], events
        self.resets_answered += 1
        return frames, events

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:
        # h2 asks this of a stream that got a frame after it closed, and answers RST_STREAM when true.
        closed_by = self._stream_closed_by(stream_id)
        if closed_by is StreamClosedBy.RECV_RST_STREAM:
            self.resets_answered += 1
            return True
        if closed_by is StreamClosedBy.SEND_RST_STREAM:
            self.idle_frames += 1  # in flight when we reset it (answered by h2, harmless), or a flood
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
        """Charge what h2 answered on its own in the last read: RST_STREAMs, ignored frames."""
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
