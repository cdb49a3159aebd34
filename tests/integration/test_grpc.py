"""HTTP/2 and gRPC through the mesh, end to end, with the real grpcio package.

grpcio client → ``--upstream greeter=0`` listener (h2c) → client proxy → mTLS, ALPN h2 →
greeter proxy → grpcio server (h2c). The greeter service uses generic handlers
with bytes (de)serializers, so no generated code is needed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from tests.integration.conftest import Cluster, ProxyInfo  # noqa: E402

pytestmark = pytest.mark.timeout(120)

SERVICE = "mesh.test.Greeter"
NO_PROXY = [("grpc.enable_http_proxy", 0)]


def _ident(data: bytes) -> bytes:
    return data


class Greeter:
    """Hello (unary), Count (server streaming), Join (client streaming), Echo (bidi), Slow, Wait."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.metadata: dict[str, str] = {}

    def hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.metadata = {k: v for k, v in context.invocation_metadata()}
        return b"hello " + request

    def count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    def join(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return b",".join(requests)

    def echo(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield b"echo " + request

    def slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(float(request))
        return b"late"

    def wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.add_callback(self.cancelled.set)
        deadline = time.monotonic() + 20
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not context.is_active():
            self.cancelled.set()
        return b"done"

    def handler(self) -> grpc.GenericRpcHandler:
        kw = {"request_deserializer": _ident, "response_serializer": _ident}
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Hello": grpc.unary_unary_rpc_method_handler(self.hello, **kw),
                "Count": grpc.unary_stream_rpc_method_handler(self.count, **kw),
                "Join": grpc.stream_unary_rpc_method_handler(self.join, **kw),
                "Echo": grpc.stream_stream_rpc_method_handler(self.echo, **kw),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow, **kw),
                "Wait": grpc.unary_unary_rpc_method_handler(self.wait, **kw),
            },
        )


@dataclass
class Mesh:
    cluster: Cluster
    greeter: Greeter
    server_port: int
    greeter_proxy: ProxyInfo
    client_proxy: ProxyInfo

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.client_proxy.upstreams['greeter']}"


