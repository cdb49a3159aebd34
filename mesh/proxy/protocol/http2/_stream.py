"""One HTTP/2 stream's state (RFC 9113 5.1) and windows, with h2's transitions and errors.

h2 runs every input through a table of ``(state, input) -> (side effect, state)`` and
builds an event object even for what it sends. Here each input is a method with the
same outcomes (tests/unit/proxy/test_h2_codec.py runs both): what h2 allows is allowed,
what it refuses raises the same exception, and an input with no transition closes the
stream and raises ``ProtocolError``, as h2's does.
"""

from __future__ import annotations

import h2.events
from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, InvalidBodyLengthError, ProtocolError, StreamClosedError
from h2.stream import StreamClosedBy

# States, numbered as h2.stream.StreamState.
IDLE = 0
RESERVED_REMOTE = 1
RESERVED_LOCAL = 2
OPEN = 3
HALF_CLOSED_REMOTE = 4
HALF_CLOSED_LOCAL = 5
CLOSED = 6
STATE_NAMES = ("IDLE", "RESERVED_REMOTE", "RESERVED_LOCAL", "OPEN", "HALF_CLOSED_REMOTE", "HALF_CLOSED_LOCAL", "CLOSED")

# How a stream was closed: h2's values, so that what the proxy remembers compares with h2's.
SEND_END_STREAM = StreamClosedBy.SEND_END_STREAM
RECV_END_STREAM = StreamClosedBy.RECV_END_STREAM
SEND_RST_STREAM = StreamClosedBy.SEND_RST_STREAM
RECV_RST_STREAM = StreamClosedBy.RECV_RST_STREAM

LARGEST_WINDOW = 2**31 - 1
HeadersEvent = (
    h2.events.RequestReceived
    | h2.events.ResponseReceived
    | h2.events.TrailersReceived
    | h2.events.InformationalResponseReceived
)
_COUNTS_AS_OPEN = (False, False, False, True, True, True, False)


