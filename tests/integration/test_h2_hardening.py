"""HTTP/2 hardening and gRPC paths of the proxy, end to end with real processes.

Hostile raw clients (``h2`` for the polite parts, ``hyperframe`` frames written
straight to the socket for the rest) flood the outbound listener: CONTINUATION
floods, frames that carry nothing (empty DATA, PING, PRIORITY, SETTINGS), header
values with CR/LF/NUL. Each must end only its own connection, quickly, while a
well-behaved connection opened before the attack keeps being served. Then gRPC
(grpcio) through `mesh gateway`, per-request load balancing over HTTP/2, and the
gRPC status in `mesh tap`. Everything on 127.0.0.1; every process through ``cluster``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
hpack = pytest.importorskip("hpack")
hyperframe_frame = pytest.importorskip("hyperframe.frame")

from tests.integration.conftest import Cluster, ProxyInfo, port_of  # noqa: E402
from tests.integration.test_grpc import (  # noqa: E402, F401 - fixtures are used by name
    NO_PROXY,
    SERVICE,
    Greeter,
    Mesh,
    _grpc_ok,
    _h2_client,
    _ident,
    _read_events,
    _unary_request,
    greeter_server,
    metric,
    start_mesh,
    stubs,
)

MESH_CLI = [sys.executable, "-m", "mesh"]


class RecordingGreeter(Greeter):
    """A Greeter that remembers every Hello it served (its metadata) and says who answered."""

    def __init__(self, name: str = "greeter") -> None:
        super().__init__()
        self.name = name
        self.calls: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata()}
        with self._lock:
            self.calls.append(metadata)
        self.metadata = metadata
        return b"hello " + request + b" from " + self.name.encode()

    def hellos(self) -> int:
        with self._lock:
            return len(self.calls)


@pytest.fixture
def serve() -> Iterator[Callable[[Greeter], int]]:
    """Start grpcio servers (in this process) for greeters; their ports. All stopped at teardown."""
    servers: list[grpc.Server] = []

    def start(greeter: Greeter) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers((greeter.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return port

    try:
        yield start
    finally:
        for server in servers:
            server.stop(0).wait(5)


@pytest.fixture
def rmesh(cluster: Cluster, serve: Callable[[Greeter], int]) -> Mesh:
    """grpcio client side → client proxy → mTLS → greeter proxy → a RecordingGreeter (static endpoints)."""
    greeter = RecordingGreeter()
    return start_mesh(cluster, greeter, serve(greeter))


# ------------------------------------------------------------ raw frames on a socket


def _preface_only(port: int) -> socket.socket:
    """A connection that has sent the client preface and an empty SETTINGS, nothing else."""
    sock, _ = _h2_client(port)
    return sock


def _grpc_request_headers(method: str = "Hello", extra: Sequence[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"greeter"),
        (b":path", f"/{SERVICE}/{method}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        *extra,
    ]


def _encode_request(extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """The HPACK block of a gRPC Hello request (a fresh encoder: no dynamic table state)."""
    return hpack.Encoder().encode(_grpc_request_headers(extra=extra))


def _serialize(frames: list) -> bytes:  # noqa: ANN001
    return b"".join(f.serialize() for f in frames)


def _send(sock: socket.socket, data: bytes) -> bool:
    """Send as much as the peer takes; False when it closed on us mid-way (fine for a flood)."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _read_frames(sock: socket.socket, until: Callable[[list], bool], timeout: float = 10.0) -> tuple[list, bool]:
    """Frames the server sent (parsed with hyperframe) until ``until`` holds, the server closed, or timeout.

    Returns (frames, closed): closed is True when the server ended the TCP connection."""
    buf = bytearray()
    frames: list = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except OSError:  # reset: the server closed with our flood unread
            return frames, True
        if not data:
            return frames, True
        buf += data
        while len(buf) >= 9:
            frame, length = hyperframe_frame.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            del buf[: 9 + length]
            frames.append(frame)
        if until(frames):
            return frames, False
    return frames, False


def _goaway(frames: list):  # noqa: ANN202
    return next((f for f in frames if isinstance(f, hyperframe_frame.GoAwayFrame)), None)


def _ended(frames: list) -> bool:
    return _goaway(frames) is not None


def _good_connection(port: int):  # noqa: ANN202
    """A well-behaved h2 client connection that has completed one unary call."""
    sock, conn = _h2_client(port)
    _unary_request(conn, 1)
    sock.sendall(conn.data_to_send())
    assert _grpc_ok(_read_events(sock, conn, lambda ev: _grpc_ok(ev, 1)), 1), "the good connection was not served"
    return sock, conn


def _still_served(sock: socket.socket, conn, stream_id: int) -> None:  # noqa: ANN001
    _unary_request(conn, stream_id)
    sock.sendall(conn.data_to_send())
    events = _read_events(sock, conn, lambda ev: _grpc_ok(ev, stream_id))
    assert _grpc_ok(events, stream_id), f"the well-behaved connection was not served afterwards: {events}"


def _grpcio_call_works(mesh: Mesh, what: bytes) -> None:
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        assert stubs(channel)["Hello"](what, timeout=10).startswith(b"hello " + what)


def _no_internal_errors(*proxies: ProxyInfo) -> None:
    for proxy in proxies:
        log = proxy.process.log()
        assert "Traceback" not in log and "internal error" not in log, log[-4000:]
        assert proxy.process.popen.poll() is None, f"{proxy.process.name} died:\n{log[-4000:]}"