@pytest.fixture
def greeter_server() -> Iterator[tuple[Greeter, int]]:
    greeter = Greeter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((greeter.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield greeter, port
    finally:
        server.stop(0).wait(5)


def start_mesh(cluster: Cluster, greeter: Greeter, port: int, controller: bool = False) -> Mesh:
    if controller:
        from tests.integration.test_control_plane import admin_config, up, wait_for

        up(cluster)
        greeter_proxy = cluster.proxy("greeter", port)
        client_proxy = cluster.proxy("client", cluster.app("http", "client"), extra=["--upstream", "greeter=0"])
        wait_for(lambda: admin_config(client_proxy)["endpoints"].get("greeter"), 10, "client sees greeter")
    else:
        cluster.init_ca()
        greeter_proxy = cluster.proxy("greeter", port)
        endpoints = cluster.write_endpoints([("greeter", greeter_proxy.inbound)])
        client_proxy = cluster.proxy(
            "client", cluster.app("http", "client"), endpoints=endpoints, extra=["--upstream", "greeter=0"]
        )
    return Mesh(cluster, greeter, port, greeter_proxy, client_proxy)


@pytest.fixture
def mesh(cluster: Cluster, greeter_server: tuple[Greeter, int]) -> Mesh:
    return start_mesh(cluster, *greeter_server)


def stubs(channel: grpc.Channel) -> dict[str, object]:
    kw = {"request_serializer": _ident, "response_deserializer": _ident}
    return {
        "Hello": channel.unary_unary(f"/{SERVICE}/Hello", **kw),
        "Count": channel.unary_stream(f"/{SERVICE}/Count", **kw),
        "Join": channel.stream_unary(f"/{SERVICE}/Join", **kw),
        "Echo": channel.stream_stream(f"/{SERVICE}/Echo", **kw),
        "Slow": channel.unary_unary(f"/{SERVICE}/Slow", **kw),
        "Wait": channel.unary_unary(f"/{SERVICE}/Wait", **kw),
    }


def metric(proxy: ProxyInfo, name: str, **labels: str) -> float:
    import requests

    from mesh.telemetry import parse_prometheus_text

    text = requests.get(proxy.admin_url + "/metrics", timeout=5).text
    return sum(
        s.value
        for s in parse_prometheus_text(text)
        if s.name == name and all(s.labels_dict.get(k) == v for k, v in labels.items())
    )


def test_grpc_calls_of_every_shape_through_the_mesh(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        rpc = stubs(channel)
        assert rpc["Hello"](b"mesh", timeout=10) == b"hello mesh"
        # The greeter's proxy told the app who called.
        assert mesh.greeter.metadata.get("mesh-client-id") == mesh.cluster.spiffe("client")
        assert list(rpc["Count"](b"50", timeout=10)) == [str(i).encode() for i in range(50)]
        assert rpc["Join"](iter([b"a", b"b", b"c"]), timeout=10) == b"a,b,c"
        assert list(rpc["Echo"](iter([b"x", b"y" * 300_000, b"z"]), timeout=10)) == [
            b"echo x",
            b"echo " + b"y" * 300_000,
            b"echo z",
        ]
        # Many concurrent calls multiplexed on the shared connections.
        with futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: rpc["Hello"](str(i).encode(), timeout=10), range(200)))
        assert answers == [b"hello %d" % i for i in range(200)]
        # A big server stream passes flow control (more than any window).
        big = list(rpc["Count"](b"20000", timeout=30))
        assert len(big) == 20000
    # The main outbound listener routes by :authority.
    with grpc.insecure_channel(
        f"127.0.0.1:{mesh.client_proxy.outbound}", options=NO_PROXY + [("grpc.default_authority", "greeter")]
    ) as channel:
        assert stubs(channel)["Hello"](b"again", timeout=10) == b"hello again"
    assert metric(mesh.client_proxy, "response_total", direction="outbound", peer_service="greeter", classification="success") >= 205
    assert metric(mesh.greeter_proxy, "response_total", direction="inbound", classification="success") >= 205


def test_deadline_cancel_and_grpc_status_in_metrics(mesh: Mesh) -> None:
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        rpc = stubs(channel)
        with pytest.raises(grpc.RpcError) as err:
            rpc["Slow"](b"3", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # A client cancel reaches the server.
        future = rpc["Wait"].future(b"", timeout=30)
        time.sleep(0.5)
        future.cancel()
        assert mesh.greeter.cancelled.wait(10), "the server never saw the cancel"
        # Still serving afterwards.
        assert rpc["Hello"](b"after", timeout=10) == b"hello after"
    # A call to a missing method fails with UNIMPLEMENTED: the metrics classify it by grpc-status.
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        missing = channel.unary_unary(f"/{SERVICE}/Missing", request_serializer=_ident, response_deserializer=_ident)
        with pytest.raises(grpc.RpcError) as err:
            missing(b"", timeout=10)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    def failures(**labels: str) -> float:
        return metric(mesh.client_proxy, "response_total", direction="outbound", classification="failure", **labels)

    def cancels() -> float:
        return metric(mesh.client_proxy, "response_total", direction="outbound", mesh_error="client-reset")

    # The 0.5 s deadline races two clocks: the server's (grpc-timeout: DEADLINE_EXCEEDED, a failure)
    # and the client's (it resets the stream first: client-reset, not the service's failure).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and failures() + cancels() < 3:
        time.sleep(0.1)
    assert failures() + cancels() >= 3  # the deadline either way, the cancel, UNIMPLEMENTED
    assert failures() >= 1
    # The caller's cancel is recorded as such, and is not the service's failure.
    assert cancels() >= 1
    assert failures(mesh_error="client-reset") == 0
    assert failures(status_code="200") >= 1  # UNIMPLEMENTED is an HTTP 200: grpc-status made it a failure
    assert metric(mesh.greeter_proxy, "response_total", direction="inbound", status_code="200", classification="failure") >= 1
    # The tap shows the gRPC status of a call (UNIMPLEMENTED = 12).
    import threading

    import requests

    seen: list[dict] = []

    def tap() -> None:
        with requests.get(mesh.client_proxy.admin_url + "/tap", stream=True, timeout=10) as response:
            for line in response.iter_lines():
                if line:
                    seen.append(json.loads(line))
                    return

    reader = threading.Thread(target=tap)
    reader.start()
    time.sleep(0.5)
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        missing = channel.unary_unary(f"/{SERVICE}/Missing", request_serializer=_ident, response_deserializer=_ident)
        with pytest.raises(grpc.RpcError):
            missing(b"", timeout=10)
    reader.join(10)
    assert seen and seen[0]["grpc_status"] == 12 and seen[0]["status"] == 200


def test_policy_denied_call_is_permission_denied(cluster: Cluster, greeter_server: tuple[Greeter, int]) -> None:
    from tests.integration.test_traffic import apply, synced

    mesh = start_mesh(cluster, *greeter_server, controller=True)
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        assert stubs(channel)["Hello"](b"ok", timeout=10) == b"hello ok"
    version = apply(cluster, '[[policy]]\nservice = "greeter"\nallow = ["nobody"]\n')
    synced(cluster, version, mesh.client_proxy, mesh.greeter_proxy)
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        with pytest.raises(grpc.RpcError) as err:
            stubs(channel)["Hello"](b"no", timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not call greeter" in (err.value.details() or "")
    trailing = dict(err.value.trailing_metadata() or ())
    initial = dict(err.value.initial_metadata() or ())
    assert "forbidden" in (trailing.get("x-mesh-error"), initial.get("x-mesh-error"))
    assert metric(mesh.greeter_proxy, "response_total", mesh_error="forbidden", classification="failure") >= 1


class Unavailable(Greeter):
    """A greeter instance that is down: every Hello fails with UNAVAILABLE (a trailers-only answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.refused += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "this instance is down")
        return b""


def test_route_retries_over_http2(cluster: Cluster, greeter_server: tuple[Greeter, int]) -> None:
    """A route with retries sends a gRPC call that failed UNAVAILABLE to the other instance."""
    from tests.integration.test_traffic import apply, synced

    down = Unavailable()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((down.handler(),))
    down_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        mesh = start_mesh(cluster, *greeter_server, controller=True)
        down_proxy = cluster.proxy("greeter", down_port, name="proxy-greeter-down")
        from tests.integration.test_control_plane import admin_config, wait_for

        wait_for(lambda: len(admin_config(mesh.client_proxy)["endpoints"].get("greeter", [])) == 2, 10, "both greeters")
        version = apply(
            cluster, '[[route]]\nservice = "greeter"\nretries = { attempts = 2, on = ["5xx"], retryable = true }\n'
        )
        synced(cluster, version, mesh.client_proxy)
        with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
            hello = stubs(channel)["Hello"]
            answers = [hello(str(i).encode(), timeout=10) for i in range(30)]
        assert answers == [b"hello " + str(i).encode() for i in range(30)]
        assert down.refused >= 1  # the down instance was tried...
        assert metric(mesh.client_proxy, "retry_total", peer_service="greeter") >= down.refused  # ...and retried
        assert metric(down_proxy, "response_total", direction="inbound", classification="failure") == down.refused
    finally:
        server.stop(0).wait(5)


def test_a_dead_greeter_endpoint_costs_no_call(cluster: Cluster, greeter_server: tuple[Greeter, int]) -> None:
    """HTTP/2 too: a connect failure sends the call to another endpoint (nothing was sent yet)."""
    from tests.integration.conftest import free_port

    greeter, port = greeter_server
    cluster.init_ca()
    greeter_proxy = cluster.proxy("greeter", port)
    endpoints = cluster.write_endpoints([("greeter", free_port()), ("greeter", greeter_proxy.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=["--upstream", "greeter=0"])
    with grpc.insecure_channel(f"127.0.0.1:{client.upstreams['greeter']}", options=NO_PROXY) as channel:
        hello = stubs(channel)["Hello"]
        assert [hello(b"x", timeout=10) for _ in range(20)] == [b"hello x"] * 20


# ------------------------------------------------------------ hostile raw h2 clients


def _h2_client(port: int):  # noqa: ANN202
    import h2.config
    import h2.connection

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def _read_events(sock: socket.socket, conn, until, timeout: float = 10.0) -> list:  # noqa: ANN001
    events: list = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        try:
            events += conn.receive_data(data)
        except Exception:  # noqa: BLE001 - a closed connection may end mid-frame
            break
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                break
        if until(events):
            break
    return events


def _unary_request(conn, stream_id: int, authority: bytes = b"greeter", extra=(), method: str = "Hello", message: bytes = b"hi", end: bool = True) -> None:  # noqa: ANN001
    conn.send_headers(
        stream_id,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", f"/{SERVICE}/{method}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *extra,
        ],
    )
    conn.send_data(stream_id, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=end)


def _grpc_ok(events, stream_id: int) -> bool:  # noqa: ANN001
    import h2.events

    for e in events:
        if isinstance(e, h2.events.TrailersReceived) and e.stream_id == stream_id:
            return dict(e.headers).get(b"grpc-status") == b"0"
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id and dict(e.headers).get(b"grpc-status"):
            return dict(e.headers).get(b"grpc-status") == b"0"
    return False


def test_rapid_reset_gets_goaway_while_others_are_served(mesh: Mesh) -> None:
    import h2.errors
    import h2.events

    port = mesh.client_proxy.outbound
    good_sock, good = _h2_client(port)
    _unary_request(good, 1)
    good_sock.sendall(good.data_to_send())
    assert _grpc_ok(_read_events(good_sock, good, lambda ev: _grpc_ok(ev, 1)), 1)

    bad_sock, bad = _h2_client(port)
    stream_id = 1
    for _ in range(1000):
        _unary_request(bad, stream_id)
        bad.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        stream_id += 2
        try:
            bad_sock.sendall(bad.data_to_send())
        except OSError:
            break
    events = _read_events(bad_sock, bad, lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev))
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    bad_sock.close()

    # The well-behaved connection is still served.
    _unary_request(good, 3)
    good_sock.sendall(good.data_to_send())
    assert _grpc_ok(_read_events(good_sock, good, lambda ev: _grpc_ok(ev, 3)), 3)
    good_sock.close()


def test_oversized_headers_are_refused_and_the_proxy_keeps_serving(mesh: Mesh) -> None:
    import h2.events

    port = mesh.client_proxy.outbound
    sock, conn = _h2_client(port)
    # Let the proxy's SETTINGS (64 KiB header lists) be acknowledged first.
    _read_events(sock, conn, lambda ev: any(isinstance(e, h2.events.SettingsAcknowledged) for e in ev), timeout=3)
    conn.max_outbound_frame_size = 16384
    big = [(f"x-big-{i}".encode(), b"v" * 4000) for i in range(40)]  # ~160 KiB, in CONTINUATION frames
    _unary_request(conn, 1, extra=big)
    try:
        sock.sendall(conn.data_to_send())
    except OSError:
        pass
    events = _read_events(
        sock,
        conn,
        lambda ev: any(isinstance(e, (h2.events.ConnectionTerminated, h2.events.StreamReset)) for e in ev)
        or _grpc_ok(ev, 1),
    )
    assert any(isinstance(e, (h2.events.ConnectionTerminated, h2.events.StreamReset)) for e in events), events
    assert not _grpc_ok(events, 1)
    sock.close()
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        assert stubs(channel)["Hello"](b"still", timeout=10) == b"hello still"


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_through_the_mesh(mesh: Mesh) -> None:
    # The grpc server is the tiny h2c server: Hello answers each POST with grpc-status 0.
    url = f"http://127.0.0.1:{mesh.client_proxy.upstreams['greeter']}/{SERVICE}/Hello"
    body = mesh.cluster.tmp / "hello.grpc"
    body.write_bytes(b"\x00\x00\x00\x00\x02hi")  # one gRPC message frame
    result = subprocess.run(
        ["h2load", "-n", "200", "-c", "2", "-m", "10", "-H", "content-type: application/grpc", "-H", "te: trailers",
         "-d", str(body), url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout
    assert metric(mesh.client_proxy, "response_total", direction="outbound", classification="success") >= 200


def test_a_slow_reader_slows_only_its_own_stream(mesh: Mesh) -> None:
    """A client that stops reading a big server stream holds its own window, nobody else's."""
    import h2.events

    port = mesh.client_proxy.upstreams["greeter"]
    slow_sock, slow = _h2_client(port)
    slow.send_headers(
        1,
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"greeter"),
            (b":path", f"/{SERVICE}/Count".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ],
    )
    slow.send_data(1, b"\x00\x00\x00\x00\x06200000", end_stream=True)
    slow_sock.sendall(slow.data_to_send())
    # Read until the (never acknowledged) 64 KiB window is full, then stop reading.
    events = _read_events(
        slow_sock,
        slow,
        lambda ev: sum(len(e.data) for e in ev if isinstance(e, h2.events.DataReceived)) >= 60_000,
    )
    assert sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived)) >= 60_000
    # Meanwhile other callers — sharing the proxies' upstream connections — are served at full speed.
    with grpc.insecure_channel(mesh.upstream, options=NO_PROXY) as channel:
        rpc = stubs(channel)
        started = time.monotonic()
        assert len(list(rpc["Count"](b"20000", timeout=20))) == 20000
        with futures.ThreadPoolExecutor(8) as pool:
            assert len(list(pool.map(lambda i: rpc["Hello"](b"x", timeout=10), range(50)))) == 50
        assert time.monotonic() - started < 15
    slow_sock.close()


