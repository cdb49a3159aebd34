"""Clients that try to get around identity and policy: silence, partial heads, stalled or
malformed bodies, hanging up mid-response (issue: "No way around identity and policy").

Each test uses real proxies, a real controller where policy is involved, and raw sockets
for the hostile side. None of them may leave a traceback in a proxy's log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, ProxyInfo, free_port
from tests.integration.test_control_plane import admin_config, wait_for
from tests.integration.test_traffic import apply, metric, synced

pytestmark = pytest.mark.timeout(120)

FORGED = "spiffe://evil.test/svc/admin"


def request_after_silence(port: int, request: bytes, silence: float, timeout: float = 10.0) -> bytes:
    """Connect, say nothing for ``silence`` seconds, send ``request``, read until the server closes or
    stops talking (a keep-alive answer ends when it is complete)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        time.sleep(silence)
        try:
            sock.sendall(request)
        except OSError:
            return b""
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            return data


def assert_clean_logs(*processes: ProxyInfo) -> None:
    for proxy in processes:
        log = proxy.process.log()
        assert "Traceback" not in log, log
        assert " ERROR " not in log, log


def controller_with(cluster: Cluster, port: int | None = None) -> dict:
    """`mesh up --detach` on ``port`` (a fixed one survives a restart), in this test's trust domain."""
    from tests.integration.test_control_plane import _adopt

    if not cluster.home.joinpath("ca").exists():
        cluster.init_ca()
    listen = f"127.0.0.1:{port or 0}"
    result = cluster.mesh("up", "--detach", "--listen", listen, "-o", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    cluster.processes.append(_adopt(cluster, "mesh", info["pid"]))
    return info


def service_and_caller(
    cluster: Cluster, kind: str = "http", protocol: str | None = None, caller_extra: list[str] | None = None
) -> tuple[ProxyInfo, ProxyInfo]:
    """``web`` (an app of ``kind``, declaring ``protocol``) and ``client`` with `--upstream web=0`."""
    controller_with(cluster)
    web = cluster.proxy("web", cluster.app(kind, "web"), extra=["--protocol", protocol] if protocol else [])
    client = cluster.proxy("client", 1, extra=["--upstream", "web=0", *(caller_extra or [])])
    wait_for(lambda: admin_config(client)["endpoints"].get("web"), 10, "client sees web")
    if protocol:
        wait_for(
            lambda: all(e.get("protocol", protocol) == protocol for e in admin_config(client)["endpoints"]["web"]),
            10,
            "web's declared protocol reaches the caller",
        )
    return web, client


# ---------------------------------------------------------------- 1. silence buys no raw pipe


def test_a_silent_client_cannot_get_past_policy_or_forge_its_identity(cluster: Cluster) -> None:
    """web is `auto` (detects): a caller that waits 1.5 s is relayed as opaque TCP, and web's
    proxy must still police it, check the bytes again, and tell the app who really called."""
    web, client = service_and_caller(cluster)
    local = client.upstreams["web"]
    forged = f"GET /headers HTTP/1.1\r\nHost: web\r\nmesh-client-id: {FORGED}\r\n\r\n".encode()

    version = apply(cluster, '[[policy]]\nservice = "web"\ndeny = ["client"]\n')
    synced(cluster, version, web, client)
    answer = request_after_silence(local, forged, silence=1.5)
    assert b" 200 " not in answer.split(b"\r\n", 1)[0], answer  # was the app's 200 before the fix
    assert b"mesh-client-id" not in answer
    wait_for(lambda: metric(web, "tcp_authz_deny_total", peer_service="client") >= 1, 5, "the refusal is counted")
    assert "refused an opaque TCP stream from " + cluster.spiffe("client") in web.process.log()

    version = apply(cluster, '[[policy]]\nservice = "web"\nallow = ["client"]\n')
    synced(cluster, version, web, client)
    answer = request_after_silence(local, forged, silence=1.5)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert seen["mesh-client-id"] == cluster.spiffe("client")  # never the forged id

    smuggled = (
        b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /headers HTTP/1.1\r\nHost: web\r\n\r\n"
    )
    answer = request_after_silence(local, smuggled, silence=1.5)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"x-mesh-error: bad-request" in answer
    assert_clean_logs(web, client)


def test_a_service_declared_http_never_becomes_opaque(cluster: Cluster) -> None:
    web, client = service_and_caller(cluster, protocol="http", caller_extra=["--head-timeout", "1500ms"])
    local = client.upstreams["web"]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
        answer = read_answer(sock)  # silence: the listener answers, it does not relay
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"x-mesh-error: head-timeout" in answer
    assert 1.2 < time.monotonic() - started < 5

    answer = request_after_silence(local, b"\x16\x03\x01\x02\x00binary", silence=0)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    # A pause shorter than the head timeout is only a slow client: served as HTTP, the real id told.
    answer = request_after_silence(
        local, f"GET /headers HTTP/1.1\r\nHost: web\r\nmesh-client-id: {FORGED}\r\n\r\n".encode(), silence=1.1
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["mesh-client-id"] == cluster.spiffe("client")
    assert_clean_logs(web, client)


def test_a_service_declared_tcp_is_relayed_at_once_and_policed_at_l4(cluster: Cluster) -> None:
    web, client = service_and_caller(cluster, kind="banner", protocol="tcp")
    local = client.upstreams["web"]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
        assert sock.recv(100) == b"220 banner ready\r\n"  # the server speaks first: no detection wait
        elapsed = time.monotonic() - started
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"
    assert elapsed < 0.8, elapsed  # `auto` waits a second of silence before going opaque

    version = apply(cluster, '[[policy]]\nservice = "web"\nallow = ["someone-else"]\n')
    synced(cluster, version, web, client)
    with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
        sock.settimeout(5)
        try:
            received = sock.recv(100)
        except ConnectionResetError:
            received = b""
    assert received == b"", received  # not a byte from (or to) the app
    wait_for(lambda: metric(web, "tcp_authz_deny_total", peer_service="client") >= 1, 5, "the refusal is counted")
    assert_clean_logs(web, client)


def test_the_gateway_is_http_only(cluster: Cluster) -> None:
    controller_with(cluster)
    cluster.proxy("web", cluster.app("http", "web"))
    port = free_port()
    gateway = cluster.spawn("gateway", [*cluster_mesh(), "gateway", "--listen", f"127.0.0.1:{port}", "--to", "web"])
    gateway.wait_for(r"ready: ")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200, 10, "gateway → web")
    answer = request_after_silence(
        port, f"GET /headers HTTP/1.1\r\nHost: shop\r\nmesh-client-id: {FORGED}\r\n\r\n".encode(), silence=1.5
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["mesh-client-id"] == cluster.spiffe("gateway")
    answer = request_after_silence(port, b"SSH-2.0-OpenSSH_9.6\r\n", silence=0)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert "Traceback" not in gateway.log()


def cluster_mesh() -> list[str]:
    import sys

    return [sys.executable, "-m", "mesh"]


# ---------------------------------------------------------------- 2. partial heads are budgeted


def mesh_client_context(cluster: Cluster, tmp: Path) -> ssl.SSLContext:
    """A TLS client holding a real mesh certificate (svc/client), as a peer proxy would."""
    out = tmp / "client-creds"
    result = cluster.mesh("ca", "issue", "client", "--out", str(out))
    assert result.returncode == 0, result.stderr
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(out / "cert.pem", out / "key.pem")
    context.load_verify_locations(out / "bundle.pem")
    context.check_hostname = False
    context.set_alpn_protocols(["http/1.1"])
    return context


def test_partial_heads_are_cut_at_the_head_timeout_on_every_listener(cluster: Cluster, tmp_path: Path) -> None:
    cluster.init_ca()
    web = cluster.proxy("web", cluster.app("http", "web"), extra=["--head-timeout", "1s"])
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=["--head-timeout", "1s", "--upstream", "web=0"])

    def timed(sock: socket.socket, first: bytes) -> tuple[bytes, float]:
        started = time.monotonic()
        sock.sendall(first)
        return read_answer(sock), time.monotonic() - started

    for port in (client.outbound, client.upstreams["web"]):
        # The head's first line and a header, then silence: before, the rest waited 300 s.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answer, elapsed = timed(sock, b"GET http://web/ HTTP/1.1\r\nHost: web\r\n")
        assert answer.startswith(b"HTTP/1.1 408 "), (port, answer)
        assert elapsed < 3, elapsed
        # A whole request, then the start of a pipelined one that never ends.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            answer, elapsed = timed(sock, b"GET http://web/ HTTP/1.1\r\nHost: web\r\n\r\nGET http://web/ HTTP/1.1\r\nHo")
            answer += read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"HTTP/1.1 408 " in answer, answer
        assert elapsed < 3, elapsed

    # A byte a second never completes a head: the budget is for the whole head, not per read.
    with socket.create_connection(("127.0.0.1", client.outbound), timeout=10) as sock:
        started = time.monotonic()
        try:
            for byte in b"GET http://web/ HTTP/1.1\r\nHost: web\r\n\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
        except OSError:
            pass
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 3

    # Inbound, from a peer holding a mesh certificate.
    context = mesh_client_context(cluster, tmp_path)
    with socket.create_connection(("127.0.0.1", web.inbound), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="web") as tls:
            answer, elapsed = timed(tls, b"GET / HTTP/1.1\r\nHost: web\r\n")  # type: ignore[arg-type]
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert elapsed < 3, elapsed
    assert_clean_logs(web, client)


# ---------------------------------------------------------------- 3. bodies that stall or break


def test_stalled_and_malformed_bodies_get_an_answer_not_a_traceback(cluster: Cluster, tmp_path: Path) -> None:
    cluster.init_ca()
    web = cluster.proxy("web", cluster.app("http", "web"), extra=["--body-timeout", "1s"])
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=["--body-timeout", "1s"])

    with socket.create_connection(("127.0.0.1", client.outbound), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST http://web/upload HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\n0123456789")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"x-mesh-error: body-timeout" in answer
    assert time.monotonic() - started < 4

    with socket.create_connection(("127.0.0.1", client.outbound), timeout=10) as sock:
        sock.sendall(b"POST http://web/upload HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.3)  # the head went upstream alone; the broken chunk comes after it
        sock.sendall(b"zz\r\nnot hex\r\n")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"x-mesh-error: bad-request" in answer

    # Inbound, from a peer: the same deadline, 408 straight from the callee's proxy.
    context = mesh_client_context(cluster, tmp_path)
    with socket.create_connection(("127.0.0.1", web.inbound), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="web") as tls:
            tls.sendall(b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 50\r\n\r\nabc")
            answer = read_answer(tls)  # type: ignore[arg-type]
    assert answer.startswith(b"HTTP/1.1 408 "), answer

    # Both proxies keep serving.
    assert requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=5).status_code == 200
    assert_clean_logs(web, client)


# ---------------------------------------------------------------- 4. a client that hangs up


def test_a_client_that_hangs_up_is_not_the_endpoints_failure(cluster: Cluster) -> None:
    cluster.init_ca()
    one = cluster.proxy("web", cluster.app("http", "one"), name="proxy-one")
    two = cluster.proxy("web", cluster.app("http", "two"), name="proxy-two")
    endpoints = cluster.write_endpoints([("web", one.inbound), ("web", two.inbound)])
    client = cluster.proxy("client", 1, endpoints)
    hangups = 12
    for _ in range(hangups):
        with socket.create_connection(("127.0.0.1", client.outbound), timeout=10) as sock:
            sock.sendall(b"GET http://web/bytes?size=50000000 HTTP/1.1\r\nHost: web\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    wait_for(
        lambda: metric(client, "response_total", direction="outbound", mesh_error="client-reset") >= hangups,
        10,
        "every hang-up recorded as client-reset",
    )
    assert metric(client, "response_total", mesh_error="upstream-reset") == 0
    assert metric(client, "response_total", mesh_error="client-reset", classification="failure") == 0
    time.sleep(0.5)
    assert "ejected" not in client.process.log()  # before: both endpoints struck out, one ejected
    for _ in range(4):
        assert requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=5).status_code == 200
    assert_clean_logs(one, two, client)


# ---------------------------------------------------------------- a controller that restarts


def test_a_controller_restart_is_a_reason_in_the_log_not_a_traceback(cluster: Cluster) -> None:
    port = free_port()
    info = controller_with(cluster, port)
    web = cluster.proxy("web", cluster.app("http", "web"))
    wait_for(lambda: admin_config(web)["controller"]["connected"], 10, "web connected")
    os.kill(info["pid"], signal.SIGKILL)
    wait_for(lambda: not admin_config(web)["controller"]["connected"], 30, "web notices the controller is gone")
    time.sleep(1.5)  # a few reconnection attempts against nothing
    controller_with(cluster, port)
    wait_for(lambda: admin_config(web)["controller"]["connected"], 15, "web reconnected")
    log = web.process.log()
    assert "lost the controller" in log
    assert "Traceback" not in log and " ERROR " not in log, log