class Window:
    """The window we give the peer (h2.windows.WindowManager): what it may still send, and
    when acknowledged data is worth a WINDOW_UPDATE (half the window, or the window empty)."""

    __slots__ = ("max_size", "size", "processed")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = max_size
        self.processed = 0

    def consumed(self, size: int) -> None:
        self.size -= size
        if self.size < 0:
            raise FlowControlError("Flow control window shrunk below 0")

    def opened(self, size: int) -> None:
        self.size += size
        if self.size > LARGEST_WINDOW:
            raise FlowControlError(f"Flow control window mustn't exceed {LARGEST_WINDOW}")
        if self.size > self.max_size:
            self.max_size = self.size

    def process(self, size: int) -> int:
        """``size`` bytes were acknowledged: the increment to send now (0: not yet)."""
        processed = self.processed = self.processed + size
        if not processed:
            return 0
        if (self.size == 0 and processed > min(1024, self.max_size // 4)) or processed >= self.max_size // 2:
            increment = min(processed, self.max_size - self.size)
            self.processed = 0
            self.size += increment
            return increment
        return 0


def grow(window: int, increment: int) -> int:
    window += increment
    if window > LARGEST_WINDOW:
        raise FlowControlError(f"May not increment flow control window past {LARGEST_WINDOW}")
    return window


class Stream:
    __slots__ = (
        "stream_id",
        "state",
        "closed_by",
        "client",
        "headers_sent",
        "trailers_sent",
        "headers_received",
        "trailers_received",
        "outbound_flow_control_window",
        "window",
        "expected_length",
        "received_length",
        "request_method",
        "authority",
    )

    def __init__(self, stream_id: int, inbound_window: int, outbound_window: int) -> None:
        self.stream_id = stream_id
        self.state = IDLE
        self.closed_by: StreamClosedBy | None = None
        self.client: bool | None = None  # we opened it (None until the first HEADERS either way)
        self.headers_sent = False
        self.trailers_sent = False
        self.headers_received = False
        self.trailers_received = False
        self.outbound_flow_control_window = outbound_window
        self.window = Window(inbound_window)
        self.expected_length: int | None = None  # content-length of what we receive
        self.received_length = 0
        self.request_method: bytes | None = None  # of the last header block we sent (as h2)
        self.authority: bytes | None = None

    def __repr__(self) -> str:
        return f"<Stream id:{self.stream_id} state:{STATE_NAMES[self.state]}>"

    @property
    def open(self) -> bool:
        return _COUNTS_AS_OPEN[self.state]

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    @property
    def inbound_flow_control_window(self) -> int:
        return self.window.size

    def invalid(self, what: str) -> ProtocolError:
        """No transition for this input: the stream closes (h2's state machine does the same)."""
        old = self.state
        self.state = CLOSED
        return ProtocolError(f"Invalid input {what} in state {STATE_NAMES[old]}")

    def closed_error(self) -> StreamClosedError:
        return StreamClosedError(self.stream_id)

    def reset_on_error(self) -> StreamClosedError:
        """A frame the stream's state forbids (RFC 9113 5.1): we reset it (STREAM_CLOSED)."""
        self.state = CLOSED
        self.closed_by = SEND_RST_STREAM
        error = StreamClosedError(self.stream_id)
        error._events = [
            h2.events.StreamReset(stream_id=self.stream_id, error_code=ErrorCodes.STREAM_CLOSED, remote_reset=False)
        ]
        return error

    # -- sending ------------------------------------------------------------------

    def send_headers(self, informational: bool) -> None:
        """The state change for a header block we send (a request, a response, or trailers)."""
        state = self.state
        if informational:
            if state not in (OPEN, HALF_CLOSED_REMOTE):
                raise self.invalid("SEND_INFORMATIONAL_HEADERS")
            if self.headers_sent:
                self.state = CLOSED
                raise ProtocolError("Information response after final response")
            return
        if state == IDLE:
            self.state = OPEN
            self.client = True
            self.headers_sent = True
            return
        if state in (OPEN, HALF_CLOSED_REMOTE, RESERVED_LOCAL):
            if state == RESERVED_LOCAL:
                self.state = HALF_CLOSED_REMOTE
            if not self.headers_sent:
                if self.client is not False:
                    self.state = CLOSED
                    raise ProtocolError("Client cannot send responses.")
                self.headers_sent = True
                return
            if self.trailers_sent:
                self.state = CLOSED
                raise ProtocolError("Trailers were already sent on this stream.")
            self.trailers_sent = True
            return
        if state == CLOSED:
            raise self.closed_error()
        raise self.invalid("SEND_HEADERS")

    def send_data(self) -> None:
        state = self.state
        if state == OPEN or state == HALF_CLOSED_REMOTE:
            return
        if state == CLOSED:
            raise self.closed_error()
        raise self.invalid("SEND_DATA")

    def send_end_stream(self) -> None:
        state = self.state
        if state == OPEN:
            self.state = HALF_CLOSED_LOCAL
        elif state == HALF_CLOSED_REMOTE:
            self.state = CLOSED
            self.closed_by = SEND_END_STREAM
        elif state == CLOSED:
            raise self.closed_error()
        else:
            raise self.invalid("SEND_END_STREAM")

    def send_reset(self) -> None:
        state = self.state
        if state == CLOSED:
            raise self.closed_error()
        if state == IDLE:
            raise self.invalid("SEND_RST_STREAM")
        self.state = CLOSED
        self.closed_by = SEND_RST_STREAM

    def send_window_update(self) -> None:
        state = self.state
        if state == CLOSED:
            raise self.closed_error()
        if state == IDLE:
            raise self.invalid("SEND_WINDOW_UPDATE")

    # -- receiving ------------------------------------------------------------------

    def receive_headers(self, informational: bool) -> type[HeadersEvent]:
        """The state change for a header block received; the event class it makes."""
        state = self.state
        if informational:
            if state not in (OPEN, HALF_CLOSED_LOCAL):
                raise self.invalid("RECV_INFORMATIONAL_HEADERS")
            if self.headers_received:
                self.state = CLOSED
                raise ProtocolError("Informational response after final response")
            return h2.events.InformationalResponseReceived
        if state == IDLE:
            self.state = OPEN
            self.client = False
            self.headers_received = True
            return h2.events.RequestReceived
        if state == OPEN or state == HALF_CLOSED_LOCAL or state == RESERVED_REMOTE:
            if state == RESERVED_REMOTE:
                self.state = HALF_CLOSED_LOCAL
            if not self.headers_received:
                if self.client is not True:
                    self.state = CLOSED
                    raise ProtocolError("Received a response head on a stream the peer opened.")
                self.headers_received = True
                return h2.events.ResponseReceived
            if self.trailers_received:
                self.state = CLOSED
                raise ProtocolError("Received a second block of trailers.")
            self.trailers_received = True
            return h2.events.TrailersReceived
        if state == HALF_CLOSED_REMOTE:
            raise self.reset_on_error()
        if state == CLOSED:
            raise self.closed_error()
        raise self.invalid("RECV_HEADERS")

    def receive_data(self) -> None:
        state = self.state
        if state == OPEN or state == HALF_CLOSED_LOCAL:
            if not self.headers_received:
                self.state = CLOSED
                raise ProtocolError("cannot receive data before headers")
            return
        if state == CLOSED:
            raise self.closed_error()
        raise self.reset_on_error()  # idle, reserved, half-closed (remote)

    def receive_end_stream(self) -> h2.events.StreamEnded | None:
        state = self.state
        if state == OPEN:
            self.state = HALF_CLOSED_REMOTE
        elif state == HALF_CLOSED_LOCAL:
            self.state = CLOSED
            self.closed_by = RECV_END_STREAM
        elif state == CLOSED:
            return None
        else:
            raise self.invalid("RECV_END_STREAM")
        return h2.events.StreamEnded(stream_id=self.stream_id)

    def receive_window_update(self) -> bool:
        """Whether the update counts (a closed stream ignores it)."""
        state = self.state
        if state == CLOSED:
            return False
        if state == IDLE:
            raise self.invalid("RECV_WINDOW_UPDATE")
        return True

    def receive_reset(self) -> bool:
        """Whether the reset counts (a closed stream ignores it)."""
        state = self.state
        if state == CLOSED:
            return False
        if state == IDLE:
            raise self.invalid("RECV_RST_STREAM")
        self.state = CLOSED
        self.closed_by = RECV_RST_STREAM
        return True

    def track_length(self, length: int, end_stream: bool) -> None:
        """What content-length promised (RFC 9113 8.1.1)."""
        self.received_length += length
        expected = self.expected_length
        if expected is not None:
            actual = self.received_length
            if expected < actual or (end_stream and expected != actual):
                raise InvalidBodyLengthError(expected, actual)

    def expect_length(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.request_method == b"HEAD":
            self.expected_length = 0
            return
        length = None
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    raise ProtocolError(f"Invalid content-length header: {value!r}")
                parsed = int(value, 10)
                if length is None:
                    length = parsed
                elif parsed != length:
                    raise ProtocolError(f"Conflicting content-length headers: {length} and {parsed}")
        self.expected_length = length