def test_header_cleaning_and_grpc_timeouts() -> None:
    from mesh.proxy._grpc import grpc_status_for, parse_grpc_timeout
    from mesh.proxy._h2_stream import clean_headers

    headers = [
        (b":path", b"/x"),
        (b"connection", b"keep-alive, x-secret"),
        (b"keep-alive", b"5"),
        (b"x-secret", b"1"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"host", b"greeter"),
        (b"grpc-timeout", b"100m"),
        (b"content-type", b"application/grpc"),
    ]
    assert clean_headers(headers) == [(b"te", b"trailers"), (b"grpc-timeout", b"100m"), (b"content-type", b"application/grpc")]
    assert clean_headers([(b"te", b"gzip")]) == []
    assert parse_grpc_timeout(b"100m") == pytest.approx(0.1)
    assert parse_grpc_timeout(b"2S") == 2.0 and parse_grpc_timeout(b"1H") == 3600.0
    assert parse_grpc_timeout(b"abc") is None and parse_grpc_timeout(None) is None and parse_grpc_timeout(b"123456789S") is None
    assert [grpc_status_for(s) for s in (502, 503, 504, 403, 429)] == [14, 14, 4, 7, 8]


def test_the_mesh_answers_when_the_grpc_timeout_passes_and_the_connection_lives_on(mesh: Mesh) -> None:
    import h2.events

    sock, conn = _h2_client(mesh.client_proxy.outbound)
    timeout = [(b"grpc-timeout", b"300m")]
    _unary_request(conn, 1, extra=timeout, method="Slow", message=b"3")  # the whole call in one write
    _unary_request(conn, 3, extra=timeout, method="Slow", message=b"3", end=False)  # a request still open
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    events = _read_events(sock, conn, lambda ev: sum(isinstance(e, h2.events.StreamEnded) for e in ev) >= 2)
    assert time.monotonic() - started < 2.5  # the mesh's deadline, not the 3 s of the call
    heads = {e.stream_id: dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)}
    for stream_id in (1, 3):
        assert heads[stream_id][b":status"] == b"200" and heads[stream_id][b"grpc-status"] == b"4"
        assert heads[stream_id][b"x-mesh-error"] == b"timeout"
    # The same connection serves the next call.
    _unary_request(conn, 5)
    sock.sendall(conn.data_to_send())
    assert _grpc_ok(_read_events(sock, conn, lambda ev: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 5 for e in ev)), 5)
    sock.close()


