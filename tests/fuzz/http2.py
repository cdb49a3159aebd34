"""HTTP/2 for the fuzz suite: frame-sequence strategies, and a strict reader of the server's frames.

- ``sequences()``: hypothesis strategies of ``H2Case`` — a client preface (sometimes damaged), a
  SETTINGS frame (sometimes with bad values), then a list of actions built with hyperframe's frame
  classes: requests (HEADERS, maybe split over CONTINUATION, DATA), requests with malformed header
  blocks (missing or repeated pseudo-headers, upper-case or connection-specific fields, CR/LF/NUL
  in values, content-length that the body contradicts), and the frames around them: WINDOW_UPDATE
  of 0 or overflowing, PRIORITY on itself, RST_STREAM on idle streams, DATA after END_STREAM or
  on stream 0, SETTINGS with bad values, PINGs (up to a bounded flood), GOAWAY, PUSH_PROMISE
  from a client, orphan CONTINUATION, unknown and random frames, an oversized frame, a bounded
  Rapid Reset (streams opened and cancelled at once). Ends with a PING so the reader knows when
  the proxy has read everything.
- ``read_server()``: every frame the proxy sent, checked: SETTINGS first, frames within size,
  header blocks that decode, responses that are valid HTTP/2 (``:status`` first, lower-case
  fields, no connection-specific ones), only on streams the client opened, nothing after a
  stream's end, content-length kept, no push, GOAWAY never raising its last stream id, DATA
  within the flow-control windows the client gave.
- ``run_case()``: one example against one door, with the ledger (what must not reach the app).
"""

from __future__ import annotations

import ssl
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hpack
from hyperframe import frame as hf
from hyperframe.exceptions import HyperframeError
from hypothesis import note, strategies as st

from tests.fuzz import transport
from tests.fuzz.harness import Door, Finding, FrontDoors, Ledger, show, test_name

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FINAL_PING = b"fz-final"

# Error codes (RFC 9113 section 7).
REFUSED_STREAM = 0x7
CONNECTION_SPECIFIC = (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")


def encode_frame(frame: hf.Frame, stream_id: int | None = None) -> bytes:
    """A frame's bytes; ``stream_id`` overrides the one hyperframe insists on (0 for DATA, …)."""
    data = bytearray(frame.serialize())
    if stream_id is not None:
        data[5:9] = struct.pack(">L", stream_id & 0xFFFFFFFF)
    return bytes(data)


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None) -> bytes:
    """A frame hyperframe would not build: any type, or a length that lies."""
    size = len(payload) if length is None else length
    return struct.pack(">L", size)[1:] + bytes([kind, flags]) + struct.pack(">L", stream_id & 0xFFFFFFFF) + payload


def with_id(frame_class: type[hf.Frame], stream_id: int, **fields: object) -> bytes:
    """Build with a stream id hyperframe accepts for the class, then put ``stream_id`` in."""
    legal = 0 if frame_class in (hf.SettingsFrame, hf.PingFrame, hf.GoAwayFrame) else 1
    return encode_frame(frame_class(legal, **fields), stream_id)


# --------------------------------------------------------------------------- the case

Fields = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Request:
    """HEADERS (maybe CONTINUATION) then DATA for one new stream. ``{M}`` is the marker."""

    stream: str  # next | reuse | even | zero | huge | lower
    fields: tuple[tuple[bytes, bytes], ...]
    malformed: str  # "" | why the header block is malformed (must not reach the app) | "length"
    body: tuple[int, ...] = ()  # DATA frame sizes
    end_stream: bool = True  # END_STREAM on the last frame
    continuation: int = 0  # header block split in this many extra CONTINUATION frames
    interleave: bool = False  # a PING between HEADERS and CONTINUATION (a connection error)
    padded: bool = False


@dataclass(frozen=True)
class Frame:
    """Any other frame; ``target`` picks its stream: an opened one, 0, an idle one, …"""

    kind: str
    target: str = "last"  # last | first | zero | idle | even | closed-ish (an opened one)
    value: int = 0
    flags: int = 0
    payload: bytes = b""


Action = Request | Frame


@dataclass(frozen=True)
class H2Case:
    preface: str  # ok | missing | damaged
    settings: tuple[tuple[int, int], ...] | None  # None: no SETTINGS frame first
    actions: tuple[Action, ...]
    cuts: tuple[int, ...] = ()
    pauses_ms: tuple[int, ...] = ()
    ending: str = "read"  # read | abort


