"""An HTTP/2 connection for the proxy (sans-IO): bytes in, events out; calls in, bytes out.

It implements the part of ``h2.connection.H2Connection`` the proxy uses, with h2's
behaviour: the same ``h2.events`` objects, the same ``h2.exceptions`` (and so the same
GOAWAY error codes), the same frames sent. tests/unit/proxy/test_h2_codec.py feeds
generated frame sequences, valid and not, to this and to h2 and compares them.

What it does differently, on purpose:

- A GOAWAY(NO_ERROR) is reported and the connection stays usable for the streams it
  covers (RFC 9113 6.8): h2 closes its whole state machine on any GOAWAY, and the
  proxy has always overridden that.
- Frames are read straight from the received bytes with ``struct`` (no frame objects,
  no buffer copy per frame), header blocks are decoded in one pass (``_hpack.py``) and
  checked in one pass (``_fields.py``), streams change state in plain methods
  (``_stream.py``) instead of a table of callbacks, and nothing is logged.
- Not implemented, because the proxy never does it: server push (a PUSH_PROMISE is a
  connection error, as h2 answers when push is disabled), sending PRIORITY, padding
  or ALTSVC, the HTTP/1.1 upgrade, outbound header validation or normalisation (the
  proxy validated what it forwards when it received it), and ``header_encoding``.

One file of ~800 lines on purpose: every frame handler and every call reads and changes
the same state (windows, streams, settings, the header block being received); the parts
that stand alone are already apart (frames, HPACK, fields, a stream, the state table).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.events
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import (
    DenialOfServiceError,
    FlowControlError,
    FrameDataMissingError,
    FrameTooLargeError,
    NoAvailableStreamIDError,
    NoSuchStreamError,
    ProtocolError,
    StreamClosedError,
    StreamIDTooLowError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy
from hpack.exceptions import HPACKError, OversizedHeaderListError

from mesh.proxy.protocol.http2._fields import join_cookies, validate
from mesh.proxy.protocol.http2._frames import (
    ACK,
    ALTSVC,
    ASSOCIATION,
    CONTINUATION,
    CONTINUATION_BACKLOG,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    FRAME_NAMES,
    GOAWAY,
    HAS_STREAM,
    HEADERS,
    NO_STREAM,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    U16,
    U16_U32,
    U32,
    U32_U8,
    U32_U32,
    WINDOW_UPDATE,
    parse_header_block_frame,
)
from mesh.proxy.protocol.http2._hpack import Decoder
from mesh.proxy.protocol.http2._machine import (
    C_CLOSED,
    C_IDLE,
    INPUT_NAMES,
    NEXT_STATE,
    RECV_ALTERNATIVE_SERVICE,
    RECV_DATA,
    RECV_GOAWAY,
    RECV_HEADERS,
    RECV_PING,
    RECV_PRIORITY,
    RECV_PUSH_PROMISE,
    RECV_RST_STREAM_INPUT,
    RECV_SETTINGS,
    RECV_WINDOW_UPDATE,
    SEND_DATA,
    SEND_GOAWAY,
    SEND_HEADERS,
    SEND_PING,
    SEND_RST_STREAM_INPUT,
    SEND_SETTINGS,
    SEND_WINDOW_UPDATE,
    STATE_NAMES,
)
from mesh.proxy.protocol.http2._stream import (
    CLOSED,
    HALF_CLOSED_LOCAL,
    IDLE,
    OPEN,
    RECV_END_STREAM,
    RECV_RST_STREAM,
    RESERVED_LOCAL,
    SEND_END_STREAM,
    SEND_RST_STREAM,
    Stream,
    Window,
    grow,
)

_ERROR_CODES = {int(code): code for code in ErrorCodes}
MAX_CLOSED_STREAMS = 2**16
HIGHEST_ALLOWED_STREAM_ID = 2**31 - 1
MAX_WINDOW_INCREMENT = 2**31 - 1


def error_code(code: int) -> ErrorCodes | int:
    """The ``ErrorCodes`` member for a code, or the int when it is not one (as h2 reports it)."""
    return _ERROR_CODES.get(code, code)


def _is_informational(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for header in headers:
        name = header[0]
        if not name.startswith(b":"):
            return False
        if name == b":status":
            return header[1].startswith(b"1")
    return False


def _first(headers: Iterable[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for header in headers:
        if header[0] == wanted:
            return header[1]
    return None


class Connection:
    """One HTTP/2 connection's state, either side (``config.client_side``)."""

    def __init__(self, config: H2Configuration, encoder: Any = None) -> None:
        if config.validate_outbound_headers or config.normalize_outbound_headers or config.header_encoding:
            raise ValueError(
                "the proxy's HTTP/2 codec sends header blocks as given: no outbound validation or encoding"
            )
        self.config = config
        self.client_side = bool(config.client_side)
        self._validate_inbound = bool(config.validate_inbound_headers)
        self._join_cookies = bool(config.normalize_inbound_headers)
        self.state = C_IDLE
        self.streams: dict[int, Stream] = {}
        self.highest_inbound_stream_id = 0
        self.highest_outbound_stream_id = 0
        if encoder is None:
            from hpack import Encoder

            encoder = Encoder()
        self.encoder = encoder
        self.decoder = Decoder(max_header_list_size=2**16)
        self.local_settings = Settings(
            client=self.client_side,
            initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 100, SettingCodes.MAX_HEADER_LIST_SIZE: 2**16},
        )
        self.remote_settings = Settings(client=not self.client_side)
        self.outbound_flow_control_window = self.remote_settings.initial_window_size
        self.max_outbound_frame_size = self.remote_settings.max_frame_size
        self.max_inbound_frame_size = self.local_settings.max_frame_size
        self._window = Window(self.local_settings.initial_window_size)
        self._closed_streams: dict[int, StreamClosedBy | None] = {}
        self._in = bytearray()  # received bytes that make no whole frame yet
        self._preamble = b"" if self.client_side else PREFACE  # still expected from the client
        self._block: list[tuple[int, int, int, bytes, tuple[int, int, bool]]] = []  # a header block's frames
        self._out = bytearray()

    def __repr__(self) -> str:
        side = "client" if self.client_side else "server"
        return f"<http2.Connection {side} {STATE_NAMES[self.state]} streams={len(self.streams)}>"

    # -- the state machine and bookkeeping ------------------------------------------

    def _input(self, what: int) -> None:
        state = NEXT_STATE[self.state][what]
        if state is None:
            old, self.state = self.state, C_CLOSED
            raise ProtocolError(
                f"Invalid input ConnectionInputs.{INPUT_NAMES[what]} in state ConnectionState.{STATE_NAMES[old]}"
            )
        self.state = state

    def _open_streams(self, remainder: int) -> int:
        # Counting also forgets closed streams (their ``closed_by`` is remembered), as h2 does.
        count = 0
        closed: list[int] = []
        for stream_id, stream in self.streams.items():
            state = stream.state
            if OPEN <= state <= HALF_CLOSED_LOCAL and stream_id % 2 == remainder:
                count += 1
            elif state == CLOSED:
                closed.append(stream_id)
        remembered = self._closed_streams
        for stream_id in closed:
            remembered[stream_id] = self.streams.pop(stream_id).closed_by
            if len(remembered) > MAX_CLOSED_STREAMS:
                del remembered[next(iter(remembered))]
        return count

    @property
    def open_outbound_streams(self) -> int:
        return self._open_streams(int(self.client_side))

    @property
    def open_inbound_streams(self) -> int:
        return self._open_streams(int(not self.client_side))

    @property
    def inbound_flow_control_window(self) -> int:
        return self._window.size

    def _stream_closed_by(self, stream_id: int) -> StreamClosedBy | None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream.closed_by
        return self._closed_streams.get(stream_id)

    def _stream_is_closed_by_reset(self, stream_id: int) -> bool:
        return self._stream_closed_by(stream_id) in (RECV_RST_STREAM, SEND_RST_STREAM)

    def reset_by_us(self, stream_id: int) -> bool:
        """Whether the stream was closed by a RST_STREAM that we sent."""
        return self._stream_closed_by(stream_id) == SEND_RST_STREAM

    def _begin_new_stream(self, stream_id: int, allowed_remainder: int) -> Stream:
        outbound = stream_id % 2 == int(self.client_side)
        highest = self.highest_outbound_stream_id if outbound else self.highest_inbound_stream_id
        if stream_id <= highest:
            raise StreamIDTooLowError(stream_id, highest)
        if stream_id % 2 != allowed_remainder:
            raise ProtocolError("Invalid stream ID for peer.")
        stream = Stream(stream_id, self.local_settings.initial_window_size, self.remote_settings.initial_window_size)
        self.streams[stream_id] = stream
        if outbound:
            self.highest_outbound_stream_id = stream_id
        else:
            self.highest_inbound_stream_id = stream_id
        return stream

    def _stream_by_id(self, stream_id: int) -> Stream:
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        if not stream_id:
            raise NoSuchStreamError(-1)
        outbound = stream_id % 2 == int(self.client_side)
        if stream_id > (self.highest_outbound_stream_id if outbound else self.highest_inbound_stream_id):
            raise NoSuchStreamError(stream_id)
        raise StreamClosedError(stream_id)

    def _emit(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        length = len(payload)
        out = self._out
        out += FRAME_HEADER.pack(length >> 8, length & 0xFF, frame_type, flags, stream_id & 0x7FFFFFFF)
        if length:
            out += payload

    def _emit_window_update(self, stream_id: int, increment: int) -> None:
        self._emit(WINDOW_UPDATE, 0, stream_id, U32.pack(increment & 0x7FFFFFFF))

    def _emit_reset(self, stream_id: int, code: int) -> None:
        self._emit(RST_STREAM, 0, stream_id, U32.pack(code))

    # -- what the proxy calls ---------------------------------------------------------

    def initiate_connection(self) -> None:
        self._input(SEND_SETTINGS)
        if self.client_side:
            self._out += PREFACE
        payload = b"".join(U16_U32.pack(setting & 0xFF, value) for setting, value in self.local_settings.items())
        self._emit(SETTINGS, 0, 0, payload)

    def get_next_available_stream_id(self) -> int:
        if not self.highest_outbound_stream_id:
            next_stream_id = 1 if self.client_side else 2
        else:
            next_stream_id = self.highest_outbound_stream_id + 2
        if next_stream_id > HIGHEST_ALLOWED_STREAM_ID:
            raise NoAvailableStreamIDError("Exhausted allowed stream IDs")
        return next_stream_id

    def send_headers(self, stream_id: int, headers: Iterable[Any], end_stream: bool = False) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            limit = self.remote_settings.max_concurrent_streams
            count = self.open_outbound_streams
            if count + 1 > limit:
                raise TooManyStreamsError(f"Max outbound streams is {limit}, {count} open")
        self._input(SEND_HEADERS)
        if stream is None:
            stream = self._begin_new_stream(stream_id, int(self.client_side))
        informational = not stream.client and _is_informational(headers)
        if informational and end_stream:
            raise ProtocolError("Cannot set END_STREAM on informational responses.")
        stream.send_headers(informational)
        block = self.encoder.encode(headers)
        if end_stream:
            stream.send_end_stream()
        if stream.trailers_sent and not end_stream:
            raise ProtocolError("Trailers must have END_STREAM set.")
        if stream.client and stream.authority is None:
            stream.authority = _first(headers, b":authority")
        stream.request_method = _first(headers, b":method")
        size = self.max_outbound_frame_size
        flags = END_STREAM if end_stream else 0
        if len(block) <= size:
            self._emit(HEADERS, flags | END_HEADERS, stream_id, block)
            return
        chunks = [block[i : i + size] for i in range(0, len(block), size)]
        self._emit(HEADERS, flags, stream_id, chunks[0])
        for chunk in chunks[1:-1]:
            self._emit(CONTINUATION, 0, stream_id, chunk)
        self._emit(CONTINUATION, END_HEADERS, stream_id, chunks[-1])

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        size = len(data)
        if size > 0 and size > self.local_flow_control_window(stream_id):
            raise FlowControlError(
                f"Cannot send {size} bytes, flow control window is {self.local_flow_control_window(stream_id)}"
            )
        if size > self.max_outbound_frame_size:
            raise FrameTooLargeError(f"Cannot send frame size {size}, max frame size is {self.max_outbound_frame_size}")
        self._input(SEND_DATA)
        stream = self.streams[stream_id]
        stream.send_data()
        if end_stream:
            stream.send_end_stream()
        stream.outbound_flow_control_window -= size
        self._emit(DATA, END_STREAM if end_stream else 0, stream_id, data)
        self.outbound_flow_control_window -= size

    def end_stream(self, stream_id: int) -> None:
        self._input(SEND_DATA)
        self._stream_by_id(stream_id).send_end_stream()
        self._emit(DATA, END_STREAM, stream_id, b"")

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        self._input(SEND_RST_STREAM_INPUT)
        self._stream_by_id(stream_id).send_reset()
        self._emit_reset(stream_id, error_code)

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        if not (1 <= increment <= MAX_WINDOW_INCREMENT):
            raise ValueError(f"Flow control increment must be between 1 and {MAX_WINDOW_INCREMENT}")
        self._input(SEND_WINDOW_UPDATE)
        if stream_id is not None:
            stream = self.streams[stream_id]
            stream.send_window_update()
            stream.window.opened(increment)
            self._emit_window_update(stream_id, increment)
        else:
            self._window.opened(increment)
            self._emit_window_update(0, increment)

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        if stream_id <= 0:
            raise ValueError(f"Stream ID {stream_id} is not valid for acknowledge_received_data")
        if acknowledged_size < 0:
            raise ValueError("Cannot acknowledge negative data")
        increment = self._window.process(acknowledged_size)
        try:
            stream = self._stream_by_id(stream_id)
        except StreamClosedError:
            stream = None
        if increment:
            self._emit_window_update(0, increment)
        if stream is not None and OPEN <= stream.state <= HALF_CLOSED_LOCAL:
            increment = stream.window.process(acknowledged_size)
            if increment:
                self._emit_window_update(stream_id, increment)

    def local_flow_control_window(self, stream_id: int) -> int:
        stream = self._stream_by_id(stream_id)
        window = self.outbound_flow_control_window
        return window if window < stream.outbound_flow_control_window else stream.outbound_flow_control_window

    def remote_flow_control_window(self, stream_id: int) -> int:
        stream = self._stream_by_id(stream_id)
        return min(self._window.size, stream.window.size)

    def ping(self, opaque_data: bytes) -> None:
        if not isinstance(opaque_data, bytes) or len(opaque_data) != 8:
            raise ValueError(f"Invalid value for ping data: {opaque_data!r}")
        self._input(SEND_PING)
        self._emit(PING, 0, 0, opaque_data)

    def close_connection(
        self, error_code: int = 0, additional_data: bytes | None = None, last_stream_id: int | None = None
    ) -> None:
        self._input(SEND_GOAWAY)
        if last_stream_id is None:
            last_stream_id = self.highest_inbound_stream_id
        self._emit(GOAWAY, 0, 0, U32_U32.pack(last_stream_id & 0x7FFFFFFF, error_code) + (additional_data or b""))

    def update_settings(self, new_settings: dict[Any, int]) -> None:
        self._input(SEND_SETTINGS)
        self.local_settings.update(new_settings)
        self._emit(SETTINGS, 0, 0, b"".join(U16_U32.pack(k & 0xFF, v) for k, v in new_settings.items()))

    def data_to_send(self, amount: int | None = None) -> bytes:
        if amount is None:
            data = bytes(self._out)
            self._out = bytearray()
            return data
        data = bytes(self._out[:amount])
        del self._out[:amount]
        return data

    def clear_outbound_data_buffer(self) -> None:
        self._out = bytearray()

    # -- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[h2.events.Event]:
        if type(data) is not bytes:
            data = bytes(data)
        if self._preamble:
            size = min(len(self._preamble), len(data))
            if self._preamble[:size] != data[:size]:
                raise ProtocolError("Invalid HTTP/2 preamble.")
            data = data[size:]
            self._preamble = self._preamble[size:]
        # Most reads end on a frame boundary: parsed in place. A frame that comes in pieces is
        # gathered in one growing buffer (a 16 MiB frame in 64 KiB reads is not copied per read).
        buf: bytes | bytearray = data
        if self._in:
            self._in += data
            buf = self._in
        events: list[h2.events.Event] = []
        max_frame = self.max_inbound_frame_size
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 9:
                high, low, frame_type, flags, stream_id = FRAME_HEADER.unpack_from(buf, pos)
                stream_id &= 0x7FFFFFFF
                if frame_type < 11:
                    association = ASSOCIATION[frame_type]
                    if (association == HAS_STREAM and not stream_id) or (association == NO_STREAM and stream_id):
                        zero = "non-zero" if association == HAS_STREAM else "zero"
                        raise ProtocolError(
                            f"Received frame with invalid header: Stream ID must be {zero} for {FRAME_NAMES[frame_type]}"
                        )
                length = (high << 8) | low
                start = pos + 9
                if end - start < length:
                    break
                if length > max_frame:
                    raise FrameTooLargeError(f"Received overlong frame: length {length}, max {max_frame}")
                pos = start + length
                body = buf[start:pos]
                self._receive_frame(frame_type, flags, stream_id, body if type(body) is bytes else bytes(body), events)
        except ProtocolError as exc:
            self._terminate_connection(exc.error_code)
            raise
        if buf is self._in:
            del self._in[:pos]
        elif pos < end:
            self._in = bytearray(buf[pos:])
        return events

    def _terminate_connection(self, code: int) -> None:
        self._input(SEND_GOAWAY)
        self._emit(GOAWAY, 0, 0, U32_U32.pack(self.highest_inbound_stream_id & 0x7FFFFFFF, code))

    def _receive_frame(self, frame_type: int, flags: int, stream_id: int, body: bytes, events: list[Any]) -> None:
        if frame_type == DATA:
            if flags & PADDED:
                if not body:
                    raise FrameDataMissingError("Frame data missing or invalid")
                pad = body[0]
                if pad and pad >= len(body):
                    raise ProtocolError("Received frame with invalid padding.")
                data = body[1 : len(body) - pad]
                flow = len(data) + pad + 1
            else:
                data = body
                flow = len(body)
            if self._block:
                raise ProtocolError("Invalid frame during header block.")
            self._receive_data(stream_id, data, flow, bool(flags & END_STREAM), events)
        elif frame_type == HEADERS or frame_type == PUSH_PROMISE:
            fragment, priority, promised = parse_header_block_frame(frame_type, flags, body)
            if self._block:
                raise ProtocolError("Invalid frame during header block.")
            if not flags & END_HEADERS:
                self._block.append((frame_type, flags, stream_id, fragment, priority))
                return
            self._receive_header_block(frame_type, flags, stream_id, fragment, priority, promised, events)
        elif frame_type == CONTINUATION:
            block = self._block
            if block:
                if stream_id != block[0][2]:
                    raise ProtocolError("Invalid frame during header block.")
                block.append((frame_type, flags, stream_id, body, (0, 0, False)))
                if len(block) > CONTINUATION_BACKLOG:
                    raise ProtocolError("Too many continuation frames received.")
                if flags & END_HEADERS:
                    first_type, first_flags, first_stream, _, priority = block[0]
                    fragment = b"".join(part[3] for part in block)
                    self._block = []
                    self._receive_header_block(
                        first_type, first_flags | END_HEADERS, first_stream, fragment, priority, None, events
                    )
                return
            self._receive_naked_continuation(stream_id, events)
        else:
            self._receive_control_frame(frame_type, flags, stream_id, body, events)

    def _receive_control_frame(
        self, frame_type: int, flags: int, stream_id: int, body: bytes, events: list[Any]
    ) -> None:
        if frame_type == WINDOW_UPDATE:
            if len(body) != 4:
                raise FrameDataMissingError("Frame data missing or invalid")
            increment = U32.unpack(body)[0]
            if not 1 <= increment <= 2**31 - 1:
                raise ProtocolError("Received frame with non-compliant data")
            self._check_no_block()
            self._receive_window_update(stream_id, increment, events)
        elif frame_type == RST_STREAM:
            if len(body) != 4:
                raise FrameDataMissingError("Frame data missing or invalid")
            self._check_no_block()
            self._input(RECV_RST_STREAM_INPUT)
            try:
                stream = self._stream_by_id(stream_id)
            except NoSuchStreamError:
                return
            if stream.receive_reset():
                events.append(h2.events.StreamReset(stream_id=stream_id, error_code=error_code(U32.unpack(body)[0])))
        elif frame_type == SETTINGS:
            if flags & ACK and body:
                raise ProtocolError("Received frame with non-compliant data")
            settings: dict[int, int] = {}
            for offset in range(0, len(body), 6):
                if offset + 6 > len(body):
                    raise FrameDataMissingError("Frame data missing or invalid")
                name, value = U16_U32.unpack_from(body, offset)
                settings[name] = value
            self._check_no_block()
            self._receive_settings(bool(flags & ACK), settings, events)
        elif frame_type == PING:
            if len(body) != 8:
                raise FrameDataMissingError("Frame data missing or invalid")
            self._check_no_block()
            self._input(RECV_PING)
            if flags & ACK:
                events.append(h2.events.PingAckReceived(ping_data=body))
            else:
                events.append(h2.events.PingReceived(ping_data=body))
                self._emit(PING, ACK, 0, body)
        elif frame_type == GOAWAY:
            if len(body) < 8:
                raise FrameDataMissingError("Frame data missing or invalid")
            last_stream_id, code = U32_U32.unpack_from(body)
            self._check_no_block()
            self._receive_goaway(last_stream_id, code, body[8:], events)
        elif frame_type == PRIORITY:
            if len(body) != 5:
                raise FrameDataMissingError("Frame data missing or invalid")
            depends_on, weight = U32_U8.unpack(body)
            self._check_no_block()
            self._receive_priority(stream_id, (depends_on & 0x7FFFFFFF, weight, bool(depends_on >> 31)), events)
        elif frame_type == ALTSVC:
            if len(body) < 2:
                raise FrameDataMissingError("Frame data missing or invalid")
            origin_length = U16.unpack_from(body)[0]
            origin = body[2 : 2 + origin_length]
            if len(origin) != origin_length:
                raise FrameDataMissingError("Frame data missing or invalid")
            self._check_no_block()
            self._receive_alt_svc(stream_id, origin, body[2 + origin_length :], events)
        else:
            self._check_no_block()
            from hyperframe.frame import ExtensionFrame

            frame = ExtensionFrame(type=frame_type, stream_id=stream_id)
            frame.parse_flags(flags)
            frame.parse_body(memoryview(body))
            events.append(h2.events.UnknownFrameReceived(frame=frame))

    def _check_no_block(self) -> None:
        if self._block:
            raise ProtocolError("Invalid frame during header block.")

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self.decoder.decode(block)
        except OversizedHeaderListError as exc:
            raise DenialOfServiceError(f"Oversized header block: {exc}") from exc
        except (HPACKError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"Error decoding header block: {exc}") from exc

    def _too_many_inbound(self, stream_id: int, count: int, limit: int) -> None:
        """A new stream beyond our SETTINGS_MAX_CONCURRENT_STREAMS (``ServerConnection`` refuses it instead)."""
        raise TooManyStreamsError(f"Max inbound streams is {limit}, {count} open")

    def _receive_header_block(
        self,
        frame_type: int,
        flags: int,
        stream_id: int,
        fragment: bytes,
        priority: tuple[int, int, bool],
        promised: int | None,
        events: list[Any],
    ) -> None:
        if frame_type == PUSH_PROMISE:
            if not self.local_settings.enable_push:
                raise ProtocolError("Received pushed stream")
            self._decode(fragment)
            self._input(RECV_PUSH_PROMISE)
            raise ProtocolError("Received pushed stream: the proxy does not take server push")
        try:
            self._receive_headers(flags, stream_id, fragment, priority, events)
        except StreamClosedError as exc:
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            self._emit_reset(exc.stream_id, exc.error_code)
            events.extend(exc._events)
        except StreamIDTooLowError as exc:
            if self._stream_is_closed_by_reset(exc.stream_id):
                self._emit_reset(exc.stream_id, ErrorCodes.STREAM_CLOSED)
            elif self._stream_closed_by(exc.stream_id) in (RECV_END_STREAM, SEND_END_STREAM):
                raise StreamClosedError(exc.stream_id) from exc
            else:
                raise

    def _receive_headers(
        self, flags: int, stream_id: int, fragment: bytes, priority: tuple[int, int, bool], events: list[Any]
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            limit = self.local_settings.max_concurrent_streams
            count = self.open_inbound_streams
            if count + 1 > limit:
                self._too_many_inbound(stream_id, count, limit)
        headers = self._decode(fragment)
        self._input(RECV_HEADERS)
        if stream is None:
            stream = self._begin_new_stream(stream_id, int(not self.client_side))
        end_stream = bool(flags & END_STREAM)
        informational = _is_informational(headers)
        if informational and end_stream:
            raise ProtocolError("Cannot set END_STREAM on informational responses")
        event_class = stream.receive_headers(informational)
        event: Any = event_class(stream_id=stream_id)
        ended = stream.receive_end_stream() if end_stream else None
        if ended is not None:
            event.stream_ended = ended
        stream.expect_length(headers)
        is_trailer = event_class is h2.events.TrailersReceived
        if is_trailer and not end_stream:
            raise ProtocolError("Trailers must have END_STREAM set")
        if self._join_cookies:
            headers = join_cookies(headers)
        if self._validate_inbound:
            validate(headers, is_trailer, event_class is not h2.events.RequestReceived and not is_trailer)
        event.headers = headers
        events.append(event)
        if ended is not None:
            events.append(ended)
        if flags & PRIORITY_FLAG:
            self._receive_priority(stream_id, priority, events)
            event.priority_updated = events[-1]

    def _receive_priority(self, stream_id: int, priority: tuple[int, int, bool], events: list[Any]) -> None:
        self._input(RECV_PRIORITY)
        depends_on, weight, exclusive = priority
        if depends_on == stream_id:
            raise ProtocolError(f"Stream {stream_id} may not depend on itself")
        event = h2.events.PriorityUpdated()
        event.stream_id = stream_id
        event.depends_on = depends_on
        event.exclusive = exclusive
        event.weight = weight + 1
        events.append(event)

    def _receive_naked_continuation(self, stream_id: int, events: list[Any]) -> None:
        try:
            stream = self._stream_by_id(stream_id)
        except StreamClosedError as exc:
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            self._emit_reset(exc.stream_id, exc.error_code)
            return
        raise stream.invalid("RECV_CONTINUATION")

    def _receive_data(self, stream_id: int, data: bytes, flow: int, end_stream: bool, events: list[Any]) -> None:
        self._input(RECV_DATA)
        self._window.consumed(flow)
        try:
            stream = self._stream_by_id(stream_id)
            stream.receive_data()
        except StreamClosedError as exc:
            self._data_on_closed_stream(exc, flow, end_stream, events)
            return
        stream.window.consumed(flow)
        stream.track_length(len(data), end_stream)
        event = h2.events.DataReceived(stream_id=stream_id, data=data, flow_controlled_length=flow)
        events.append(event)
        if end_stream:
            ended = stream.receive_end_stream()
            event.stream_ended = ended
            events.append(ended)

    def _data_on_closed_stream(self, exc: StreamClosedError, flow: int, end_stream: bool, events: list[Any]) -> None:
        """DATA on a closed stream: its bytes still count for the connection's window; RST_STREAM."""
        increment = self._window.process(flow)
        if increment:
            self._emit_window_update(0, increment)
        self._emit_reset(exc.stream_id, exc.error_code)
        events.extend(exc._events)

    def _receive_window_update(self, stream_id: int, increment: int, events: list[Any]) -> None:
        self._input(RECV_WINDOW_UPDATE)
        if not stream_id:
            self.outbound_flow_control_window = grow(self.outbound_flow_control_window, increment)
            events.append(h2.events.WindowUpdated(stream_id=0, delta=increment))
            return
        try:
            stream = self._stream_by_id(stream_id)
        except StreamClosedError:
            return
        if not stream.receive_window_update():
            return
        try:
            stream.outbound_flow_control_window = grow(stream.outbound_flow_control_window, increment)
        except FlowControlError:
            stream.send_reset()
            self._emit_reset(stream_id, ErrorCodes.FLOW_CONTROL_ERROR)
            events.append(
                h2.events.StreamReset(stream_id=stream_id, error_code=ErrorCodes.FLOW_CONTROL_ERROR, remote_reset=False)
            )
            return
        events.append(h2.events.WindowUpdated(stream_id=stream_id, delta=increment))

    def _receive_settings(self, ack: bool, settings: dict[int, int], events: list[Any]) -> None:
        self._input(RECV_SETTINGS)
        if ack:
            changes = self.local_settings.acknowledge()
            if SettingCodes.INITIAL_WINDOW_SIZE in changes:
                change = changes[SettingCodes.INITIAL_WINDOW_SIZE]
                delta = change.new_value - (change.original_value or 0)
                for stream in self.streams.values():
                    new_max = stream.window.max_size + delta
                    stream.window.opened(delta)
                    stream.window.max_size = new_max
            if SettingCodes.MAX_HEADER_LIST_SIZE in changes:
                self.decoder.max_header_list_size = changes[SettingCodes.MAX_HEADER_LIST_SIZE].new_value
            if SettingCodes.MAX_FRAME_SIZE in changes:
                self.max_inbound_frame_size = changes[SettingCodes.MAX_FRAME_SIZE].new_value
            if SettingCodes.HEADER_TABLE_SIZE in changes:
                self.decoder.max_allowed_table_size = changes[SettingCodes.HEADER_TABLE_SIZE].new_value
            acknowledged = h2.events.SettingsAcknowledged()
            acknowledged.changed_settings = changes
            events.append(acknowledged)
            return
        remote = self.remote_settings
        for setting, value in settings.items():
            remote.validate_received_setting(setting, value)
        remote.update(settings)
        changed = h2.events.RemoteSettingsChanged.from_settings(remote, settings)
        events.append(changed)
        self._input(SEND_SETTINGS)
        changes = remote.acknowledge()
        if SettingCodes.INITIAL_WINDOW_SIZE in changes:
            change = changes[SettingCodes.INITIAL_WINDOW_SIZE]
            delta = change.new_value - (change.original_value or 0)
            for stream in self.streams.values():
                stream.outbound_flow_control_window = grow(stream.outbound_flow_control_window, delta)
        if SettingCodes.HEADER_TABLE_SIZE in changes:
            self.encoder.header_table_size = changes[SettingCodes.HEADER_TABLE_SIZE].new_value
        if SettingCodes.MAX_FRAME_SIZE in changes:
            self.max_outbound_frame_size = changes[SettingCodes.MAX_FRAME_SIZE].new_value
        self._emit(SETTINGS, ACK, 0, b"")

    def _receive_goaway(self, last_stream_id: int, code: int, additional_data: bytes, events: list[Any]) -> None:
        event = h2.events.ConnectionTerminated()
        event.last_stream_id = last_stream_id
        event.additional_data = additional_data or None
        if code == ErrorCodes.NO_ERROR:
            # Graceful: the streams it covers may finish (RFC 9113 6.8); the owner opens no new ones.
            event.error_code = ErrorCodes.NO_ERROR
            events.append(event)
            return
        self._input(RECV_GOAWAY)
        self.clear_outbound_data_buffer()
        event.error_code = error_code(code)
        events.append(event)

    def _receive_alt_svc(self, stream_id: int, origin: bytes, field: bytes, events: list[Any]) -> None:
        self._input(RECV_ALTERNATIVE_SERVICE)
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is None or origin:
                return
            if stream.state in (IDLE, RESERVED_LOCAL, CLOSED):
                return  # nothing to say about it
            if stream.client is False or stream.headers_received:
                return
            origin = stream.authority  # type: ignore[assignment]
        elif not origin or not self.client_side:
            return
        event = h2.events.AlternativeServiceAvailable()
        event.origin = origin
        event.field_value = field
        events.append(event)