# ------------------------------------------------------------ 1. CONTINUATION flood


@pytest.mark.timeout(60)
def test_continuation_flood_ends_only_that_connection(rmesh: Mesh) -> None:
    """HEADERS without END_HEADERS, then thousands of empty (and of 1-byte) CONTINUATION frames
    (CVE-2024-27316 and friends): the proxy must not buffer or loop forever — the connection ends
    with GOAWAY or is closed within seconds; others are served; nothing reaches the app."""
    greeter: RecordingGreeter = rmesh.greeter  # type: ignore[assignment]
    port = rmesh.client_proxy.outbound
    good_sock, good = _good_connection(port)
    served_before = greeter.hellos()

    block = _encode_request()
    padded = _encode_request([(b"x-pad", b"p" * 20_000)])  # ~20 KB block: sent one byte per frame
    floods = {
        "empty CONTINUATION frames": (block, [b""] * 10_000),
        "1-byte CONTINUATION frames": (padded[:1], [padded[i : i + 1] for i in range(1, len(padded))]),
    }
    stream_id = 3
    for what, (first, pieces) in floods.items():
        sock = _preface_only(port)
        headers = hyperframe_frame.HeadersFrame(1, first)  # no END_HEADERS
        continuation = [hyperframe_frame.ContinuationFrame(1, piece) for piece in pieces]  # none ends the block
        started = time.monotonic()
        _send(sock, _serialize([headers, *continuation]))
        frames, closed = _read_frames(sock, _ended, timeout=10)
        elapsed = time.monotonic() - started
        goaway = _goaway(frames)
        assert goaway is not None or closed, f"{what}: neither GOAWAY nor close: {frames[-5:]}"
        if goaway is not None:
            assert goaway.error_code != 0, f"{what}: GOAWAY without an error code: {goaway}"
        assert elapsed < 5, f"{what}: took {elapsed:.1f}s to end the connection"
        # No response to the half-sent stream.
        assert not any(isinstance(f, hyperframe_frame.HeadersFrame) for f in frames), frames
        sock.close()

        # The well-behaved connection (opened before the flood) is still served.
        _still_served(good_sock, good, stream_id)
        stream_id += 2

    # The flooded streams never reached the app: only the good connection's calls did.
    assert greeter.hellos() == served_before + len(floods)
    assert not any("x-pad" in call for call in greeter.calls)
    good_sock.close()
    _grpcio_call_works(rmesh, b"after")
    _no_internal_errors(rmesh.client_proxy, rmesh.greeter_proxy)


# ------------------------------------------------------------ 2. frames that carry nothing


def _flood_bytes(kind: str, count: int) -> bytes:
    """``count`` frames of ``kind`` that carry nothing, as bytes for after the preface."""
    F = hyperframe_frame
    if kind == "empty DATA":
        # A POST that is routed and forwarded (the app waits for its body), then empty DATA frames forever.
        opener = F.HeadersFrame(1, _encode_request(), flags=["END_HEADERS"])
        return _serialize([opener] + [F.DataFrame(1, b"") for _ in range(count)])
    if kind == "PING":
        return _serialize([F.PingFrame(0, i.to_bytes(8, "big")) for i in range(count)])
    if kind == "PRIORITY":
        frames = []
        for i in range(count):
            frame = F.PriorityFrame(1 + 2 * (i % 500))
            frame.depends_on, frame.stream_weight, frame.exclusive = 0, 15, False
            frames.append(frame)
        return _serialize(frames)
    if kind == "SETTINGS":
        frames = []
        for _ in range(count):
            frame = F.SettingsFrame(0)
            frame.settings = {F.SettingsFrame.INITIAL_WINDOW_SIZE: 65535}
            frames.append(frame)
        return _serialize(frames)
    raise AssertionError(kind)