@dataclass
class Stream:
    id: int
    marker: bytes
    method: bytes
    malformed: str  # why the request is malformed ("" when it is not), see refusals()
    ended: bool  # the client sent END_STREAM
    unique: bool = True  # no other :path sent carries its marker: an app record names this stream


@dataclass
class Rendered:
    wire: bytes = b""
    streams: list[Stream] = field(default_factory=list)  # in the order sent; ids may repeat
    paths: list[bytes] = field(default_factory=list)
    opened: set[int] = field(default_factory=set)  # ids of every HEADERS sent
    mentioned: set[int] = field(default_factory=set)  # ids of every frame sent
    max_frame_size: int = 16384
    table_size: int = 4096
    preface: str = "ok"
    # Flow control: the most the server may ever send, whatever order it read our frames in.
    initial_windows: list[int] = field(default_factory=list)  # INITIAL_WINDOW_SIZE values advertised
    window_updates: dict[int, int] = field(default_factory=dict)  # stream (0: connection) -> increments

    def window_limit(self, stream_id: int) -> int:
        if stream_id == 0:
            return 65535 + self.window_updates.get(0, 0)
        return max(self.initial_windows or [65535]) + self.window_updates.get(stream_id, 0)


def render(case: H2Case, ledger: Ledger, example: str) -> Rendered:
    out = Rendered(preface=case.preface)
    parts: list[bytes] = []
    encoder = hpack.Encoder()
    if case.preface == "ok":
        parts.append(PREFACE)
    elif case.preface == "damaged":
        parts.append(PREFACE[:10] + b"X" + PREFACE[11:])
    if case.settings is not None:
        parts.append(_settings_frame(case.settings, out))
    next_id = 1
    highest = 0
    order: list[int] = []
    for index, action in enumerate(case.actions):
        if isinstance(action, Frame) and action.kind == "reset-flood":
            # Rapid Reset: open a stream and cancel it at once, many times over.
            for n in range(action.value):
                marker = ledger.marker(example, index) + b"n%03d" % n  # one per stream: a GOAWAY may split them
                path = b"/" + marker + b"/reset"
                fields = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", action.payload), (b":path", path)]
                if next_id > highest:
                    out.paths.append(path)
                    out.opened.add(next_id)
                    out.mentioned.add(next_id)
                    out.streams.append(Stream(next_id, marker, b"GET", "", True))
                    parts.append(raw_frame(0x1, 0x5, next_id, encoder.encode(fields)) + raw_frame(0x3, 0, next_id, struct.pack(">L", 0x8)))
                    highest = next_id
                    order.append(next_id)
                next_id += 2
            continue
        if isinstance(action, Request):
            stream_id = _request_stream(action.stream, next_id, order)
            if stream_id == next_id:
                next_id += 2
            malformed = action.malformed
            if stream_id <= highest or stream_id % 2 == 0:  # reused, lower, even or 0: a protocol error
                malformed = malformed or f"stream id {stream_id} after {highest}"
            highest = max(highest, stream_id)
            marker = ledger.marker(example, index)
            fields = [(k, v.replace(b"{M}", marker)) for k, v in action.fields]
            out.paths += [v for k, v in fields if k == b":path"]
            out.opened.add(stream_id)
            out.mentioned.add(stream_id)
            order.append(stream_id)
            method = dict(fields).get(b":method", b"")
            out.streams.append(Stream(stream_id, marker, method, malformed, action.end_stream))
            parts.append(_request_frames(action, stream_id, encoder.encode(fields)))
        else:
            frame_bytes = _frame(action, order, next_id, out)
            if frame_bytes:
                out.mentioned.add(int.from_bytes(frame_bytes[5:9], "big") & 0x7FFFFFFF)
                parts.append(frame_bytes)
    parts.append(encode_frame(hf.PingFrame(0, opaque_data=FINAL_PING)))
    out.wire = b"".join(parts)
    for stream in out.streams:  # (the wire hides markers: HPACK codes them)
        stream.unique = sum(path.count(stream.marker) for path in out.paths) == 1
    return out


