"""The HTTP/2 connection rules the proxy adds to h2, without sockets: frames in, frames and events out
(and one read loop over a memory stream, on a mock clock).

- streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are a stream error (REFUSED_STREAM), not a GOAWAY;
- the RST_STREAMs h2 sends of its own accord are counted for the reset budget (MadeYouReset);
- frames in flight after our own reset are ignored, not answered;
- toward a peer proxy, a connection takes a stream only while the peer's reset budget could pay for
  resetting every stream on it;
- the idle timer is the only thing that closes an idle connection.
"""

from __future__ import annotations

import h2.events
import hpack
import trio
import trio.testing
from h2.errors import ErrorCodes
from hyperframe import frame as hf

from mesh.net import ALPN_H2
from mesh.proxy._exchange import UpstreamKey
from mesh.proxy._h2_guard import RESET_BURST, ServerConnection
from mesh.proxy._h2_transport import MAX_CONCURRENT_STREAMS, h2_config
from mesh.proxy._h2_upstream import H2Upstream
from mesh.proxy._policy import TokenBucket

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + hf.SettingsFrame(0).serialize()


class Client:
    """A hostile client's frames, with one HPACK encoder (as a real client keeps)."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def headers(self, stream_id: int, end_stream: bool = True) -> bytes:
        block = self.encoder.encode([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"web"), (b":path", b"/")])
        flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
        return hf.HeadersFrame(stream_id, block, flags=flags).serialize()


def _server() -> ServerConnection:
    conn = ServerConnection(config=h2_config(client_side=False))
    conn.local_settings.max_concurrent_streams = MAX_CONCURRENT_STREAMS
    conn.local_settings.acknowledge()
    conn.initiate_connection()
    conn.data_to_send()
    return conn


def _frames(data: bytes) -> list:
    out = []
    while data:
        frame, length = hf.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def test_streams_beyond_the_limit_are_listed_for_refusal_not_a_connection_error() -> None:
    conn, client = _server(), Client()
    events = conn.receive_data(PREFACE + b"".join(client.headers(2 * i + 1) for i in range(110)))
    opened = [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]
    assert opened == [2 * i + 1 for i in range(110)]  # all decoded: the HPACK state stays in step
    assert conn.over_limit == {2 * i + 1 for i in range(100, 110)}
    assert not any(isinstance(f, hf.GoAwayFrame) for f in _frames(conn.data_to_send()))
    # A later stream (after the refused ones are reset) decodes against the same table.
    for stream_id in sorted(conn.over_limit):
        conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
    for i in range(100):
        conn.send_headers(2 * i + 1, [(b":status", b"200")], end_stream=True)
    events = conn.receive_data(client.headers(221))
    assert [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)] == [221]
    assert conn.over_limit == {2 * i + 1 for i in range(100, 110)}  # the proxy discards as it refuses


def test_data_after_end_stream_is_a_reset_event_and_later_frames_are_counted() -> None:
    conn, client = _server(), Client()
    events = conn.receive_data(PREFACE + client.headers(1) + hf.DataFrame(1, b"x").serialize())
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code, e.remote_reset) for e in resets] == [(1, ErrorCodes.STREAM_CLOSED, False)]
    assert conn.resets_answered == 0  # the event is what the proxy charges for this one
    # More DATA on it: we reset it, so it is ignored (no RST_STREAM); empty frames count as idle.
    conn.data_to_send()
    late = hf.DataFrame(1, b"").serialize() * 3 + hf.DataFrame(1, b"abc").serialize()
    events = conn.receive_data(late + hf.DataFrame(1, b"", flags=["END_STREAM"]).serialize())
    assert not events and not any(isinstance(f, hf.RstStreamFrame) for f in _frames(conn.data_to_send()))
    assert (conn.resets_answered, conn.idle_frames) == (0, 3)


def test_frames_after_the_clients_own_reset_are_answered_and_counted() -> None:
    conn, client = _server(), Client()
    rst = hf.RstStreamFrame(1)
    rst.error_code = ErrorCodes.CANCEL
    conn.receive_data(PREFACE + client.headers(1, end_stream=False) + rst.serialize())
    conn.data_to_send()
    conn.receive_data(hf.DataFrame(1, b"late").serialize() * 5)
    answered = [f for f in _frames(conn.data_to_send()) if isinstance(f, hf.RstStreamFrame)]
    assert len(answered) == 5 and conn.resets_answered == 5


def _upstream(alpn: str | None) -> H2Upstream:
    left, _right = trio.testing.memory_stream_pair()
    return H2Upstream(UpstreamKey("127.0.0.1", 1, alpn, None), left)  # no SETTINGS yet: 100 streams


def test_a_peer_connection_takes_streams_only_while_it_could_reset_them_all() -> None:
    now = [0.0]
    upstream = _upstream(ALPN_H2)
    assert upstream.resets is not None
    upstream.resets = TokenBucket(upstream.resets.rate, RESET_BURST, clock=lambda: now[0])
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"web"), (b":path", b"/")]

    def cancel_all() -> None:
        for stream_id in list(upstream.streams):
            upstream.ep.reset(stream_id, ErrorCodes.CANCEL)
            upstream.forget(stream_id)

    # A full connection (100 streams) is affordable; cancelling them spends 100 tokens.
    for _ in range(MAX_CONCURRENT_STREAMS):
        assert upstream.available()
        upstream.open_stream(headers, end_stream=True)
    assert not upstream.available()  # the stream limit (RFC 9113 6.5.2's 100 until the peer's SETTINGS)
    cancel_all()
    assert upstream.resets.level() == RESET_BURST - MAX_CONCURRENT_STREAMS
    # Another 100 can be opened: the budget still covers cancelling them all ...
    for _ in range(MAX_CONCURRENT_STREAMS):
        assert upstream.available()
        upstream.open_stream(headers, end_stream=True)
    cancel_all()
    # ... but not a third wave at once: the pool puts new streams on another connection.
    assert not upstream.available()
    now[0] += 0.5  # 50 tokens back: 50 streams may open (each could still be cancelled)
    opened = 0
    while upstream.available():
        upstream.open_stream(headers, end_stream=True)
        opened += 1
    assert opened == 50


def test_an_app_connection_has_no_reset_budget_to_keep() -> None:
    upstream = _upstream(None)
    assert upstream.resets is None and upstream.available()


class _NoRoutes:
    direction = "outbound"


def test_a_look_again_during_an_idle_read_is_not_the_idle_timeout() -> None:
    """The GOAWAY(NO_ERROR) at the end of floods: a stream's clean-up yields while it flushes (under
    write back-pressure, for long), the reader meanwhile starts an idle read, and the clean-up's
    ``interrupt_read`` (the last stream is gone: arm the idle timer) was taken for the timer itself."""
    from mesh.proxy._drain import Drain
    from mesh.proxy._exchange import Timeouts
    from mesh.proxy._h2_server import H2ProxyConnection
    from mesh.proxy._h2_upstream import H2Pool

    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        conn = H2ProxyConnection(ours, b"", _NoRoutes(), H2Pool(None), lambda record: None, Timeouts(idle_timeout=300.0), Drain())  # type: ignore[arg-type]
        received = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.serve)
            await theirs.send_all(PREFACE)
            await trio.sleep(1.0)  # the reader waits, idle (no streams), under its 300 s timer
            conn.client.interrupt_read()
            await trio.sleep(1.0)
            while True:
                with trio.move_on_after(0.1):
                    data = await theirs.receive_some()
                    if data:
                        received += data
                        continue
                break
            nursery.cancel_scope.cancel()
        assert not any(isinstance(f, hf.GoAwayFrame) for f in _frames(bytes(received))), "closed as if idle for 300 s"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_frame_dribbled_on_an_idle_connection_is_cut_at_the_head_timeout() -> None:
    """A HEADERS frame sent a byte a second never opens a stream: the connection would live as long
    as bytes kept coming (each read re-armed the idle timer). The head deadline applies, as on HTTP/1."""
    from mesh.proxy._drain import Drain
    from mesh.proxy._exchange import Timeouts
    from mesh.proxy._h2_server import H2ProxyConnection
    from mesh.proxy._h2_upstream import H2Pool

    async def main() -> float:
        ours, theirs = trio.testing.memory_stream_pair()
        timeouts = Timeouts(head_timeout=10.0, idle_timeout=300.0)
        conn = H2ProxyConnection(ours, b"", _NoRoutes(), H2Pool(None), lambda record: None, timeouts, Drain())  # type: ignore[arg-type]
        headers = Client().headers(1)
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.serve)
            await theirs.send_all(PREFACE)
            try:
                for byte in headers[:-1]:
                    await theirs.send_all(bytes([byte]))
                    await trio.sleep(1.0)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            with trio.move_on_after(5):
                while await theirs.receive_some():
                    pass
            nursery.cancel_scope.cancel()
        return trio.current_time() - started

    elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert 10.0 <= elapsed < 13.0, elapsed


def test_a_budget_broken_by_the_first_read_still_starts_with_settings() -> None:
    """Found by a 10-minute fuzz run: a client whose very first read breaks a budget got GOAWAY as
    the first frame, because ending the connection clears h2's unsent frames, our SETTINGS with them."""
    from mesh.proxy._drain import Drain
    from mesh.proxy._exchange import Timeouts
    from mesh.proxy._h2_server import H2ProxyConnection
    from mesh.proxy._h2_upstream import H2Pool

    client = Client()
    flood = b"".join(
        client.headers(stream_id, end_stream=False) + hf.RstStreamFrame(stream_id, error_code=8).serialize()
        for stream_id in range(1, 2 * RESET_BURST + 200, 2)
    )

    async def main() -> bytes:
        ours, theirs = trio.testing.memory_stream_pair()
        conn = H2ProxyConnection(ours, PREFACE + flood, _NoRoutes(), H2Pool(None), lambda record: None, Timeouts(), Drain())  # type: ignore[arg-type]
        received = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.serve)
            with trio.move_on_after(3):
                while data := await theirs.receive_some():
                    received += data
            nursery.cancel_scope.cancel()
        return bytes(received)

    frames = _frames(trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)))
    assert isinstance(frames[0], hf.SettingsFrame), frames[:3]
    assert any(isinstance(f, hf.GoAwayFrame) and f.error_code == ErrorCodes.ENHANCE_YOUR_CALM for f in frames)
