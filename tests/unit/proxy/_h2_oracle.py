"""h2 as the proxy used it before it had its own codec: the oracle of tests/unit/proxy/test_h2_codec.py.

``OracleConnection`` is ``h2.connection.H2Connection`` with a graceful GOAWAY that leaves the
connection usable for the streams it covers; ``OracleServerConnection`` adds what the proxy's
client-facing side changes (streams beyond the limit refused, frames after our own reset
ignored, the resets h2 answers counted). These are the classes mesh/proxy/_h2_transport.py and
_h2_guard.py had, line for line in behaviour.
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy
from hyperframe.frame import RstStreamFrame


class OracleConnection(h2.connection.H2Connection):
    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        if frame.error_code != ErrorCodes.NO_ERROR:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class OracleServerConnection(OracleConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.over_limit: set[int] = set()
        self.resets_answered = 0
        self.idle_frames = 0
        self._lift_limit = False

    @property
    def open_inbound_streams(self) -> int:
        count: int = super().open_inbound_streams
        return 0 if self._lift_limit else count

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[h2.events.Event]]:
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            if frame.stream_id <= self.highest_inbound_stream_id:
                raise
        self.over_limit.add(frame.stream_id)
        self._lift_limit = True
        try:
            return super()._receive_headers_frame(frame)
        finally:
            self._lift_limit = False

    def _handle_data_on_closed_stream(self, events: list[Any], exc: Any, frame: Any) -> tuple[list[Any], list[Any]]:
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if exc._events:
            return frames, events
        if self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM:
            if not frame.flow_controlled_length and "END_STREAM" not in frame.flags:
                self.idle_frames += 1
            return [f for f in frames if not isinstance(f, RstStreamFrame)], events
        self.resets_answered += 1
        return frames, events

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:
        closed_by = self._stream_closed_by(stream_id)
        if closed_by is StreamClosedBy.RECV_RST_STREAM:
            self.resets_answered += 1
            return True
        if closed_by is StreamClosedBy.SEND_RST_STREAM:
            self.idle_frames += 1
            return True
        return False