def _settings_frame(values: tuple[tuple[int, int], ...], out: Rendered) -> bytes:
    payload = b"".join(struct.pack(">HL", k & 0xFFFF, v & 0xFFFFFFFF) for k, v in values)
    for key, value in values:
        if key == 0x5 and 16384 <= value <= 16777215:
            out.max_frame_size = max(out.max_frame_size, value)
        if key == 0x1:
            out.table_size = max(out.table_size, value)
        if key == 0x4 and value <= 0x7FFFFFFF:
            out.initial_windows.append(value)
    return raw_frame(0x4, 0, 0, payload)


def _request_stream(how: str, next_id: int, opened: list[int]) -> int:
    if how == "reuse" and opened:
        return opened[0]
    if how == "lower" and next_id > 3:
        return next_id - 4
    return {"even": next_id + 1, "zero": 0, "huge": 0x7FFFFFFF}.get(how, next_id)


def _request_frames(action: Request, stream_id: int, block: bytes) -> bytes:
    pieces = [block]
    if action.continuation:
        step = max(len(block) // (action.continuation + 1), 1)
        pieces = [block[i : i + step] for i in range(0, len(block), step)] or [b""]
    end_headers = len(pieces) == 1
    flags = (0x4 if end_headers else 0) | (0x1 if action.end_stream and not action.body else 0)
    out = []
    if action.padded:
        out.append(raw_frame(0x1, flags | 0x8, stream_id, bytes([3]) + pieces[0] + b"\0\0\0"))
    else:
        out.append(raw_frame(0x1, flags, stream_id, pieces[0]))
    for i, piece in enumerate(pieces[1:], start=1):
        if action.interleave and i == 1:
            out.append(encode_frame(hf.PingFrame(0, opaque_data=b"between!")))
        out.append(raw_frame(0x9, 0x4 if i == len(pieces) - 1 else 0, stream_id, piece))
    for i, size in enumerate(action.body):
        last = i == len(action.body) - 1
        out.append(raw_frame(0x0, 0x1 if last and action.end_stream else 0, stream_id, b"d" * size))
    return b"".join(out)


def _frame(action: Frame, opened: list[int], next_id: int, out: Rendered) -> bytes:
    if action.target == "open" and not opened:
        return b""  # a polite client touches only streams it opened
    target = {
        "open": opened[-1] if opened else 1,
        "last": opened[-1] if opened else 1,
        "first": opened[0] if opened else 1,
        "zero": 0,
        "idle": next_id + 10,
        "even": 2,
    }.get(action.target, 1)
    kind = action.kind
    if kind == "data":
        return raw_frame(0x0, action.flags & 0x9, target, action.payload)
    if kind == "window-update":
        if 0 < action.value <= 0x7FFFFFFF:
            out.window_updates[target] = out.window_updates.get(target, 0) + action.value
        return raw_frame(0x8, 0, target, struct.pack(">L", action.value & 0xFFFFFFFF))
    if kind == "priority":
        depends = target if action.value == 0 else action.value
        return with_id(hf.PriorityFrame, target, depends_on=depends & 0x7FFFFFFF, stream_weight=15, exclusive=bool(action.flags))
    if kind == "rst":
        return raw_frame(0x3, 0, target, struct.pack(">L", action.value))
    if kind == "settings":
        return _settings_frame(((action.value >> 32, action.value & 0xFFFFFFFF),), out)
    if kind == "settings-ack":
        return raw_frame(0x4, 0x1, 0, action.payload)
    if kind == "ping":
        return raw_frame(0x6, action.flags & 0x1, 0 if action.target != "last" else target, action.payload)
    if kind == "goaway":
        return raw_frame(0x7, 0, 0, struct.pack(">LL", action.value, 0) + action.payload)
    if kind == "push-promise":
        return raw_frame(0x5, 0x4, target, struct.pack(">L", target + 1) + b"\x82")
    if kind == "continuation":
        return raw_frame(0x9, action.flags & 0x4, target, action.payload)
    if kind == "oversized":
        return raw_frame(0x0, 0, target, b"o" * 16400)
    if kind == "ping-flood":
        return encode_frame(hf.PingFrame(0, opaque_data=b"flooding")) * action.value
    if kind == "lying-length":
        return raw_frame(action.value & 0xFF, action.flags, target, action.payload, length=len(action.payload) + 7)
    # "raw": any type (unknown ones included), any flags
    return raw_frame(action.value & 0xFF, action.flags, target, action.payload)


# --------------------------------------------------------------------------- strategies

REQUEST_FIELDS_OK = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"{A}"), (b":path", b"/{M}")]
MALFORMATIONS = [
    "no-method", "no-path", "no-scheme", "two-paths", "pseudo-after-regular", "unknown-pseudo", "upper-case-name",
    "connection", "transfer-encoding", "keep-alive", "upgrade", "te-gzip", "empty-path", "status-in-request",
    "cr-in-value", "lf-in-value", "nul-in-value", "space-in-name", "colon-in-name",
]


