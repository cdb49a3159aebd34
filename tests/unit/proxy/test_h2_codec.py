"""The proxy's HTTP/2 codec against h2, its oracle: the same inputs must give the same outcomes.

Hypothesis writes scripts of what a peer sends (frames, valid and not: bad lengths and padding,
unknown types, frames on stream 0 or on streams that are idle, closed or reset, window
overflows, bad SETTINGS, header blocks that break HPACK or RFC 9113's field rules, CONTINUATION
interleaved with other frames, everything cut at random places) and of what the proxy calls
(headers, data, trailers, resets, acknowledgements, GOAWAY). Each step goes to the codec and to
h2 configured as the proxy configured it (``_h2_oracle.py``), and after each step the two must
agree on the events (type and every field), the exception (class and error code, which is what
the GOAWAY says), the bytes to send (byte for byte), and the state the proxy reads (windows,
streams and how they closed, the budget counters).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple
from hypothesis import HealthCheck, given, note, settings, strategies as st

from mesh.proxy._h2_encoder import ProxyEncoder
from mesh.proxy._h2_guard import ServerConnection
from mesh.proxy._h2_transport import CONNECTION_WINDOW, DEFAULT_WINDOW, MAX_HEADER_LIST_SIZE, STREAM_WINDOW, h2_config
from mesh.proxy.protocol.http2 import PREFACE, Connection
from mesh.proxy.protocol.http2._hpack import Decoder
from tests.unit.proxy._h2_oracle import OracleConnection, OracleServerConnection

# -- normalising what the two sides produce ------------------------------------------------


def norm(value: Any) -> Any:
    if isinstance(value, h2.events.Event):
        return (type(value).__name__, {k: norm(v) for k, v in sorted(vars(value).items())})
    if isinstance(value, h2.settings.ChangedSetting):
        return ("changed", norm(value.setting), value.original_value, value.new_value)
    if isinstance(value, Enum):
        return (type(value).__name__, value.value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bytes):
        return (value[0], value[1], isinstance(value, NeverIndexedHeaderTuple))
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    if isinstance(value, dict):
        return sorted((repr(norm(k)), norm(v)) for k, v in value.items())
    if hasattr(value, "serialize") and hasattr(value, "stream_id"):  # UnknownFrameReceived's frame
        return ("frame", value.type, value.flag_byte, value.stream_id, value.body)
    return value


def outcome(call: Any) -> tuple[Any, Any]:
    try:
        return "ok", norm(call())
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return "raised", (type(exc).__name__, norm(getattr(exc, "error_code", None)))


def state(conn: Any) -> Any:
    if isinstance(conn, Connection):
        machine = conn.state
        streams = {
            sid: (s.state, s.outbound_flow_control_window, s.window.size, s.window.max_size, s.window.processed)
            for sid, s in conn.streams.items()
        }
        window = (conn._window.size, conn._window.max_size, conn._window.processed)
    else:
        machine = conn.state_machine.state.value
        streams = {}
        for sid, s in conn.streams.items():
            manager = s._inbound_window_manager
            streams[sid] = (int(s.state_machine.state), s.outbound_flow_control_window, manager.current_window_size, manager.max_window_size, manager._bytes_processed)  # fmt: skip
        manager = conn._inbound_flow_control_window_manager
        window = (manager.current_window_size, manager.max_window_size, manager._bytes_processed)
    view = [
        machine,
        streams,
        dict(conn._closed_streams),
        conn.highest_inbound_stream_id,
        conn.highest_outbound_stream_id,
        conn.outbound_flow_control_window,
        window,
        conn.max_outbound_frame_size,
        conn.max_inbound_frame_size,
    ]
    if hasattr(conn, "over_limit"):
        view += [sorted(conn.over_limit), conn.resets_answered, conn.idle_frames]
    return view


# -- the two connections, configured as the proxy configures them -----------------------------


@dataclass
class Setup:
    client_side: bool
    peer_proxy: bool
    limit: int
    stream_window: int
    grow_connection: bool


def build(setup: Setup) -> tuple[Any, Any]:
    config = h2_config(client_side=setup.client_side, peer_proxy=setup.peer_proxy)
    if setup.client_side:
        pair = (Connection(config), OracleConnection(config=config))
        values = {
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: setup.stream_window,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
        }
    else:
        pair = (ServerConnection(config), OracleServerConnection(config=config))
        values = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: setup.limit,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: setup.stream_window,
        }
    for conn in pair:
        conn.local_settings = h2.settings.Settings(client=setup.client_side, initial_values=values)
        conn.encoder = ProxyEncoder()
        conn.initiate_connection()
        if setup.grow_connection:
            conn.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
    return pair


# -- what a peer sends ---------------------------------------------------------------------------


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">L", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">L", stream_id) + payload


NAMES = [
    b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b":bogus", b"host", b"te",
    b"connection", b"transfer-encoding", b"cookie", b"content-length", b"x-a", b"X-Up", b"bad name", b"", b"a:b",
    b"user-agent", b"grpc-status", b"content-type", b"authorization",
]  # fmt: skip
VALUES = [
    b"GET", b"POST", b"HEAD", b"CONNECT", b"http", b"/", b"/p", b"", b"web", b"other", b"trailers", b"gzip", b"0",
    b"5", b"x", b"a\r\nb", b"nul\x00", b" lead", b"trail\t", b"100", b"103", b"200", b"a=b", b"c=d", b"12x",
]  # fmt: skip
STREAM_IDS = st.sampled_from([1, 1, 1, 3, 3, 5, 7, 9, 2, 4, 0, 2**31 - 1])
FIELD = st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES))
EXTRA = st.lists(st.sampled_from([(b"x-a", b"x"), (b"cookie", b"a=b"), (b"cookie", b"c=d"), (b"content-type", b"application/grpc"), (b"authorization", b"secret"), (b"user-agent", b"t")]), max_size=3)  # fmt: skip


FLAWS: list[tuple[str, bytes, bytes]] = [
    ("append", b"te", b"gzip"), ("append", b"te", b"Trailers"), ("append", b"connection", b"close"),
    ("append", b"keep-alive", b"5"), ("append", b"Upper", b"x"), ("append", b"sp ace", b"x"), ("append", b"a:b", b"x"),
    ("append", b"x-v", b" x"), ("append", b"x-v", b"x\t"), ("append", b"x-v", b"a\x00b"), ("append", b"x-v", b"a\nb"),
    ("append", b"host", b"web"), ("append", b"host", b"elsewhere"), ("append", b":path", b"/again"),
    ("append", b":bogus", b"x"), ("append", b":status", b"200"), ("append", b":protocol", b"websocket"),
    ("append", b"content-length", b"1"), ("append", b"", b"x"), ("append", b"x-v", b""), ("append", b"cookie", b"z=1"),
    ("first", b"x-early", b"1"), ("first", b":method", b"GET"), ("drop", b":path", b""), ("drop", b":authority", b""),
    ("drop", b":status", b""), ("replace", b":path", b""), ("replace", b":method", b"CONNECT"),
    ("replace", b":authority", b"a b"),
]  # fmt: skip


def with_flaw(fields: list[tuple[bytes, bytes]], flaw: tuple[str, bytes, bytes]) -> list[tuple[bytes, bytes]]:
    how, name, value = flaw
    if how == "append":
        return [*fields, (name, value)]
    if how == "first":
        return [(name, value), *fields]
    if how == "drop":
        return [f for f in fields if f[0] != name]
    return [(n, value if n == name else v) for n, v in fields]


@st.composite
def header_list(draw: st.DrawFn, client_side: bool, polite: bool = False) -> list[tuple[bytes, bytes]]:
    """What the peer sends: requests to a server, responses and trailers to a client; often mangled."""
    if polite:
        kind = draw(
            st.sampled_from(["response", "response", "trailers"] if client_side else ["request", "request", "trailers"])
        )
    else:
        kind = draw(st.sampled_from(["request", "response", "trailers", "informational", "random"]))
    if kind == "request":
        method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"CONNECT"]))
        fields = [(b":method", method), (b":scheme", b"http"), (b":authority", b"web"), (b":path", b"/p")]
        if draw(st.booleans()):
            fields.append((b"content-length", draw(st.sampled_from([b"0", b"3", b"5", b"x"]))))
    elif kind == "response":
        fields = [(b":status", draw(st.sampled_from([b"200", b"204", b"404"])))]
        if draw(st.booleans()):
            fields.append((b"content-length", draw(st.sampled_from([b"0", b"3", b"5"]))))
    elif kind == "informational":
        fields = [(b":status", b"100")]
    elif kind == "trailers":
        fields = [(b"grpc-status", b"0")]
    else:
        fields = draw(st.lists(FIELD, max_size=6))
    fields = fields + draw(EXTRA)
    if not polite and draw(st.booleans()):  # one flaw in an otherwise good block
        return with_flaw(fields, draw(st.sampled_from(FLAWS)))
    for _ in range(0 if polite else draw(st.integers(0, 2))):  # mangle: insert, drop or swap a field
        how = draw(st.sampled_from(["insert", "drop", "swap"]))
        if how == "insert":
            fields.insert(draw(st.integers(0, len(fields))), draw(FIELD))
        elif fields:
            i = draw(st.integers(0, len(fields) - 1))
            if how == "drop":
                del fields[i]
            else:
                j = draw(st.integers(0, len(fields) - 1))
                fields[i], fields[j] = fields[j], fields[i]
    return fields


@st.composite
def header_block(draw: st.DrawFn, encoder: hpack.Encoder, client_side: bool, polite: bool = False) -> bytes:
    if not polite and draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=24))  # HPACK garbage
    fields = draw(header_list(client_side, polite))
    if draw(st.integers(0, 7)) == 0:
        fields = [NeverIndexedHeaderTuple(n, v) for n, v in fields]
    return bytes(encoder.encode(fields, huffman=draw(st.booleans())))


@st.composite
def frames(draw: st.DrawFn, encoder: hpack.Encoder, client_side: bool, known: list[int]) -> bytes:
    kind = draw(
        st.sampled_from(
            ["headers"] * 6 + ["data"] * 5 + ["window"] * 2 + ["rst"] * 2
            + ["settings", "ping", "priority", "goaway", "unknown", "altsvc", "push", "continuation", "junk"]
        )
    )  # fmt: skip
    stream_id = draw(st.sampled_from(known)) if known and draw(st.booleans()) else draw(STREAM_IDS)
    if kind == "headers":
        block = draw(header_block(encoder, client_side))
        flags = draw(st.sampled_from([0x5, 0x4, 0x4, 0x5, 0x1, 0x0, 0x24, 0xD, 0x2D]))
        payload = block
        if flags & 0x20:
            depends = draw(st.sampled_from([0, stream_id, 3, 0x80000001]))
            payload = struct.pack(">LB", depends, draw(st.integers(0, 255))) + payload
        if flags & 0x8:
            pad = draw(st.integers(0, 6))
            payload = (
                bytes(
                    [draw(st.sampled_from([pad, 200, min(len(payload) + pad, 255), max(min(len(payload) + pad - 1, 255), 0)]))]
                )
                + payload
                + b"\0" * pad
            )
        if flags & 0x4:
            return raw_frame(1, flags, stream_id, payload)
        # No END_HEADERS: the rest comes in CONTINUATIONs, maybe with something else in between.
        out = raw_frame(1, flags, stream_id, payload[: len(payload) // 2])
        rest = payload[len(payload) // 2 :]
        if draw(st.integers(0, 3)) == 0:  # something else in the middle of the header block
            out += draw(
                st.sampled_from(
                    [
                        raw_frame(6, 0, 0, b"12345678"),
                        raw_frame(8, 0, 0, b"\0\0\0\1"),
                        raw_frame(0, 0, 1, b"x"),
                        raw_frame(0x0B, 0, 0, b""),
                        raw_frame(9, 0, stream_id + 2, b""),
                        raw_frame(1, 0x4, stream_id, b"\x82"),
                    ]
                )
            )
        for _ in range(draw(st.sampled_from([0, 0, 1, 62, 63, 70]))):
            out += raw_frame(9, 0, stream_id, b"")
        return out + raw_frame(9, 0x4, stream_id, rest)
    if kind == "data":
        size = draw(st.one_of(st.integers(0, 40), st.sampled_from([100, 16384, 16385, 65536])))
        flags = draw(st.sampled_from([0, 1, 1, 8, 9]))
        payload = b"d" * size
        if flags & 0x8:
            pad = draw(st.integers(0, 10))
            payload = (
                bytes([draw(st.sampled_from([pad, 255, 0, min(len(payload) + pad, 255)]))]) + payload + b"\0" * pad
            )
        return raw_frame(0, flags, stream_id, payload)
    if kind == "window":
        increment = draw(st.sampled_from([1, 100, 65535, 2**31 - 1, 0, 2**31 + 5, 2**24]))
        body = struct.pack(">L", increment)[: draw(st.sampled_from([4, 4, 4, 3]))]
        return raw_frame(8, 0, draw(st.sampled_from([0, 0, stream_id])), body)
    if kind == "rst":
        body = struct.pack(">L", draw(st.sampled_from([0, 7, 8, 2, 0x99])))[: draw(st.sampled_from([4, 4, 2]))]
        return raw_frame(3, 0, stream_id, body)
    if kind == "settings":
        if draw(st.integers(0, 3)) == 0:
            return raw_frame(4, 1, draw(st.sampled_from([0, 0, 1])), b"" if draw(st.booleans()) else b"\0\0\0\0\0\0")
        values = draw(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 0x99]), st.sampled_from([0, 1, 2, 100, 4096, 16384, 65535, 2**24, 2**31, 2**31 - 1])), max_size=4))  # fmt: skip
        body = b"".join(struct.pack(">HL", k, v) for k, v in values)
        if draw(st.integers(0, 5)) == 0:
            body = body[:-1] + b""
        return raw_frame(4, 0, draw(st.sampled_from([0, 0, 0, 3])), body)
    if kind == "ping":
        return raw_frame(
            6,
            draw(st.sampled_from([0, 1])),
            draw(st.sampled_from([0, 0, 1])),
            b"12345678"[: draw(st.sampled_from([8, 8, 7]))],
        )
    if kind == "priority":
        body = struct.pack(">LB", draw(st.sampled_from([0, stream_id, 0x80000003])), 9)[
            : draw(st.sampled_from([5, 5, 4]))
        ]
        return raw_frame(2, 0, stream_id, body)
    if kind == "goaway":
        body = struct.pack(
            ">LL", draw(st.sampled_from([0, 1, 3, 2**31 - 1])), draw(st.sampled_from([0, 0, 1, 2, 0x99]))
        )
        body += draw(st.sampled_from([b"", b"bye"]))
        return raw_frame(7, 0, draw(st.sampled_from([0, 0, 0, 1])), body[: draw(st.sampled_from([20, 20, 6]))])
    if kind == "unknown":
        return raw_frame(draw(st.sampled_from([0x0B, 0x10, 0xFA])), draw(st.integers(0, 255)), stream_id, b"ext")
    if kind == "altsvc":
        origin = draw(st.sampled_from([b"", b"example.com"]))
        body = struct.pack(">H", len(origin) + draw(st.sampled_from([0, 0, 3]))) + origin + b'h2=":443"'
        return raw_frame(10, 0, draw(st.sampled_from([0, stream_id])), body)
    if kind == "push":
        block = draw(header_block(encoder, False))
        return raw_frame(5, 0x4, stream_id, struct.pack(">L", draw(st.sampled_from([2, 4, 3]))) + block)
    if kind == "continuation":
        return raw_frame(9, draw(st.sampled_from([0, 4])), stream_id, draw(st.binary(max_size=6)))
    return draw(st.binary(min_size=1, max_size=20))


@dataclass
class Peer:
    """What a well-behaved peer knows: the streams it may use, and those it sent a head on."""

    client_side: bool  # the codec's side
    streams: list[int]
    headed: set[int]


@st.composite
def polite_frames(draw: st.DrawFn, encoder: hpack.Encoder, peer: Peer, flaws: bool = False) -> bytes:
    """What a well-behaved peer sends, mostly: requests on new streams (or responses on ours), their
    bodies and trailers, window updates, resets, pings, SETTINGS."""
    kind = draw(st.sampled_from(["headers"] * 4 + ["data"] * 4 + ["window"] * 2 + ["rst", "ping", "settings"]))
    headed = sorted(peer.headed)
    if kind == "headers":
        unheaded = [sid for sid in peer.streams if sid not in peer.headed]
        if peer.client_side:
            if not peer.streams:
                return raw_frame(6, 0, 0, b"12345678")
            stream_id = draw(st.sampled_from(peer.streams))
        elif unheaded or not headed or draw(st.booleans()):
            stream_id = max(peer.streams, default=-1) + 2
            peer.streams.append(stream_id)
        else:
            stream_id = draw(st.sampled_from(headed))
        first = stream_id not in peer.headed
        peer.headed.add(stream_id)
        fields = draw(header_list(peer.client_side, polite=True)) if first else [(b"grpc-status", b"0")]
        if first and not peer.client_side:
            fields = [f for f in fields if f[0] != b"content-length" and f[1] != b"CONNECT"] or REQUEST
            if not fields[0][0].startswith(b":"):
                fields = REQUEST + fields
        if first and peer.client_side and not fields[0][0].startswith(b":"):
            fields = RESPONSE + fields
        if flaws and draw(st.integers(0, 2)) == 0:  # one flaw in an otherwise good block
            fields = with_flaw(fields, draw(st.sampled_from(FLAWS)))
        block = bytes(encoder.encode(fields, huffman=draw(st.booleans())))
        end = 0x1 if not first or draw(st.integers(0, 2)) == 0 else 0
        if draw(st.integers(0, 4)):
            return raw_frame(1, 0x4 | end, stream_id, block)
        cut = draw(st.integers(0, len(block)))
        return raw_frame(1, end, stream_id, block[:cut]) + raw_frame(9, 0x4, stream_id, block[cut:])
    if not headed:
        return raw_frame(6, 1, 0, b"12345678")
    stream_id = draw(st.sampled_from(headed))
    if kind == "data":
        size = draw(st.sampled_from([0, 1, 3, 5, 50, 200, 5000]))
        flags = draw(st.sampled_from([0, 0, 1, 8, 9]))
        payload = b"\x02" + b"d" * size + b"\0\0" if flags & 0x8 else b"d" * size  # PADDED: 2 bytes of padding
        return raw_frame(0, flags, stream_id, payload)
    if kind == "window":
        return raw_frame(
            8, 0, draw(st.sampled_from([0, stream_id])), struct.pack(">L", draw(st.sampled_from([1, 5000, 2**20])))
        )
    if kind == "rst":
        return raw_frame(3, 0, stream_id, struct.pack(">L", draw(st.sampled_from([0, 8]))))
    if kind == "ping":
        return raw_frame(6, draw(st.sampled_from([0, 1])), 0, b"12345678")
    values = draw(
        st.sampled_from([b"", struct.pack(">HL", 4, 70000), struct.pack(">HL", 1, 0), struct.pack(">HL", 5, 20000)])
    )
    return raw_frame(4, 0, 0, values) if draw(st.integers(0, 3)) else raw_frame(4, 1, 0, b"")


RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain")]
REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"web"), (b":path", b"/p")]


@st.composite
def calls(draw: st.DrawFn, client_side: bool) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """What the proxy calls on a connection (and a few things it never should)."""
    stream_id = draw(STREAM_IDS)
    kind = draw(st.sampled_from(["headers"] * 6 + ["data"] * 6 + ["end", "end", "reset", "reset", "ack", "ack", "ack", "window", "ping", "next", "count"]))  # fmt: skip
    if draw(st.integers(0, 30)) == 0:
        kind = "goaway"  # ends the connection: rare
    if kind == "headers":
        head = draw(st.sampled_from([REQUEST, RESPONSE, [(b"grpc-status", b"0")], [(b":status", b"103")]]))
        if client_side and head is REQUEST and draw(st.booleans()):
            stream_id = -1  # the next available id
        return "send_headers", (stream_id, head), {"end_stream": draw(st.booleans())}
    if kind == "data":
        size = draw(st.sampled_from([0, 1, 10, 100, 16384, 16385, 70000]))
        return "send_data", (stream_id, b"r" * size), {"end_stream": draw(st.booleans())}
    if kind == "end":
        return "end_stream", (stream_id,), {}
    if kind == "reset":
        return "reset_stream", (stream_id, draw(st.sampled_from([0, 7, 8]))), {}
    if kind == "ack":
        return (
            "acknowledge_received_data",
            (draw(st.sampled_from([0, 1, 40, 50, 5000, 32767, 131072, 200000])), stream_id),
            {},
        )
    if kind == "window":
        return "increment_flow_control_window", (draw(st.sampled_from([1, 1000, 2**31 - 1])),), {}
    if kind == "goaway":
        return (
            "close_connection",
            (),
            {"error_code": draw(st.sampled_from([0, 11])), "last_stream_id": draw(st.sampled_from([None, 3]))},
        )
    if kind == "ping":
        return "ping", (b"pingping",), {}
    if kind == "next":
        return "get_next_available_stream_id", (), {}
    return "open_inbound_streams" if draw(st.booleans()) else "open_outbound_streams", (), {}


@st.composite
def scripts(draw: st.DrawFn) -> tuple[Setup, list[Any]]:
    client_side = draw(st.booleans())
    setup = Setup(
        client_side=client_side,
        peer_proxy=draw(st.integers(0, 4)) == 0,
        limit=draw(st.sampled_from([100, 2])),
        stream_window=draw(st.sampled_from([STREAM_WINDOW, STREAM_WINDOW, 100])),
        grow_connection=draw(st.booleans()),
    )
    encoder = hpack.Encoder()
    peer = Peer(client_side, [], set())
    hostility = draw(st.sampled_from([0, 1, 3, 10]))  # one frame in N is hostile (0: none)
    steps: list[Any] = []
    if client_side:
        for stream_id in range(1, 2 * draw(st.integers(0, 3)), 2):
            steps.append(("call", "send_headers", (-1, REQUEST), {"end_stream": draw(st.booleans())}))
            peer.streams.append(stream_id)
    if not client_side:
        preface = draw(st.sampled_from([PREFACE] * 8 + [PREFACE[:10] + b"X" + PREFACE[11:], b""]))
        steps.append(("recv", preface))
    if draw(st.integers(0, 5)):
        steps.append(("recv", raw_frame(4, 0, 0, b"")))  # the peer's SETTINGS
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 2)):
            parts = []
            for _ in range(draw(st.integers(1, 4))):
                hostile = hostility and draw(st.integers(1, hostility)) == 1
                parts.append(
                    draw(
                        frames(encoder, client_side, peer.streams)
                        if hostile
                        else polite_frames(encoder, peer, hostility > 0)
                    )
                )
            wire = b"".join(parts)
            cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=2)))
            steps.append(("recv", wire, cuts))
        else:
            steps.append(("call", *draw(calls(client_side))))
    return setup, steps


def _run(conn: Any, step: Any) -> Any:
    if step[0] == "recv":
        wire = step[1]
        cuts = [0, *(step[2] if len(step) > 2 else []), len(wire)]
        events: list[Any] = []

        def receive() -> list[Any]:
            for start, end in zip(cuts, cuts[1:], strict=False):
                events.extend(conn.receive_data(wire[start:end]))
            return events

        return outcome(receive), norm(events)
    _, name, args, kwargs = step
    if isinstance(getattr(type(conn), name), property):
        return outcome(lambda: getattr(conn, name)), None

    def call() -> Any:
        if name == "send_headers" and args[0] == -1:
            return conn.send_headers(conn.get_next_available_stream_id(), *args[1:], **kwargs)
        return getattr(conn, name)(*args, **kwargs)

    return outcome(call), None


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scripts())
def test_the_codec_does_what_h2_does(script: tuple[Setup, list[Any]]) -> None:
    setup, steps = script
    ours, theirs = build(setup)
    assert ours.data_to_send() == theirs.data_to_send()
    for number, step in enumerate(steps):
        note(f"step {number}: {step!r:.300}")
        mine, reference = _run(ours, step), _run(theirs, step)
        assert mine == reference, f"step {number}"
        assert ours.data_to_send() == theirs.data_to_send(), f"bytes sent after step {number}"
        assert state(ours) == state(theirs), f"state after step {number}"
        if step[0] == "recv" and mine[0][0] == "raised":
            break  # the connection is over: the proxy stops reading it


@settings(max_examples=1500, deadline=None)
@given(
    st.booleans(),
    st.booleans(),
    st.lists(
        st.one_of(
            st.sampled_from(FLAWS), st.tuples(st.just("append"), *[st.sampled_from(NAMES), st.sampled_from(VALUES)])
        ),
        max_size=2,
    ),
    st.sampled_from([0, 1]),
)
def test_header_blocks_are_judged_as_h2_judges_them(
    client_side: bool, trailers: bool, flaws: list[Any], end: int
) -> None:
    """A good head (request, response, or trailers after one) with up to two flaws: accepted or refused alike."""
    setup = Setup(
        client_side=client_side, peer_proxy=False, limit=100, stream_window=STREAM_WINDOW, grow_connection=True
    )
    ours, theirs = build(setup)
    encoder = hpack.Encoder()
    fields = list(RESPONSE if client_side else REQUEST)
    steps: list[Any] = [] if client_side else [("recv", PREFACE)]
    if client_side:
        steps.append(("call", "send_headers", (1, REQUEST), {"end_stream": True}))
    if trailers:
        steps.append(("recv", raw_frame(1, 0x4, 1, bytes(encoder.encode(fields)))))
        fields = [(b"grpc-status", b"0")]
    for flaw in flaws:
        fields = with_flaw(fields, flaw)
    steps.append(("recv", raw_frame(1, 0x4 | end, 1, bytes(encoder.encode(fields)))))
    for number, step in enumerate(steps):
        note(f"step {number}: {step!r}")
        assert _run(ours, step) == _run(theirs, step)
        assert ours.data_to_send() == theirs.data_to_send()


# -- what the codec sends, as an h2 peer reads it ---------------------------------------------------


@st.composite
def exchanges(draw: st.DrawFn) -> list[Any]:
    steps: list[Any] = []
    for stream_id in range(1, 2 * draw(st.integers(1, 4)), 2):
        headers = (
            REQUEST
            + draw(EXTRA)
            + draw(
                st.lists(
                    st.tuples(st.sampled_from([b"x-b", b"accept"]), st.text("abc/-=; ", max_size=300).map(str.encode)),
                    max_size=2,
                )
            )
        )
        body = draw(st.lists(st.integers(0, 40000), max_size=3))
        trailers = draw(st.booleans())
        steps.append(("send_headers", stream_id, headers, not body and not trailers))
        for i, size in enumerate(body):
            steps.append(("send_data", stream_id, b"b" * size, i == len(body) - 1 and not trailers))
        if trailers:
            steps.append(("send_headers", stream_id, [(b"grpc-status", b"0")], True))
        if draw(st.integers(0, 4)) == 0:
            steps.append(("reset_stream", stream_id, 8))
    return steps


@settings(max_examples=150, deadline=None)
@given(exchanges(), st.sampled_from([16384, 100000]))
def test_what_the_codec_sends_h2_reads_as_what_h2_sends(steps: list[Any], frame_size: int) -> None:
    """The same calls on the codec and on h2 (as the proxy configured it), read by an h2 server that
    validates what it receives: the same events, including header blocks split over CONTINUATION."""

    def run(sender: Any) -> list[Any]:
        receiver = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        receiver.initiate_connection()
        receiver.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**20, h2.settings.SettingCodes.MAX_FRAME_SIZE: frame_size}
        )
        sender.encoder = ProxyEncoder()
        sender.initiate_connection()
        receiver.receive_data(sender.data_to_send())
        sender.receive_data(receiver.data_to_send())
        receiver.receive_data(sender.data_to_send())
        sender.max_outbound_frame_size = (
            min(sender.max_outbound_frame_size, 16384) if frame_size == 16384 else sender.max_outbound_frame_size
        )
        received = []
        for name, *args in steps:
            try:
                if name == "send_data":
                    data = args[1]
                    for offset in range(0, max(len(data), 1), sender.max_outbound_frame_size):
                        chunk = data[offset : offset + sender.max_outbound_frame_size]
                        last = offset + sender.max_outbound_frame_size >= len(data)
                        if sender.local_flow_control_window(args[0]) < len(chunk):
                            break
                        sender.send_data(args[0], chunk, end_stream=args[2] and last)
                elif name == "send_headers":
                    sender.send_headers(args[0], args[1], end_stream=args[2])
                else:
                    sender.reset_stream(*args)
            except h2.exceptions.ProtocolError as exc:
                received.append(("sender raised", type(exc).__name__))
            received.append(outcome(lambda: receiver.receive_data(sender.data_to_send())))  # noqa: B023
        return received

    config = h2_config(client_side=True)
    assert run(Connection(config)) == run(OracleConnection(config=config))


# -- HPACK --------------------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=40), st.lists(FIELD, max_size=5)), min_size=1, max_size=4),
    st.integers(0, 2**16),
)
def test_the_hpack_decoder_does_what_hpacks_does(blocks: list[Any], list_limit: int) -> None:
    """Block after block on one context (the dynamic table carries over): same fields, same errors."""
    encoder = hpack.Encoder()
    ours, theirs = Decoder(max_header_list_size=list_limit), hpack.Decoder(max_header_list_size=list_limit)
    for block in blocks:
        data = block if isinstance(block, bytes) else bytes(encoder.encode(block, huffman=len(block) % 2 == 0))
        assert outcome(lambda: ours.decode(data)) == outcome(lambda: theirs.decode(data, raw=True))  # noqa: B023
        assert list(ours.entries) == list(theirs.header_table.dynamic_entries)


def test_a_table_size_update_is_honoured_and_bounded() -> None:
    ours, theirs = Decoder(), hpack.Decoder()
    for data in (b"\x3f\xe1\x1f", b"\x20\x40\x01a\x01b", b"\x3f\xe2\x1f"):  # 4096, 0 then a field, 4097 (too big)
        assert outcome(lambda: ours.decode(data)) == outcome(lambda: theirs.decode(data, raw=True))  # noqa: B023


@pytest.mark.parametrize("client_side", [False, True])
def test_a_misconfigured_codec_says_so(client_side: bool) -> None:
    with pytest.raises(ValueError, match="no outbound validation"):
        Connection(h2.config.H2Configuration(client_side=client_side))
    assert ErrorCodes.NO_ERROR == 0


def test_a_frame_in_many_reads_is_gathered_not_copied_per_read() -> None:
    """A frame header announcing 16 MiB, then its body in 64 KiB reads: refused once whole (as h2 does,
    FRAME_SIZE_ERROR), in CPU time like h2's, not re-copying everything received at each read."""
    import time

    def dribble(conn: Any) -> tuple[str, float]:
        conn.initiate_connection()
        conn.receive_data(PREFACE + raw_frame(4, 0, 0, b""))
        conn.receive_data(raw_frame(0, 0, 1, b"")[:3].replace(b"\0\0\0", b"\xff\xff\xff") + b"\0\0\0\0\0\1")
        chunk = b"x" * 65536
        started = time.process_time()
        try:
            for _ in range(2**24 // len(chunk) + 1):
                conn.receive_data(chunk)
        except h2.exceptions.ProtocolError as exc:
            return type(exc).__name__, time.process_time() - started
        return "accepted", time.process_time() - started

    config = h2_config(client_side=False)
    ours, theirs = dribble(ServerConnection(config)), dribble(OracleServerConnection(config=config))
    assert ours[0] == theirs[0] == "FrameTooLargeError"
    assert ours[1] < max(0.25, 20 * theirs[1]), (ours, theirs)