def test_plain_h2_mesh_errors_carry_status_and_x_mesh_error(mesh: Mesh) -> None:
    import h2.events

    sock, conn = _h2_client(mesh.client_proxy.outbound)
    conn.send_headers(
        1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"nowhere"), (b":path", b"/")], end_stream=True
    )
    _unary_request(conn, 3, authority=b"nowhere")  # the same, as gRPC
    sock.sendall(conn.data_to_send())
    events = _read_events(
        sock, conn, lambda ev: sum(isinstance(e, h2.events.StreamEnded) for e in ev) >= 2
    )
    heads = {e.stream_id: dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)}
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == 1)
    assert heads[1][b":status"] == b"503" and heads[1][b"x-mesh-error"] == b"no-endpoints"
    assert body.startswith(b"mesh: no endpoints for service 'nowhere'")
    assert heads[3][b":status"] == b"200" and heads[3][b"grpc-status"] == b"14"
    assert heads[3][b"x-mesh-error"] == b"no-endpoints"
    sock.close()


GREETER_APP = """
import os, time
from concurrent import futures
import grpc
ident = lambda b: b
kw = {"request_deserializer": ident, "response_serializer": ident}
def hello(request, context):
    caller = dict(context.invocation_metadata()).get("mesh-client-id", "-")
    return b"hello " + request + b" from " + caller.encode()
handler = grpc.method_handlers_generic_handler("mesh.test.Greeter", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello, **kw),
    "Count": grpc.unary_stream_rpc_method_handler(lambda r, c: (str(i).encode() for i in range(int(r))), **kw),
    "Join": grpc.stream_unary_rpc_method_handler(lambda rs, c: b",".join(rs), **kw),
    "Echo": grpc.stream_stream_rpc_method_handler(lambda rs, c: (b"echo " + r for r in rs), **kw),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("127.0.0.1:" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"""