def _malform(fields: Fields, how: str) -> Fields:
    f = list(fields)
    drop = {"no-method": b":method", "no-path": b":path", "no-scheme": b":scheme"}
    if how in drop:
        return [(k, v) for k, v in f if k != drop[how]]
    extra = {
        "two-paths": (b":path", b"/{M}/again"),
        "unknown-pseudo": (b":foo", b"bar"),
        "upper-case-name": (b"X-Upper", b"v"),
        "connection": (b"connection", b"keep-alive"),
        "transfer-encoding": (b"transfer-encoding", b"chunked"),
        "keep-alive": (b"keep-alive", b"timeout=5"),
        "upgrade": (b"upgrade", b"websocket"),
        "te-gzip": (b"te", b"gzip"),
        "status-in-request": (b":status", b"200"),
        "cr-in-value": (b"x-inject", b"a\rb"),
        "lf-in-value": (b"x-inject", b"a\nGET /{M}/smuggled HTTP/1.1"),
        "nul-in-value": (b"x-inject", b"a\x00b"),
        "space-in-name": (b"x inject", b"v"),
        "colon-in-name": (b"x:inject", b"v"),
    }
    if how == "pseudo-after-regular":
        return [(k, v) for k, v in f if k != b":path"] + [(b"user-agent", b"fz"), (b":path", b"/{M}")]
    if how == "empty-path":
        return [(k, b"" if k == b":path" else v) for k, v in f]
    return f + [extra[how]]