@pytest.mark.timeout(60)
def test_floods_of_frames_that_carry_nothing_get_enhance_your_calm(rmesh: Mesh) -> None:
    """5000 empty DATA frames on an open POST stream, PING floods (read, and with acks left unread),
    PRIORITY and SETTINGS floods (CVE-2019-9512/9516/9518; budget 1000 burst + 100/s per connection):
    each ends that connection with GOAWAY(ENHANCE_YOUR_CALM) — or, when the acks are not read, at
    least a close — within seconds; a well-behaved connection is served throughout."""
    import h2.events

    greeter: RecordingGreeter = rmesh.greeter  # type: ignore[assignment]
    port = rmesh.client_proxy.outbound
    good_sock, good = _good_connection(port)
    served_before = greeter.hellos()

    # Below the budget is not a flood: a client that pings a few hundred times is served.
    for i in range(300):
        good.ping(i.to_bytes(8, "big"))
    good_sock.sendall(good.data_to_send())
    acks = _read_events(good_sock, good, lambda ev: sum(isinstance(e, h2.events.PingAckReceived) for e in ev) >= 300)
    assert sum(isinstance(e, h2.events.PingAckReceived) for e in acks) == 300
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in acks), acks
    stream_id = 3
    _still_served(good_sock, good, stream_id)

    # (kind, frames sent, whether the acks are left unread for a while)
    floods = [
        ("empty DATA", 5000, False),
        ("PING", 2000, False),
        ("PING", 5000, True),
        ("PRIORITY", 5000, False),
        ("SETTINGS", 5000, False),
    ]
    for kind, count, unread in floods:
        what = f"{count} {kind} frames" + (" (acks not read)" if unread else "")
        sock = _preface_only(port)
        flood = _flood_bytes(kind, count)
        started = time.monotonic()
        _send(sock, flood)
        if unread:
            time.sleep(0.5)  # the acks pile up unread
        frames, closed = _read_frames(sock, _ended, timeout=10)
        elapsed = time.monotonic() - started
        goaway = _goaway(frames)
        # Even with the flood partly unread, the proxy half-closes and reads it off before it closes,
        # so no RST overtakes the GOAWAY: the client learns why.
        assert goaway is not None, f"{what}: no GOAWAY (closed={closed}, {len(frames)} frames)"
        assert goaway.error_code == 11, f"{what}: GOAWAY({goaway.error_code}), not ENHANCE_YOUR_CALM"
        if kind == "PING" and count == 5000:
            # The budget is checked per read (up to 64 KiB, ~3800 PINGs), but a flood is cut short.
            pongs = sum(isinstance(f, hyperframe_frame.PingFrame) and "ACK" in f.flags for f in frames)
            assert pongs < count, f"{what}: every PING was answered"
        assert elapsed < 5, f"{what}: took {elapsed:.1f}s to end"
        sock.close()

        stream_id += 2
        _still_served(good_sock, good, stream_id)

    # The flooded POST (routed, but its body never came) was never served by the app.
    assert greeter.hellos() == served_before + 1 + len(floods)
    good_sock.close()
    _grpcio_call_works(rmesh, b"after")
    _no_internal_errors(rmesh.client_proxy, rmesh.greeter_proxy)


# ------------------------------------------------------------ 3. CR, LF, NUL in headers


@pytest.mark.timeout(60)
def test_header_values_with_cr_lf_nul_are_rejected(rmesh: Mesh) -> None:
    """RFC 9113 8.2.1: a field value with CR, LF or NUL makes the request malformed. Such a request
    (from a client whose h2 lets them out) is refused — stream reset or GOAWAY — never forwarded."""
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events

    greeter: RecordingGreeter = rmesh.greeter  # type: ignore[assignment]
    port = rmesh.client_proxy.outbound
    good_sock, good = _good_connection(port)
    served_before = greeter.hellos()

    cases = {
        "CR": [(b"x-evil", b"a\rb")],
        "LF": [(b"x-evil", b"a\nx-smuggled: 1")],
        "CRLF": [(b"x-evil", b"a\r\nx-smuggled: 1")],
        "NUL": [(b"x-evil", b"a\x00b")],
        "CRLF in :authority": [],
    }
    stream_id = 3
    for what, extra in cases.items():
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,  # let CR, LF and NUL out
                normalize_outbound_headers=False,
            )
        )
        conn.initiate_connection()
        authority = b"greeter\r\nx-smuggled: 1" if what == "CRLF in :authority" else b"greeter"
        _unary_request(conn, 1, authority=authority, extra=extra)
        sock.sendall(conn.data_to_send())
        events = _read_events(
            sock,
            conn,
            lambda ev: any(isinstance(e, (h2.events.ConnectionTerminated, h2.events.StreamReset)) for e in ev)
            or _grpc_ok(ev, 1),
            timeout=10,
        )
        refused = [e for e in events if isinstance(e, (h2.events.ConnectionTerminated, h2.events.StreamReset))]
        assert refused, f"{what}: neither reset nor GOAWAY: {events}"
        assert all(e.error_code != h2.errors.ErrorCodes.NO_ERROR for e in refused), f"{what}: {refused}"
        assert not _grpc_ok(events, 1), f"{what}: the request was served: {events}"
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events), f"{what}: answered: {events}"
        sock.close()
        _still_served(good_sock, good, stream_id)
        stream_id += 2

    # Only the good connection's calls reached the app; no smuggled or evil header ever did.
    assert greeter.hellos() == served_before + len(cases)
    assert not any("x-evil" in call or "x-smuggled" in call for call in greeter.calls), greeter.calls
    good_sock.close()
    _grpcio_call_works(rmesh, b"after")
    _no_internal_errors(rmesh.client_proxy, rmesh.greeter_proxy)


# ------------------------------------------------------------ 4. gRPC through `mesh gateway`