CLIENT_APP = """
import os, sys, time
import grpc
target = os.environ["MESH_UPSTREAM_GREETER_URL"].removeprefix("http://")
ident = lambda b: b
with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
    call = lambda kind, name: getattr(channel, kind)("/mesh.test.Greeter/" + name, request_serializer=ident, response_deserializer=ident)
    deadline = time.monotonic() + 15
    while True:  # the greeter is advertised once its port is open; discovery takes a moment
        try:
            print("unary:", call("unary_unary", "Hello")(b"mesh", timeout=5).decode())
            break
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    print("server-streaming:", b"".join(call("unary_stream", "Count")(b"5", timeout=5)).decode())
    print("client-streaming:", call("stream_unary", "Join")(iter([b"a", b"b", b"c"]), timeout=5).decode())
    print("bidi:", [m.decode() for m in call("stream_stream", "Echo")(iter([b"x", b"y"]), timeout=5)])
"""


def test_injected_grpc_greeter_and_client(cluster: Cluster, tmp_path: Path) -> None:
    """The issue's shape: both sides run under `mesh inject`, the client reaches the greeter by its upstream URL."""
    from tests.integration.test_inject import up as up_mesh

    up_mesh(cluster)
    (tmp_path / "greeter.py").write_text(GREETER_APP)
    (tmp_path / "client.py").write_text(CLIENT_APP)
    mesh = [sys.executable, "-m", "mesh"]
    greeter = cluster.spawn("inject-greeter", [*mesh, "inject", "--name", "greeter", "--", sys.executable, str(tmp_path / "greeter.py")])
    greeter.wait_for("app is ready", timeout=20)
    client = cluster.spawn(
        "inject-client",
        [*mesh, "inject", "--name", "client", "--upstream", "greeter", "--", sys.executable, str(tmp_path / "client.py")],
    )
    assert client.popen.wait(60) == 0, client.log()
    log = client.log()
    assert f"unary: hello mesh from {cluster.spiffe('client')}" in log
    assert "server-streaming: 01234" in log
    assert "client-streaming: a,b,c" in log
    assert "bidi: ['echo x', 'echo y']" in log


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_upstream_goaway_every_few_requests_loses_nothing(cluster: Cluster) -> None:
    """nginx ends an HTTP/2 connection with GOAWAY after `keepalive_requests`: streams it covered
    finish, streams past it go again on a new connection, and no caller sees an error."""
    app = cluster.nginx(
        "app-h2",
        """
    listen 127.0.0.1:{port} http2;
    keepalive_requests 40;
    location / { return 200 "hello\\n"; }""",
    )
    cluster.init_ca()
    web = cluster.proxy("web", app)
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=["--upstream", "web=0"])
    result = subprocess.run(
        ["h2load", "-n", "600", "-c", "2", "-m", "8", f"http://127.0.0.1:{client.upstreams['web']}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "600 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout + result.stderr
    assert "600 2xx" in result.stdout, result.stdout
    assert metric(web, "response_total", direction="inbound", classification="success") >= 600