@st.composite
def requests(draw: st.DrawFn, authority: bytes, hostile: bool = True) -> Request:
    fields: Fields = [(k, authority if v == b"{A}" else v) for k, v in REQUEST_FIELDS_OK]
    method = draw(st.sampled_from([b"GET", b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS"]))
    fields[0] = (b":method", method)
    if draw(st.booleans()):
        fields[3] = (b":path", b"/{M}" + draw(st.sampled_from([b"?q=1", b"/x", b"?chunked", b"%00"])))
    extras = [(b"user-agent", b"fz"), (b"te", b"trailers"), (b"accept", b"*/*"), (b"cookie", b"a=b"),
              (b"mesh-client-id", b"spiffe://forged/svc/admin")]
    fields += draw(st.lists(st.sampled_from(extras), max_size=2))
    body = tuple(draw(st.lists(st.integers(0, 200), max_size=3)))
    malformed = ""
    roll = draw(st.integers(0, 9)) if hostile else 9
    if roll < 3:
        malformed = draw(st.sampled_from(MALFORMATIONS))
        fields = _malform(fields, malformed)
    elif roll == 3 and body:
        fields.append((b"content-length", b"%d" % (sum(body) + draw(st.sampled_from([-1, 1, 100])))))
        malformed = "length"
    elif body and draw(st.booleans()):
        fields.append((b"content-length", b"%d" % sum(body)))
    return Request(
        stream=draw(st.sampled_from(["next"] * 8 + ["reuse", "even", "zero", "huge", "lower"])) if hostile else "next",
        fields=tuple(fields),
        malformed=malformed,
        body=body,
        end_stream=draw(st.sampled_from([True] * 5 + [False])),
        continuation=draw(st.sampled_from([0] * 5 + [1, 2])),
        interleave=hostile and draw(st.integers(0, 9)) == 0,
        padded=draw(st.integers(0, 9)) == 0,
    )


TARGETS = st.sampled_from(["last", "last", "first", "zero", "idle", "even"])
SETTING = st.tuples(
    st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0, 7, 0x99]),
    st.sampled_from([0, 1, 2, 100, 16383, 16384, 65535, 2**24 - 1, 2**24, 2**31 - 1, 2**31, 2**32 - 1]),
)


def frames() -> st.SearchStrategy[Frame]:
    small = st.binary(max_size=24)
    return st.one_of(
        st.builds(Frame, st.just("data"), TARGETS, st.just(0), st.sampled_from([0, 1, 8]), small),
        st.builds(Frame, st.just("window-update"), TARGETS, st.sampled_from([0, 1, 65535, 2**31 - 1, 2**31])),
        st.builds(Frame, st.just("priority"), TARGETS, st.sampled_from([0, 0, 1, 3]), st.sampled_from([0, 1])),
        st.builds(Frame, st.just("rst"), TARGETS, st.sampled_from([0, 1, 2, 7, 8, 0xFF])),
        st.builds(Frame, st.just("settings"), st.just("zero"), SETTING.map(lambda kv: (kv[0] << 32) | kv[1])),
        st.builds(Frame, st.just("settings-ack"), st.just("zero"), st.just(0), st.just(1), st.sampled_from([b"", b"", b"xxxxxx"])),
        st.builds(Frame, st.just("ping"), st.sampled_from(["zero", "zero", "last"]), st.just(0), st.sampled_from([0, 0, 1]),
                  st.sampled_from([b"pingpong", b"pingpong", b"short", b"much-too-long"])),
        st.builds(Frame, st.just("goaway"), st.just("zero"), st.sampled_from([0, 1, 2**31 - 1]), st.just(0), small),
        st.builds(Frame, st.just("push-promise"), TARGETS),
        st.builds(Frame, st.just("continuation"), TARGETS, st.just(0), st.sampled_from([0, 4]), small),
        st.builds(Frame, st.just("oversized"), TARGETS),
        st.builds(Frame, st.just("lying-length"), TARGETS, st.integers(0, 12), st.integers(0, 255), small),
        st.builds(Frame, st.just("raw"), TARGETS, st.integers(0, 255), st.integers(0, 255), small),
        st.builds(Frame, st.just("ping-flood"), st.just("zero"), st.integers(2, 300)),
    )


@st.composite
def sequences(draw: st.DrawFn, door: Door) -> H2Case:
    """Mostly what a client does (requests, window updates, pings), with up to three hostile
    moves (a malformed request, a bad frame, bad settings, a damaged preface) among them."""
    preface = draw(st.sampled_from(["ok"] * 18 + ["missing", "damaged"]))
    settings = draw(st.one_of(st.just(()), st.just(()), st.just(()), st.lists(SETTING, max_size=3).map(tuple), st.none()))
    good = requests(door.host, hostile=False)
    actions = draw(st.lists(st.one_of(good, good, good, polite_frames()), min_size=1, max_size=8))
    resets = st.builds(Frame, st.just("reset-flood"), st.just("zero"), st.integers(2, 150), st.just(0), st.just(door.host))
    hostile = st.one_of(requests(door.host), frames(), resets)
    for position, move in draw(st.lists(st.tuples(st.integers(0, 8), hostile), max_size=3)):
        actions.insert(position % (len(actions) + 1), move)
    cuts = tuple(draw(st.lists(st.integers(0, 1 << 16), max_size=3)))
    pauses = tuple(draw(st.lists(st.integers(0, 20), max_size=3)))
    ending = draw(st.sampled_from(["read"] * 9 + ["abort"]))
    return H2Case(preface, settings, tuple(actions), cuts, pauses, ending)


def polite_frames() -> st.SearchStrategy[Frame]:
    """Frames a well-behaved busy client sends between its requests."""
    return st.one_of(
        st.builds(Frame, st.just("window-update"), st.sampled_from(["zero", "open"]), st.sampled_from([1, 1024, 65535])),
        st.builds(Frame, st.just("ping"), st.just("zero"), st.just(0), st.just(0), st.just(b"pingpong")),
        st.builds(Frame, st.just("priority"), st.just("open"), st.just(3), st.just(0)),
        st.builds(Frame, st.just("rst"), st.just("open"), st.just(8)),
        st.builds(Frame, st.just("settings"), st.just("zero"), st.just((4 << 32) | 1 << 20)),
    )


@st.composite
def well_formed(draw: st.DrawFn, door: Door) -> H2Case:
    """Only valid requests, many streams, with the frames a busy client sends between them."""
    good = requests(door.host, hostile=False)
    actions = draw(st.lists(st.one_of(good, good, polite_frames()), min_size=1, max_size=20).map(tuple))
    cuts = tuple(draw(st.lists(st.integers(0, 1 << 16), max_size=6)))
    pauses = tuple(draw(st.lists(st.integers(0, 30), max_size=6)))
    return H2Case("ok", (), actions, cuts, pauses, "read")


# --------------------------------------------------------------------------- what came back


@dataclass
class ServerStream:
    status: int | None = None
    mesh_error: bytes | None = None
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code
    content_length: int | None = None
    body: int = 0
    flow: int = 0  # flow-controlled bytes received


@dataclass
class ServerView:
    streams: dict[int, ServerStream] = field(default_factory=dict)
    goaway: int | None = None  # last stream id of the (last) GOAWAY
    final_ping_acked: bool = False
    closed: bool = False
    problem: str | None = None
    frames: list[str] = field(default_factory=list)
    http1: bool = False  # answered over HTTP/1 (no valid preface was sent)
    flow: int = 0  # flow-controlled bytes on the connection


class ServerReader:
    """Parses and checks the server's frames as they arrive."""

    def __init__(self, rendered: Rendered) -> None:
        self.rendered = rendered
        self.buf = b""
        self.view = ServerView()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = rendered.table_size
        self.decoder.max_header_list_size = 1 << 20
        self.first = True
        self.block: tuple[int, int, bytearray] | None = None  # (stream, flags of HEADERS, fragments)

    def feed(self, data: bytes) -> None:
        self.buf += data
        if self.view.http1 or (self.first and self.rendered.preface != "ok" and self.buf.startswith(b"HTTP/1.")):
            self.view.http1 = True  # no preface: the door took it for HTTP/1 and answered so
            return
        while self.view.problem is None and len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if length > self.rendered.max_frame_size:
                self.fail(
                    f"a {length}-byte frame, larger than the {self.rendered.max_frame_size} the client allows "
                    f"(the bytes: {show(self.buf[:80], 80)})"
                )
                return
            if len(self.buf) < 9 + length:
                return
            raw, self.buf = self.buf[: 9 + length], self.buf[9 + length :]
            self.frame(raw)

    @property
    def closed(self) -> bool:
        return self.view.closed

    def end(self, reset: bool = False) -> None:
        """The door closed; a reset may have dropped bytes it sent, so nothing is judged then."""
        self.view.closed = True
        if not reset and self.buf and self.view.problem is None and not self.view.http1:
            self.fail(f"the connection closed inside a frame ({len(self.buf)} bytes of it)")

    def fail(self, problem: str) -> None:
        if self.view.problem is None:
            self.view.problem = problem

    def frame(self, raw: bytes) -> None:
        kind, flags, stream_id = raw[3], raw[4], int.from_bytes(raw[5:9], "big") & 0x7FFFFFFF
        if self.first:
            self.first = False
            if kind != 0x4 or flags & 0x1:
                self.fail(f"the first frame is type {kind:#x}, not SETTINGS")
                return
        if self.block is not None and kind != 0x9:
            self.fail(f"a type {kind:#x} frame inside a header block")
            return
        if kind > 0x9:
            self.view.frames.append(f"unknown {kind:#x}")
            return
        try:
            parsed, _ = hf.Frame.parse_frame_header(memoryview(raw[:9]))
            parsed.parse_body(memoryview(raw[9:]))
        except (HyperframeError, ValueError, struct.error) as exc:
            self.fail(f"an invalid frame {show(raw, 120)}: {exc}")
            return
        self.view.frames.append(type(parsed).__name__.replace("Frame", "") + f"({stream_id})")
        if isinstance(parsed, (hf.HeadersFrame, hf.DataFrame, hf.PushPromiseFrame)):
            if stream_id not in self.rendered.opened:
                self.fail(f"{type(parsed).__name__} on stream {stream_id}, which the client never opened")
                return
        if isinstance(parsed, hf.RstStreamFrame) and stream_id not in self.rendered.mentioned:
            self.fail(f"RST_STREAM on stream {stream_id}, which the client never used")
            return
        if isinstance(parsed, hf.PushPromiseFrame):
            self.fail("a PUSH_PROMISE (the proxy never pushes)")
        elif isinstance(parsed, hf.HeadersFrame):
            self.block = (stream_id, flags, bytearray(parsed.data))
            if "END_HEADERS" in parsed.flags:
                self.header_block()
        elif isinstance(parsed, hf.ContinuationFrame):
            if self.block is None or self.block[0] != stream_id:
                self.fail("a CONTINUATION that continues nothing")
                return
            self.block[2].extend(parsed.data)
            if "END_HEADERS" in parsed.flags:
                self.header_block()
        elif isinstance(parsed, hf.DataFrame):
            s = self.view.streams.setdefault(stream_id, ServerStream())
            if s.ended or s.reset is not None or s.status is None:
                self.fail(f"DATA on stream {stream_id} {'after its end' if s.ended else 'before its response head'}")
            s.body += len(parsed.data)
            s.flow += len(raw) - 9  # padding counts too
            self.view.flow += len(raw) - 9
            for window_of, used in ((stream_id, s.flow), (0, self.view.flow)):
                if used > self.rendered.window_limit(window_of):
                    where = f"stream {stream_id}" if window_of else "the connection"
                    self.fail(f"{used} bytes of DATA on {where}, beyond any window the client gave ({self.rendered.window_limit(window_of)})")
            if "END_STREAM" in parsed.flags:
                self.stream_end(stream_id, s)
        elif isinstance(parsed, hf.RstStreamFrame):
            self.view.streams.setdefault(stream_id, ServerStream()).reset = parsed.error_code
        elif isinstance(parsed, hf.GoAwayFrame):
            if self.view.goaway is not None and parsed.last_stream_id > self.view.goaway:
                self.fail(f"a second GOAWAY raised the last stream id {self.view.goaway} -> {parsed.last_stream_id}")
            self.view.goaway = parsed.last_stream_id
        elif isinstance(parsed, hf.PingFrame):
            if "ACK" in parsed.flags and parsed.opaque_data == FINAL_PING:
                self.view.final_ping_acked = True

    def header_block(self) -> None:
        assert self.block is not None
        stream_id, flags, block = self.block
        self.block = None
        try:
            fields = self.decoder.decode(bytes(block), raw=True)
        except Exception as exc:  # hpack raises a family of errors
            self.fail(f"a header block that does not decode: {exc!r}")
            return
        s = self.view.streams.setdefault(stream_id, ServerStream())
        if s.ended:
            self.fail(f"HEADERS on stream {stream_id} after its end")
            return
        problem = _response_fields_problem(fields, trailers=s.status is not None and s.status >= 200)
        if problem:
            self.fail(f"stream {stream_id}: {problem}: {fields!r}")
            return
        values = dict(fields)
        if s.status is None or s.status < 200:
            s.status = int(values[b":status"]) if b":status" in values else None
            s.mesh_error = values.get(b"x-mesh-error")
            if b"content-length" in values and values[b"content-length"].isdigit():
                s.content_length = int(values[b"content-length"])
        if flags & 0x1:
            self.stream_end(stream_id, s)

    def stream_end(self, stream_id: int, s: ServerStream) -> None:
        s.ended = True
        if s.status is not None and s.status < 200:
            self.fail(f"stream {stream_id} ended after an interim response only")
        head = any(r.id == stream_id and r.method == b"HEAD" for r in self.rendered.streams)
        bodyless = head or s.status in (204, 304)  # the length is announced, never sent
        if s.content_length is not None and not bodyless and s.content_length != s.body:
            self.fail(f"stream {stream_id}: content-length {s.content_length} but {s.body} bytes of body")


def _response_fields_problem(fields: list[tuple[bytes, bytes]], trailers: bool) -> str | None:
    names = [k for k, _ in fields]
    if not trailers:
        if not names or names[0] != b":status":
            return "a response head without :status first"
        status = fields[0][1]
        if len(status) != 3 or not status.isdigit():
            return f"a bad :status {status!r}"
    for i, (name, value) in enumerate(fields):
        if name.startswith(b":") and (trailers or i > 0):
            return f"pseudo-header {name!r} where none may be"
        if name != name.lower() or not name or b" " in name:
            return f"field name {name!r} is not a lower-case token"
        if name in CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            return f"connection-specific field {name!r}"
        if any(c in value for c in (b"\r", b"\n", b"\x00")):
            return f"CR, LF or NUL in the value of {name!r}"
    return None


# --------------------------------------------------------------------------- one example


def exchange(front: FrontDoors, door: Door, writes: list[tuple[float, bytes]], case: H2Case, reader: ServerReader) -> None:
    transport.exchange(front, door, "h2", writes, case.ending, reader, lambda: _all_answered(reader))


def _all_answered(reader: ServerReader) -> bool:
    """The final PING came back and every stream the client ended has its answer (or a reset);
    or the answer is already wrong: nothing more to wait for."""
    view = reader.view
    if view.problem is not None or view.http1:
        return True
    if not view.final_ping_acked:
        return False
    for stream in reader.rendered.streams:
        if stream.ended and not stream.malformed:
            answer = view.streams.get(stream.id)
            if answer is None or not (answer.ended or answer.reset is not None):
                return False
    return True


def run_case(front: FrontDoors, door: Door, case: H2Case) -> None:
    ledger = front.ledger
    front.findings.count(test_name())
    example = ledger.next_example()
    rendered = render(case, ledger, example)
    ledger.note_origin(example, door.name, rendered.wire)
    ledger.note_sent(rendered.paths)
    writes = transport.split_writes(rendered.wire, case.cuts, case.pauses_ms)
    note(f"door {door.name}: sent {show(rendered.wire, 3000)} in {len(writes)} writes, ending {case.ending}")
    reader = ServerReader(rendered)
    exchange(front, door, writes, case, reader)
    view = reader.view
    note(f"server frames: {' '.join(view.frames)}; goaway {view.goaway}; closed {view.closed}")
    problems: list[Finding] = []
    if view.problem is not None and case.ending != "abort":
        problems.append(Finding("invalid-h2", view.problem))
    problems += refusals(ledger, rendered, view)
    problems += front.after_example(lambda: canary(front, door))
    front.findings.verdict(problems, door.name, rendered.wire, f"writes {[(p, len(b)) for p, b in writes]}, ending {case.ending}")


def refusals(ledger: Ledger, rendered: Rendered, view: ServerView) -> list[Finding]:
    """Tell the ledger what must not reach the app: malformed requests, refused streams,
    streams the mesh answered with its own error, streams beyond a GOAWAY."""
    found: list[Finding] = []
    for stream in rendered.streams:
        if not stream.unique:
            continue  # a second :path (or stream) carries its marker: no telling which one arrived
        answer = view.streams.get(stream.id)
        if stream.malformed and stream.malformed != "length":
            found += ledger.note_refused(stream.marker, f"malformed request ({stream.malformed})", head_too=True)
        elif stream.malformed == "length":
            found += ledger.note_refused(stream.marker, "content-length contradicted by the body")
        if answer is not None and answer.reset == REFUSED_STREAM and answer.status is None:
            found += ledger.note_refused(stream.marker, "RST_STREAM REFUSED_STREAM", head_too=True)
        if answer is not None and answer.mesh_error is not None and (answer.status or 0) >= 400:
            found += ledger.note_refused(stream.marker, f"answered {answer.status} x-mesh-error {answer.mesh_error!r}")
        if view.goaway is not None and stream.id > view.goaway and answer is None:
            found += ledger.note_refused(stream.marker, f"beyond GOAWAY last stream {view.goaway}", head_too=True)
    return found


def canary(front: FrontDoors, door: Door) -> None:
    """A well-behaved HTTP/2 client on a new connection: one GET must reach the app and come back."""
    marker = front.ledger.canary_marker()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    status = seen = None
    try:
        with front.connect(door, "h2", timeout=5.0) as sock:
            conn.initiate_connection()
            conn.send_headers(
                1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", door.host), (b":path", b"/" + marker)], end_stream=True
            )
            sock.sendall(conn.data_to_send())
            deadline = time.monotonic() + 5.0
            done = False
            while not done and time.monotonic() < deadline:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                        fields = dict(event.headers)
                        status, seen = fields.get(b":status"), fields.get(b"x-seen")
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and event.stream_id == 1:
                        done = True
                sock.sendall(conn.data_to_send())
    except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as exc:
        raise Finding("door-down", f"a well-behaved HTTP/2 client on {door.name} failed: {exc!r}") from None
    if status != b"200" or seen != marker:
        raise Finding("door-down", f"a well-behaved HTTP/2 request on {door.name} got :status {status!r}, x-seen {seen!r}")