@pytest.mark.timeout(90)
def test_grpc_through_the_gateway(cluster: Cluster, greeter_server: tuple[Greeter, int]) -> None:
    """A grpcio client (h2c prior knowledge) at the gateway's listen port reaches the greeter behind
    its sidecar over mTLS: unary and server streaming, the greeter sees the gateway's identity."""
    greeter, port = greeter_server
    start_mesh(cluster, greeter, port, controller=True)
    gateway = cluster.spawn("gateway", [*MESH_CLI, "gateway", "--listen", "127.0.0.1:0", "--to", "greeter"])
    listen = port_of(gateway.wait_for(r"listen http (\S+?)(?:,|$)").group(1))
    admin = port_of(gateway.wait_for(r"admin (\S+?),").group(1))

    with grpc.insecure_channel(f"127.0.0.1:{listen}", options=NO_PROXY) as channel:
        rpc = stubs(channel)
        deadline = time.monotonic() + 15
        while True:  # the gateway learns the greeter's endpoint from the controller
            try:
                answer = rpc["Hello"](b"edge", timeout=5)
                break
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway → greeter never worked: {exc}\n{gateway.log()[-3000:]}") from exc
                time.sleep(0.2)
        assert answer == b"hello edge"
        assert greeter.metadata.get("mesh-client-id") == cluster.spiffe("gateway")
        assert list(rpc["Count"](b"300", timeout=10)) == [str(i).encode() for i in range(300)]
        # An app's gRPC error passes the gateway as it is.
        missing = _missing(channel)
        with pytest.raises(grpc.RpcError) as err:
            missing(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

    # The gateway observed the calls like any other hop, classified by grpc-status.
    gateway_proxy = ProxyInfo(gateway, 0, 0, admin)
    labels = {"direction": "outbound", "peer_service": "greeter"}
    assert metric(gateway_proxy, "response_total", classification="success", **labels) >= 2
    assert metric(gateway_proxy, "response_total", classification="failure", **labels) >= 1


# ------------------------------------------------------------ 5. per-request load balancing over HTTP/2


@pytest.mark.timeout(60)
def test_grpc_calls_are_balanced_per_request(cluster: Cluster, serve: Callable[[Greeter], int]) -> None:
    """One grpcio channel (one HTTP/2 connection to the client proxy) and two greeter instances
    (same service, each behind its own proxy): the proxy balances each call on its own, so both
    instances serve calls — a per-connection choice would send all of them to one."""
    cluster.init_ca()
    one, two = RecordingGreeter("one"), RecordingGreeter("two")
    proxy_one = cluster.proxy("greeter", serve(one), name="proxy-greeter-one")
    proxy_two = cluster.proxy("greeter", serve(two), name="proxy-greeter-two")
    endpoints = cluster.write_endpoints([("greeter", proxy_one.inbound), ("greeter", proxy_two.inbound)])
    client = cluster.proxy(
        "client", cluster.app("http", "client"), endpoints=endpoints, extra=["--upstream", "greeter=0"]
    )

    with grpc.insecure_channel(f"127.0.0.1:{client.upstreams['greeter']}", options=NO_PROXY) as channel:
        hello = stubs(channel)["Hello"]
        assert hello(b"warm", timeout=10).startswith(b"hello warm from ")
        # 60 calls, 6 in flight at a time, all on the channel's one HTTP/2 connection.
        with futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda i: hello(b"%d" % i, timeout=10), range(60)))
    served: dict[bytes, int] = {}
    for i, answer in enumerate(answers):
        assert answer.startswith(b"hello %d from " % i), answer
        who = answer.rsplit(b" ", 1)[1]
        served[who] = served.get(who, 0) + 1
    assert set(served) == {b"one", b"two"}, f"one instance served every call: {served}"
    assert min(served.values()) >= 5, f"calls were hardly spread: {served}"
    # The answers match what each instance recorded (the warm-up call is one of them).
    assert one.hellos() + two.hellos() == 61
    assert (one.hellos(), two.hellos()) in {
        (served[b"one"] + 1, served[b"two"]),
        (served[b"one"], served[b"two"] + 1),
    }
    # Both instances saw the caller's identity (each over its own mTLS connection).
    assert {c.get("mesh-client-id") for c in one.calls + two.calls} == {cluster.spiffe("client")}
    for proxy, greeter in ((proxy_one, one), (proxy_two, two)):
        assert metric(proxy, "response_total", direction="inbound", classification="success") >= greeter.hellos()


def _missing(channel: grpc.Channel):  # noqa: ANN202
    """A stub for a method the greeter does not have (UNIMPLEMENTED, grpc-status 12)."""
    return channel.unary_unary(f"/{SERVICE}/Missing", request_serializer=_ident, response_deserializer=_ident)


def _directions(lines: list[str]) -> set[str]:
    return {match.group(1) for line in lines if (match := re.search(r" proxy=(\w+) ", line))}


def _tap_lines(cluster: Cluster, name: str, max_events: int, call: Callable[[], None]) -> list[str]:
    """Run `mesh tap greeter --max N` (text output) while ``call`` runs repeatedly; its request lines."""
    tap = cluster.spawn(name, [*MESH_CLI, "tap", "greeter", "--max", str(max_events)])
    # Each proxy the controller taps announces itself (stderr, merged into the log).
    tap.wait_for(r"tapping greeter", timeout=20)
    tap.wait_for(r"tapping client", timeout=20)
    deadline = time.monotonic() + 20
    while tap.popen.poll() is None and time.monotonic() < deadline:
        call()
        time.sleep(0.3)
    assert tap.popen.wait(5) == 0, tap.log()
    return [line for line in tap.log().splitlines() if line.startswith("req id=")]


