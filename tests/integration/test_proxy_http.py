"""Two real `mesh proxy` processes, a real app, real clients (curl, requests, httpx)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import requests

from tests.integration.conftest import Cluster, Pair, raw_request

pytestmark = pytest.mark.timeout(90)


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(int(timeout)), *args], capture_output=True, text=True, timeout=timeout + 5
    )


def metrics(admin_url: str) -> str:
    return requests.get(f"{admin_url}/metrics", timeout=5).text


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    from mesh.telemetry import parse_prometheus_text

    total = 0.0
    for s in parse_prometheus_text(text):
        if s.name == name and all(dict(s.labels).get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def test_get_and_post_through_http_proxy_with_curl(pair: Pair) -> None:
    result = curl("-x", pair.client.proxy_url, "http://web/", "-D", "-")
    assert result.returncode == 0, result.stderr
    assert "hello from web" in result.stdout
    assert "x-request-id" not in result.stdout.lower() or True  # added toward the app, not the client
    body = os.urandom(3 * 1024 * 1024)
    path = pair.cluster.tmp / "body.bin"
    path.write_bytes(body)
    result = curl("-x", pair.client.proxy_url, "--data-binary", f"@{path}", "http://web.mesh/upload")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_requests_and_httpx_via_http_proxy_env(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", pair.client.proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with requests.Session() as session:
        for _ in range(5):  # keep-alive on the client side, pooled mTLS behind it
            response = session.get("http://web/headers", timeout=10)
            assert response.status_code == 200
        seen = response.json()
    assert seen["mesh-client-id"] == pair.cluster.spiffe("client")
    assert len(seen["x-request-id"]) == 32
    # A streamed upload from a generator (chunked) and a large streamed download.
    chunks = [os.urandom(64 * 1024) for _ in range(64)]
    response = requests.post("http://web/upload", data=iter(chunks), timeout=30)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert response.json() == {"received": 64 * 64 * 1024, "sha256": digest}
    with httpx.Client(proxy=pair.client.proxy_url, timeout=30) as client:
        with client.stream("GET", "http://web/bytes?size=20000000") as streamed:
            assert streamed.status_code == 200
            total = sum(len(piece) for piece in streamed.iter_bytes())
    assert total == 20_000_000


def test_origin_form_with_host_header_and_chunked_response(pair: Pair) -> None:
    result = curl("-H", "Host: web", f"http://127.0.0.1:{pair.client.outbound}/chunked?n=4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"chunk {i}\n" for i in range(4))


def test_h2c_upgrade_is_never_forwarded(pair: Pair) -> None:
    """curl --http2 offers Upgrade: h2c; the mesh declines it and the app sees plain HTTP/1.1."""
    url = f"http://127.0.0.1:{pair.client.outbound}/headers"
    result = curl("--http2", "-H", "Host: web", "-D", "-", url)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition("\n\n")  # text mode: CRLFs read as newlines
    assert head.startswith("HTTP/1.1 200"), head
    seen = json.loads(body)
    assert "upgrade" not in seen and "http2-settings" not in seen, seen
    assert "upgrade" not in seen.get("connection", "").lower()
    # A body sent with the upgrade offer arrives whole.
    result = curl("--http2", "-H", "Host: web", "--data-binary", "hello world", f"http://127.0.0.1:{pair.client.outbound}/upload")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["received"] == 11


def test_caller_identity_cannot_be_spoofed(pair: Pair) -> None:
    response = requests.get(
        "http://web/headers",
        headers={"mesh-client-id": pair.cluster.spiffe("admin"), "traceparent": "00-abc-def-01", "b3": "1-2-1"},
        proxies={"http": pair.client.proxy_url},
        timeout=10,
    )
    seen = response.json()
    assert seen["mesh-client-id"] == pair.cluster.spiffe("client")
    assert seen["traceparent"] == "00-abc-def-01" and seen["b3"] == "1-2-1"
    assert "proxy-connection" not in seen


def test_inbound_refuses_plain_tcp_and_foreign_ca(pair: Pair, tmp_path: Path) -> None:
    # Plain HTTP on the mTLS port: no response, the connection is closed.
    assert raw_request(pair.web.inbound, b"GET / HTTP/1.1\r\nHost: web\r\n\r\n", timeout=5) == b""
    # A certificate from another CA: the handshake fails.
    other = Cluster(tmp_path / "other")
    other.home.mkdir(parents=True)
    assert other.mesh("ca", "init").returncode == 0
    assert other.mesh("ca", "issue", "client", "--out", str(tmp_path / "foreign")).returncode == 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(tmp_path / "foreign" / "cert.pem", tmp_path / "foreign" / "key.pem")
    with socket.create_connection(("127.0.0.1", pair.web.inbound), timeout=5) as sock:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(sock) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
                assert tls.recv(100) == b""
                raise ConnectionResetError("closed without answering")
    pair.web.process.wait_for(r"refused a connection .*not issued by this mesh's CA")
    text = metrics(pair.web.admin_url)
    assert sample(text, "tls_handshake_failures_total") >= 2


def test_mesh_made_errors(pair: Pair, cluster: Cluster) -> None:
    # Unknown service: 503 no-endpoints.
    response = requests.get("http://nosuch/", proxies={"http": pair.client.proxy_url}, timeout=10)
    assert response.status_code == 503
    assert response.headers["x-mesh-error"] == "no-endpoints"
    assert response.text == "mesh: no endpoints for service 'nosuch'\n"
    # A dead app behind a live proxy: 502 from the inbound side, passed through.
    dead = cluster.proxy("dead", 1)  # nothing listens on port 1
    endpoints = cluster.write_endpoints([("web", pair.web.inbound), ("dead", dead.inbound)])
    assert endpoints == pair.endpoints
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = requests.get("http://dead/", proxies={"http": pair.client.proxy_url}, timeout=10)
        if response.status_code != 503:
            break
        time.sleep(0.1)
    assert response.status_code == 502
    assert response.headers["x-mesh-error"] == "connect-failed"
    assert "cannot connect to 127.0.0.1:1" in response.text
    # A dead peer proxy: 502 from the outbound side.
    cluster.write_endpoints([("web", pair.web.inbound), ("dead", 1)])
    time.sleep(1.2)
    response = requests.get("http://dead/", proxies={"http": pair.client.proxy_url}, timeout=10)
    assert response.status_code == 502 and response.headers["x-mesh-error"] == "connect-failed"


def test_upstream_dying_mid_response_is_not_a_complete_200(pair: Pair) -> None:
    result = curl("-x", pair.client.proxy_url, "http://web/die", "-o", "/dev/null")
    assert result.returncode == 18, result  # curl: partial file
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get("http://web/die", proxies={"http": pair.client.proxy_url}, timeout=10)
    # The mesh keeps serving.
    assert requests.get("http://web/", proxies={"http": pair.client.proxy_url}, timeout=10).status_code == 200


def test_request_timeout_gives_504(cluster: Cluster) -> None:
    cluster.init_ca()
    web = cluster.proxy("web", cluster.app("http", "web"))
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=["--request-timeout", "500ms"])
    started = time.monotonic()
    response = requests.get("http://web/slow?seconds=3", proxies={"http": client.proxy_url}, timeout=10)
    assert response.status_code == 504
    assert response.headers["x-mesh-error"] == "timeout"
    assert time.monotonic() - started < 2.5


def test_bad_requests(pair: Pair) -> None:
    port = pair.client.outbound
    big = b"GET http://web/ HTTP/1.1\r\nHost: web\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    assert raw_request(port, big).startswith(b"HTTP/1.1 431 ")
    many = b"GET http://web/ HTTP/1.1\r\nHost: web\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n"
    assert raw_request(port, many).startswith(b"HTTP/1.1 431 ")
    smuggle = b"POST http://web/upload HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    answer = raw_request(port, smuggle)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower()
    garbage = b"GET / HTTP/1.1\r\nHost: web\r\nBad Header\r\n\r\n"
    assert raw_request(port, garbage).startswith(b"HTTP/1.1 400 ")
    text = metrics(pair.client.admin_url)
    assert sample(text, "response_total", direction="outbound", status_code="431") == 2
    assert sample(text, "response_total", direction="outbound", status_code="400") == 2
    # Nothing of the smuggling attempt reached the app.
    assert sample(metrics(pair.web.admin_url), "request_total", direction="inbound") == 0


def test_slowloris_is_cut_while_others_are_served(cluster: Cluster) -> None:
    cluster.init_ca()
    web = cluster.proxy("web", cluster.app("http", "web"))
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=["--head-timeout", "1500ms"])
    slow = socket.create_connection(("127.0.0.1", client.outbound), timeout=10)
    started = time.monotonic()
    slow.sendall(b"GET http://web/ HTTP/1.1\r\n")
    answers: list[bytes] = []

    def drip() -> None:
        try:
            for _ in range(40):
                slow.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.1)
        except OSError:
            pass

    threading.Thread(target=drip, daemon=True).start()
    for _ in range(5):
        answers.append(requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=5).content)
    data = b""
    while True:
        chunk = slow.recv(4096)
        if not chunk:
            break
        data += chunk
    elapsed = time.monotonic() - started
    slow.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 1.2 < elapsed < 4
    assert answers == [b"hello from web\n"] * 5


def test_tcp_echo_through_upstream_listener(cluster: Cluster) -> None:
    cluster.init_ca()
    echo_port = cluster.app("echo", "echo")
    echo = cluster.proxy("echo", echo_port)
    endpoints = cluster.write_endpoints([("echo", echo.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=["--upstream", "echo=0"])
    local = client.upstreams["echo"]
    with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
        for message in (b"\x00\x01binary\xff", b"second message", os.urandom(200_000)):
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(65536)
            assert got == message
    # Server-speaks-first style: connect, say nothing for over a second, then talk. (A whole
    # line: "late hello" alone could still become "late hello HTTP/1.1", which the callee,
    # detecting again for an auto service, must wait to read — docs/config.md "Protocols".)
    with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
        time.sleep(1.3)
        sock.sendall(b"late hello\n")
        assert sock.recv(100) == b"late hello\n"


def test_websocket_upgrade_is_tunnelled(pair: Pair) -> None:
    with socket.create_connection(("127.0.0.1", pair.client.outbound), timeout=10) as sock:
        sock.sendall(
            b"GET http://web/ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        status, _, rest = head.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101 ")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in status
        frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"  # masked "Hello" (RFC 6455 example)
        sock.sendall(frame)
        echoed = rest
        while len(echoed) < len(frame):
            echoed += sock.recv(4096)
        assert echoed == frame


def test_connect_tunnel_to_mesh_service(pair: Pair) -> None:
    with socket.create_connection(("127.0.0.1", pair.client.outbound), timeout=10) as sock:
        sock.sendall(b"CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello from web\n")


def test_egress_to_non_mesh_host(pair: Pair) -> None:
    direct = f"http://127.0.0.1:{pair.web_app}/"
    response = requests.get(direct, proxies={"http": pair.client.proxy_url}, timeout=10)
    assert response.status_code == 200 and response.text == "hello from web\n"
    text = metrics(pair.client.admin_url)
    assert sample(text, "request_total", direction="outbound", peer_service="egress") == 1
    # Addressing the proxy to itself is refused, not looped.
    response = requests.get(pair.client.proxy_url + "/", proxies={"http": pair.client.proxy_url}, timeout=10)
    assert response.status_code == 400 and response.headers["x-mesh-error"] == "loop"


def test_balances_across_endpoints_and_follows_file_changes(cluster: Cluster) -> None:
    cluster.init_ca()
    static = ["--no-zeroconf"]  # this test is about the endpoints file alone
    one = cluster.proxy("web", cluster.app("http", "one"), extra=static, name="proxy-one")
    two = cluster.proxy("web", cluster.app("http", "two"), extra=static, name="proxy-two")
    endpoints = cluster.write_endpoints([("web", one.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=static)
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        assert {session.get("http://web/", timeout=5).headers["x-app"] for _ in range(10)} == {"one"}
        cluster.write_endpoints([("web", one.inbound), ("web", two.inbound)])
        deadline = time.monotonic() + 5
        seen: set[str] = set()
        while time.monotonic() < deadline and seen != {"one", "two"}:
            seen.add(session.get("http://web/", timeout=5).headers["x-app"])
    assert seen == {"one", "two"}


def test_an_endpoint_that_cannot_be_reached_costs_no_request(cluster: Cluster) -> None:
    """A dead (or foreign) endpoint fails at connect, before anything is sent: the request goes to
    another endpoint of the service instead of coming back as a 502, with no retry policy at all."""
    from tests.integration.conftest import free_port

    cluster.init_ca()
    static = ["--no-zeroconf"]
    web = cluster.proxy("web", cluster.app("http", "web"), extra=static)
    dead = free_port()  # nothing listens there
    endpoints = cluster.write_endpoints([("web", dead), ("web", web.inbound)])
    client = cluster.proxy("client", 1, endpoints, extra=static)
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        statuses = [session.get("http://web/", timeout=10).status_code for _ in range(30)]
    assert statuses == [200] * 30
    text = metrics(client.admin_url)
    assert sample(text, "response_total", direction="outbound", status_code="200") == 30
    assert sample(text, "response_total", direction="outbound", classification="failure") == 0


def test_sigterm_drains_in_flight_request(pair: Pair) -> None:
    results: list[requests.Response] = []
    worker = threading.Thread(
        target=lambda: results.append(
            requests.get("http://web/slow?seconds=2", proxies={"http": pair.client.proxy_url}, timeout=15)
        )
    )
    worker.start()
    time.sleep(0.7)
    pair.web.process.popen.terminate()
    # New connections are refused at once while the in-flight one finishes.
    time.sleep(0.3)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pair.web.inbound), timeout=2).close()
    worker.join(15)
    assert results and results[0].status_code == 200 and results[0].text == "slow done\n"
    assert pair.web.process.popen.wait(10) == 0


def test_metrics_count_requests(pair: Pair) -> None:
    with requests.Session() as session:
        session.proxies = {"http": pair.client.proxy_url}
        for _ in range(7):
            assert session.get("http://web/", timeout=5).status_code == 200
        assert session.get("http://web/status?code=500", timeout=5).status_code == 500
        assert session.get("http://web/status?code=404", timeout=5).status_code == 404
        assert session.get("http://nosuch/", timeout=5).status_code == 503
    out = metrics(pair.client.admin_url)
    assert sample(out, "request_total", direction="outbound", peer_service="web") == 9
    assert sample(out, "response_total", direction="outbound", peer_service="web", classification="success") == 8
    assert sample(out, "response_total", direction="outbound", status_code="500", classification="failure") == 1
    assert sample(out, "response_total", direction="outbound", status_code="503", mesh_error="no-endpoints") == 1
    assert sample(out, "response_latency_ms_count", direction="outbound", peer_service="web") == 9
    # Byte counters are added when a connection closes; the session just closed its own.
    deadline = time.monotonic() + 5
    while sample(metrics(pair.client.admin_url), "tcp_read_bytes_total", direction="outbound") == 0:
        assert time.monotonic() < deadline, "tcp_read_bytes_total never counted the closed connection"
        time.sleep(0.05)
    inbound = metrics(pair.web.admin_url)
    assert sample(inbound, "request_total", direction="inbound", peer_service="client") == 9
    assert sample(inbound, "identity_cert_expiry_timestamp_seconds") > time.time()
    config = requests.get(pair.client.admin_url + "/config", timeout=5).json()
    assert config["identity"] == pair.cluster.spiffe("client")
    assert config["endpoints"]["web"][0]["address"] == f"127.0.0.1:{pair.web.inbound}"
    assert requests.get(pair.client.admin_url + "/ready", timeout=5).status_code == 200
    assert requests.get(pair.client.admin_url + "/live", timeout=5).status_code == 200


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(120)
def test_one_gib_download_and_upload_keep_memory_low(pair: Pair) -> None:
    size = 1024 * 1024 * 1024
    result = curl(
        "-x", pair.client.proxy_url, f"http://web/bytes?size={size}", "-o", "/dev/null", "-w", "%{size_download}",
        timeout=100,
    )
    assert result.returncode == 0 and int(result.stdout) == size, result
    upload = subprocess.Popen(
        ["curl", "-sS", "--max-time", "100", "-x", pair.client.proxy_url, "-T", "-", "-H", "Expect:", "http://web/upload"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    piece = b"u" * (1024 * 1024)
    assert upload.stdin is not None
    for _ in range(512):
        upload.stdin.write(piece)
    upload.stdin.close()
    assert upload.stdout is not None
    out = upload.stdout.read()
    assert upload.wait(100) == 0
    assert json.loads(out)["received"] == 512 * 1024 * 1024
    for proxy in (pair.client, pair.web):
        assert _rss_mb(proxy.process.popen.pid) < 100