@pytest.mark.timeout(90)
def test_mesh_tap_shows_the_grpc_status(cluster: Cluster, greeter_server: tuple[Greeter, int]) -> None:
    """`mesh tap` (through the controller) prints grpc-status for gRPC calls that failed inside an
    HTTP 200: an app-made UNIMPLEMENTED (12) and a mesh-made PERMISSION_DENIED (7, policy)."""
    from tests.integration.test_traffic import apply, synced

    mesh = start_mesh(cluster, *greeter_server, controller=True)
    channel = grpc.insecure_channel(mesh.upstream, options=NO_PROXY)
    try:
        rpc = stubs(channel)
        assert rpc["Hello"](b"ok", timeout=10) == b"hello ok"
        missing = _missing(channel)

        def call_missing() -> None:
            with pytest.raises(grpc.RpcError) as err:
                missing(b"", timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

        lines = _tap_lines(cluster, "tap-unimplemented", 4, call_missing)
        assert len(lines) == 4, lines
        for line in lines:
            assert f":path=/{SERVICE}/Missing" in line, line
            assert "→ :status=200 grpc-status=12 latency=" in line, line
        assert _directions(lines) == {"in", "out"}, lines

        version = apply(cluster, '[[policy]]\nservice = "greeter"\nallow = ["nobody"]\n')
        synced(cluster, version, mesh.client_proxy, mesh.greeter_proxy)

        def call_denied() -> None:
            with pytest.raises(grpc.RpcError) as err:
                rpc["Hello"](b"no", timeout=10)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        lines = _tap_lines(cluster, "tap-denied", 4, call_denied)
        assert len(lines) == 4, lines
        for line in lines:
            assert f":path=/{SERVICE}/Hello" in line, line
            assert "→ :status=200 grpc-status=7 latency=" in line, line
        ins = [line for line in lines if " proxy=in " in line]
        assert ins and all(line.endswith("error=forbidden") for line in ins), lines  # the greeter's proxy said no
        assert _directions(lines) == {"in", "out"}, lines
    finally:
        channel.close()


@pytest.mark.timeout(90)
def test_bulk_both_ways_on_one_connection_between_proxies(cluster: Cluster) -> None:
    """Many streams uploading while their echo comes back: the two proxies' shared HTTP/2 connection is
    full both ways. A reader that waited for its peer to read (while the peer's reader waited too)
    deadlocked here until the write timeout broke the connection."""
    from tests.integration.conftest import free_port

    cluster.init_ca()
    app_port = free_port()
    echo = cluster.proxy("echo", app_port, extra=["--no-zeroconf"])
    endpoints = cluster.write_endpoints([("echo", echo.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=["--no-zeroconf"])
    script = Path(__file__).with_name("h2_bulk_echo.py")
    result = subprocess.run(
        [sys.executable, str(script), str(client.outbound), str(app_port), "64", "4000000"],
        capture_output=True, text=True, timeout=60,
    )
    assert "64/64 complete, 0 errors" in result.stdout, result.stdout + result.stderr
    _no_internal_errors(client, echo)


@pytest.mark.timeout(60)
def test_cancelling_busy_streams_leaves_the_others_alone(cluster: Cluster) -> None:
    """Cancels of streams that are receiving data end those streams only: a write to a cancelled
    stream raised inside the stream's nursery, escaped as an exception group and took the whole
    connection (every other caller on it) down."""
    from tests.integration.conftest import free_port

    cluster.init_ca()
    client = cluster.proxy("client", 1, extra=["--no-zeroconf"])
    script = Path(__file__).with_name("h2_cancel_firehose.py")
    result = subprocess.run(
        [sys.executable, str(script), str(client.outbound), str(free_port())], capture_output=True, text=True, timeout=30
    )
    assert "slow stream answered" in result.stdout, result.stdout + result.stderr
    assert "EOF" not in result.stdout and "GOAWAY" not in result.stdout and "RST 1 " not in result.stdout
    _no_internal_errors(client)


@pytest.mark.timeout(60)
def test_no_upstream_stream_is_left_half_open(cluster: Cluster) -> None:
    """An app that answers before reading the whole request (and holds the stream's window): once the
    response is complete the proxy resets the rest of the request upstream, so streams do not pile up
    to the app's concurrency limit."""
    from tests.integration.conftest import free_port

    cluster.init_ca()
    client = cluster.proxy("client", 1, extra=["--no-zeroconf"])
    script = Path(__file__).with_name("h2_half_open.py")
    result = subprocess.run(
        [sys.executable, str(script), str(client.outbound), str(free_port()), "130"], capture_output=True, text=True, timeout=40
    )
    assert "130/130 answered; upstream connections: 1; streams still open on each (app side): [0]" in result.stdout, (
        result.stdout + result.stderr
    )


@pytest.mark.timeout(60)
def test_an_idle_http2_connection_is_closed_after_its_last_stream(cluster: Cluster) -> None:
    """The idle timer starts when the last stream ends, not only when the reader began waiting with none."""
    import h2.events

    app = cluster.nginx(
        "app-h2",
        """
    listen 127.0.0.1:{port} http2;
    location / { return 200 "hello\\n"; }""",
    )
    cluster.init_ca()
    client = cluster.proxy("client", 1, extra=["--no-zeroconf", "--idle-timeout", "1s"])
    sock, conn = _h2_client(client.outbound)
    conn.send_headers(
        1,
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", f"127.0.0.1:{app}".encode()), (b":path", b"/")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    frames = _read_events(sock, conn, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev), timeout=5)
    assert any(isinstance(e, h2.events.StreamEnded) for e in frames), frames
    started = time.monotonic()
    events = _read_events(sock, conn, lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev), timeout=8)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), "the idle connection was never closed"
    assert time.monotonic() - started < 4
    sock.close()


# ------------------------------------------------------------ 6. resets, stream limits, stalls: both sides
#
# The same hostile client on the outbound listener (plain h2c, like an app) and on the inbound
# listener (TLS with a mesh certificate, like a peer proxy): the budgets are the same on both.

ATTACK_STREAMS = 30_000  # two frames each: 60,000 attack frames
RSS_GROWTH_MB = 10.0
PROCESSED_BOUND = 400  # streams a connection may get routed before GOAWAY (budget: 100 burst + 10/s)
LATENCY_BOUND = 1.0  # seconds for a call on another connection while the flood is read


class Side:
    """Where the hostile client connects: the outbound listener, or the inbound one with a mesh certificate."""

    def __init__(self, mesh: Mesh, name: str, context: Any = None) -> None:
        self.mesh = mesh
        self.name = name
        self.context = context
        self.port = mesh.client_proxy.outbound if name == "outbound" else mesh.greeter_proxy.inbound
        self.proxy = mesh.client_proxy if name == "outbound" else mesh.greeter_proxy

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.context is not None:
            sock = self.context.wrap_socket(sock)
            assert sock.selected_alpn_protocol() == "h2"
        return sock

    def h2(self):  # noqa: ANN201
        """A polite h2 client connection (preface and SETTINGS sent)."""
        import h2.config
        import h2.connection

        sock = self.connect()
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        return sock, conn

    def good_connection(self):  # noqa: ANN201
        sock, conn = self.h2()
        _unary_request(conn, 1)
        sock.sendall(conn.data_to_send())
        assert _grpc_ok(_read_events(sock, conn, lambda ev: _grpc_ok(ev, 1)), 1), f"{self.name}: not served"
        return sock, conn

    def raw(self) -> RawClient:
        return RawClient(self.connect())

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proxy.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


class RawClient:
    """Frames written straight to the socket, headers from one stateful HPACK encoder (compact, as an
    attacker would make them)."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock  # None: only builds frames (for a flood that another client sends)
        self.encoder = hpack.Encoder()
        settings = hyperframe_frame.SettingsFrame(0)
        self.opening = self.PREFACE + settings.serialize()
        self.sent_opening = False

    def headers(self, stream_id: int, end_stream: bool) -> Any:
        block = self.encoder.encode(_grpc_request_headers())
        flags = ["END_HEADERS", "END_STREAM"] if end_stream else ["END_HEADERS"]
        return hyperframe_frame.HeadersFrame(stream_id, block, flags=flags)

    def unary(self, stream_id: int) -> list:
        return [self.headers(stream_id, False), hyperframe_frame.DataFrame(stream_id, b"\x00\x00\x00\x00\x02hi", flags=["END_STREAM"])]

    def send(self, frames: list) -> bool:
        assert self.sock is not None
        data = _serialize(frames)
        if not self.sent_opening:
            data, self.sent_opening = self.opening + data, True
        return _send(self.sock, data)

    def read(self, until: Callable[[list], bool], timeout: float = 10.0) -> tuple[list, bool]:
        assert self.sock is not None
        return _read_frames(self.sock, until, timeout)


def _answered(frames: list) -> set[int]:
    """Streams whose response ended (END_STREAM on HEADERS or DATA)."""
    return {
        f.stream_id
        for f in frames
        if isinstance(f, (hyperframe_frame.HeadersFrame, hyperframe_frame.DataFrame)) and "END_STREAM" in f.flags
    }


def _resets(frames: list, code: int | None = None) -> list:
    return [f for f in frames if isinstance(f, hyperframe_frame.RstStreamFrame) and (code is None or f.error_code == code)]


@pytest.fixture(params=["outbound", "inbound"])
def side(request: pytest.FixtureRequest, rmesh: Mesh) -> Side:
    if request.param == "outbound":
        return Side(rmesh, "outbound")
    import ssl

    out = rmesh.cluster.tmp / "attacker"
    result = rmesh.cluster.mesh("ca", "issue", "attacker", "--out", str(out))
    assert result.returncode == 0, result.stderr
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(str(out / "bundle.pem"))
    context.load_cert_chain(str(out / "cert.pem"), str(out / "key.pem"))
    context.set_alpn_protocols(["h2"])
    return Side(rmesh, "inbound", context)


def _flood_while_served(side: Side, frames: list, good: tuple) -> tuple[list, float, float, int]:
    """Write ``frames`` (after the preface) on a fresh connection from a thread while the good connection
    keeps calling; the frames the proxy sent back (until GOAWAY or close), the slowest good call (s) and
    the proxy's peak RSS growth (MB), and the good connection's next free stream id."""
    good_sock, good_conn = good
    # Warm: the proxy's peak so far includes a served call on each kind of connection.
    before = side.rss_kb()
    attacker = side.raw()
    sender = threading.Thread(target=attacker.send, args=(frames,), daemon=True)
    started = time.monotonic()
    sender.start()
    slowest = 0.0
    stream_id = 101
    while sender.is_alive() or time.monotonic() - started < 0.5:
        call = time.monotonic()
        _still_served(good_sock, good_conn, stream_id)
        slowest = max(slowest, time.monotonic() - call)
        stream_id += 2
        if time.monotonic() - started > 20:
            break
    got, _closed = attacker.read(_ended, timeout=10)
    sender.join(10)
    attacker.sock.close()  # type: ignore[union-attr]
    growth = (side.rss_kb() - before) / 1024
    return got, slowest, growth, stream_id


def _flood_ends_calmly(side: Side, what: str, flood: list, good: tuple) -> list:
    """The flood (while ``good`` is served) ends in GOAWAY(ENHANCE_YOUR_CALM) after at most
    PROCESSED_BOUND streams, another connection is served at once, the RSS grows little; the frames
    the proxy sent back to the attacker."""
    got, slowest, growth, next_stream = _flood_while_served(side, flood, good)
    goaway = _goaway(got)
    processed = (goaway.last_stream_id + 1) // 2 if goaway is not None else None
    print(f"{side.name}: {what}: {goaway} after {processed} streams, {len(_resets(got))} resets sent, "
          f"slowest other call {slowest * 1000:.0f} ms, RSS +{growth:.1f} MB")
    assert goaway is not None and goaway.error_code == 11, f"{side.name}: {goaway} after {len(_resets(got))} resets"
    assert processed is not None and processed <= PROCESSED_BOUND, f"{side.name}: GOAWAY after {processed} streams"
    assert slowest < LATENCY_BOUND, f"{side.name}: another connection waited {slowest:.2f}s"
    assert growth < RSS_GROWTH_MB, f"{side.name}: RSS grew {growth:.1f} MB"
    _still_served(good[0], good[1], next_stream)  # the good connection's next stream (the loop used those below)
    _no_internal_errors(side.mesh.client_proxy, side.mesh.greeter_proxy)
    return got


@pytest.mark.timeout(120)
def test_data_after_end_stream_spends_the_reset_budget(side: Side) -> None:
    """MadeYouReset (CVE-2025-8671): DATA on a stream the client already ended makes the proxy answer
    RST_STREAM(STREAM_CLOSED). Those resets spend the reset budget like the client's own: a few are
    answered and the connection lives (and is not closed with GOAWAY(NO_ERROR) as the last stream's
    clean-up raced the idle read); 30,000 (60,000 frames) end in GOAWAY(ENHANCE_YOUR_CALM) after a
    bounded number of streams, with little memory, while another connection is served at once."""
    good = side.good_connection()

    client = side.raw()
    few = [frame for sid in range(1, 61, 2) for frame in (client.headers(sid, True), hyperframe_frame.DataFrame(sid, b"x"))]
    client.send(few)
    frames, closed = client.read(lambda got: len(_resets(got, 5)) >= 30, timeout=10)
    assert len(_resets(frames, 5)) == 30, frames[-5:]
    more, closed = client.read(_ended, timeout=1.5)
    assert _goaway(frames + more) is None and not closed, f"{side.name}: {_goaway(frames + more)}"
    client.send(client.unary(101))
    frames, closed = client.read(lambda got: 101 in _answered(got), timeout=10)
    assert 101 in _answered(frames), f"{side.name}: the connection stopped serving: {frames[-5:]}"
    client.sock.close()

    attack = RawClient()
    flood = [frame for i in range(ATTACK_STREAMS) for frame in (attack.headers(2 * i + 1, True), hyperframe_frame.DataFrame(2 * i + 1, b"x"))]
    got = _flood_ends_calmly(side, "data after END_STREAM", flood, good)
    assert len(_resets(got)) <= PROCESSED_BOUND, f"{side.name}: {len(_resets(got))} resets answered"


@pytest.mark.timeout(120)
def test_rapid_reset_budget_is_the_same_on_both_sides(side: Side) -> None:
    """Rapid Reset (CVE-2023-44487), 30,000 HEADERS + RST_STREAM pairs: GOAWAY(ENHANCE_YOUR_CALM) after a
    bounded number of streams on the inbound side too (a peer proxy's budget was 10,000 + 1,000/s), with
    little memory, while another connection is served at once."""
    good = side.good_connection()
    attack = RawClient()
    flood = []
    for i in range(ATTACK_STREAMS):
        reset = hyperframe_frame.RstStreamFrame(2 * i + 1)
        reset.error_code = 8
        flood += [attack.headers(2 * i + 1, False), reset]
    _flood_ends_calmly(side, "Rapid Reset", flood, good)


@pytest.mark.timeout(90)
def test_streams_over_the_limit_are_refused_and_the_connection_lives(side: Side) -> None:
    """RFC 9113 5.1.2: HEADERS beyond SETTINGS_MAX_CONCURRENT_STREAMS (100) are a stream error. 110
    requests sent with the preface (legal: the client has not seen the proxy's SETTINGS yet) get 100
    answers and 10 REFUSED_STREAM; 200 in one write after SETTINGS, 100 and 100; the connection lives."""
    greeter: RecordingGreeter = side.mesh.greeter  # type: ignore[assignment]
    for count, wait_for_settings in ((110, False), (200, True)):
        client = side.raw()
        if wait_for_settings:
            client.send([])
            client.read(lambda got: any(isinstance(f, hyperframe_frame.SettingsFrame) for f in got), timeout=5)
        served_before = greeter.hellos()
        client.send([frame for i in range(count) for frame in client.unary(2 * i + 1)])
        frames, closed = client.read(lambda got, count=count: len(_answered(got)) + len(_resets(got)) >= count or _ended(got), timeout=20)
        refused = {f.stream_id for f in _resets(frames, 7)}
        assert _goaway(frames) is None and not closed, f"{side.name} {count}: {_goaway(frames)}"
        assert len(_answered(frames)) == 100 and len(refused) == count - 100, (
            f"{side.name} {count}: {len(_answered(frames))} answered, {len(refused)} refused, {_resets(frames)[:3]}"
        )
        assert not refused & _answered(frames)
        assert greeter.hellos() == served_before + 100  # the refused ones never reached the app
        client.send(client.unary(2 * count + 1))
        frames, closed = client.read(lambda got, count=count: 2 * count + 1 in _answered(got), timeout=10)
        assert 2 * count + 1 in _answered(frames), f"{side.name}: the connection stopped serving"
        client.sock.close()
    _no_internal_errors(side.mesh.client_proxy, side.mesh.greeter_proxy)


@pytest.mark.timeout(90)
def test_a_stream_stalled_by_its_reader_is_reset_after_the_idle_timeout(cluster: Cluster, serve: Callable[[Greeter], int]) -> None:
    """A client that reads the response head and then neither reads (no WINDOW_UPDATE) nor closes: its
    stream is reset (CANCEL) once it has waited on the client for --idle-timeout, upstream too; the
    connection's other streams are served."""
    import h2.events

    greeter = RecordingGreeter()
    cluster.init_ca()
    greeter_proxy = cluster.proxy("greeter", serve(greeter))
    endpoints = cluster.write_endpoints([("greeter", greeter_proxy.inbound)])
    client = cluster.proxy("client", 1, endpoints=endpoints, extra=["--no-zeroconf", "--idle-timeout", "1s"])
    sock, conn = _h2_client(client.outbound)
    conn.send_headers(1, _grpc_request_headers("Count"))
    conn.send_data(1, b"\x00\x00\x00\x00\x06200000", end_stream=True)
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    # The stream's window (64 KiB) is never given back, the connection's is: the proxy waits on this
    # stream only, and another stream (3, opened meanwhile) is served.
    events: list = []
    sock.settimeout(0.5)
    asked_other = False
    while time.monotonic() - started < 6 and not (_grpc_ok(events, 3) and any(isinstance(e, h2.events.StreamReset) for e in events)):
        try:
            data = sock.recv(65536)
        except TimeoutError:
            data = None
        if data == b"":
            break
        for event in conn.receive_data(data or b""):
            events.append(event)
            if isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                conn.increment_flow_control_window(event.flow_controlled_length)  # the connection's only
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        if not asked_other and any(isinstance(e, h2.events.DataReceived) for e in events):
            _unary_request(conn, 3)
            asked_other = True
        sock.sendall(conn.data_to_send())
    assert any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == 1 for e in events), events[:5]
    assert _grpc_ok(events, 3), "the other stream was not served while stream 1 stalled"
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets and resets[0].stream_id == 1 and resets[0].error_code == 8, f"never reset: {events[-3:]}"
    assert time.monotonic() - started < 5
    assert metric(client, "response_total", direction="outbound", classification="failure") >= 1
    sock.close()
    _no_internal_errors(client, greeter_proxy)


class CancelCountingGreeter(RecordingGreeter):
    """Counts the Wait calls in progress and those that ended by the caller's cancel."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.cancels = 0

    def wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.waiting += 1
        answer = super().wait(request, context)
        if not context.is_active():
            with self._lock:
                self.cancels += 1
        return answer


@pytest.mark.timeout(120)
def test_a_burst_of_grpcio_cancels_through_two_proxies(cluster: Cluster, serve: Callable[[Greeter], int]) -> None:
    """Three grpcio channels (three app connections) each cancel 80 calls at once, twice: 480 cancels within
    a few seconds cross the proxies' shared connections, where the peer's reset budget is a client's
    (100 + 10/s). The sending proxy opens a stream on a connection only while that connection's budget
    could pay for cancelling every stream on it: no ENHANCE_YOUR_CALM, every cancel reaches the app, and
    a call in flight meanwhile succeeds."""
    greeter = CancelCountingGreeter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=300))
    server.add_generic_rpc_handlers((greeter.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        mesh = start_mesh(cluster, greeter, port)
        channels = [grpc.insecure_channel(mesh.upstream, options=NO_PROXY + [("grpc.use_local_subchannel_pool", 1)]) for _ in range(3)]
        try:
            for wave in (1, 2):  # the second wave comes before the first one's budget has refilled
                calls = [stubs(channel)["Wait"].future(b"", timeout=30) for channel in channels for _ in range(80)]
                slow = stubs(channels[0])["Slow"].future(b"2", timeout=20)
                deadline = time.monotonic() + 15
                while greeter.waiting < 240 * wave:
                    assert time.monotonic() < deadline, f"wave {wave}: only {greeter.waiting} calls reached the app"
                    time.sleep(0.05)
                for call in calls:
                    call.cancel()
                assert slow.result() == b"late"
                deadline = time.monotonic() + 15
                while greeter.cancels < 240 * wave and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert greeter.cancels == 240 * wave, f"wave {wave}: {greeter.cancels} cancels reached the app"
            assert stubs(channels[1])["Hello"](b"after", timeout=10).startswith(b"hello after")
        finally:
            for channel in channels:
                channel.close()
        for proxy in (mesh.client_proxy, mesh.greeter_proxy):
            assert "ENHANCE_YOUR_CALM" not in proxy.process.log(), proxy.process.log()[-3000:]
        _no_internal_errors(mesh.client_proxy, mesh.greeter_proxy)
    finally:
        server.stop(0).wait(5)


