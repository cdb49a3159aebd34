"""The edge (issue "a gateway that terminates TLS and routes many hosts and paths"), with real clients.

One gateway serves two host names over TLS with a certificate each (and gRPC on a third),
each host reaching its own service behind its own sidecar: curl over HTTP/2 and HTTP/1.1,
openssl s_client per server name, a grpcio client, TLS 1.0/1.1 refused, the redirect
listener's 308, what the app learns in X-Forwarded-*, a certificate replaced under load,
and the per-client limits. Certificates come from a throwaway CA made in the test.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.edge_certs import ThrowawayCA
from tests.integration.conftest import Cluster, Process, port_of
from tests.integration.test_control_plane import wait_for
from tests.integration.test_grpc import NO_PROXY, Greeter, stubs
from tests.integration.test_traffic import metric

grpc = pytest.importorskip("grpc")

pytestmark = pytest.mark.timeout(180)

READY = re.compile(r"proxy (?P<name>\S+) ready: admin (?P<admin>[^,\s]+), admin-mtls \S+, listen (?P<scheme>https?) (?P<listen>[^,\s]+)(?:, redirect (?P<redirect>\S+))?")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


@dataclass
class Gateway:
    process: Process
    admin: int
    listen: int
    redirect: int | None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


@dataclass
class Edge:
    cluster: Cluster
    ca: ThrowawayCA
    bundle: Path
    certs: dict[str, tuple[Path, Path]]
    endpoints: Path
    greeter: Greeter
    gateway: Gateway


def start_gateway(cluster: Cluster, name: str, *args: str, endpoints: Path) -> Gateway:
    argv = [sys.executable, "-m", "mesh", "gateway", "--name", name, "--listen", "127.0.0.1:0", "--no-zeroconf"]
    process = cluster.spawn(name, [*argv, "--endpoints", str(endpoints), *args])
    match = process.wait_for(READY, timeout=30)
    redirect = match.group("redirect")
    return Gateway(process, port_of(match.group("admin")), port_of(match.group("listen")), port_of(redirect) if redirect else None)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    cluster = Cluster(tmp_path_factory.mktemp("edge"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    greeter = Greeter()
    try:
        cluster.init_ca()
        shop = cluster.proxy("shop", cluster.app("http", "shop"))
        blog = cluster.proxy("blog", cluster.app("http", "blog"))
        server.add_generic_rpc_handlers((greeter.handler(),))
        grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        rpc = cluster.proxy("greeter", grpc_port)
        endpoints = cluster.write_endpoints([("shop", shop.inbound), ("blog", blog.inbound), ("greeter", rpc.inbound)])
        ca = ThrowawayCA.create()
        certs_dir = cluster.tmp / "certs"
        certs = {
            "shop": ca.issue(certs_dir, "shop", ["shop.example", "www.shop.example"]),
            "blog": ca.issue(certs_dir, "blog", ["blog.example", "*.blog.example"], kind="rsa"),
            "rpc": ca.issue(certs_dir, "rpc", ["rpc.example"]),
        }
        tls = [arg for c, k in certs.values() for arg in ("--tls-cert", str(c), "--tls-key", str(k))]
        gateway = start_gateway(
            cluster,
            "gateway",
            "--route", "shop.example=shop", "--route", "*.blog.example=blog", "--route", "blog.example=blog",
            "--route", "rpc.example=greeter", *tls, "--http-redirect", "127.0.0.1:0",
            endpoints=endpoints,
        )  # fmt: skip
        yield Edge(cluster, ca, ca.write_bundle(cluster.tmp / "ca.pem"), certs, endpoints, greeter, gateway)
    finally:
        server.stop(0).wait(5)
        cluster.close()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("curl"), "curl is not installed (.ci/run installs it)"
    return subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "15", *args], capture_output=True, text=True, timeout=30, env=CLEAN_ENV)


def https(edge: Edge, host: str, path: str = "/", *args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    port = port or edge.gateway.listen
    return curl("--cacert", str(edge.bundle), "--resolve", f"{host}:{port}:127.0.0.1", *args, f"https://{host}:{port}{path}")


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        # errors="replace": s_client also prints what the server sent, e.g. the HTTP/2 preface's binary
        # SETTINGS when ALPN says h2 and they arrive before s_client quits.
        input="", capture_output=True, text=True, errors="replace", timeout=30,
    )  # fmt: skip


def assert_clean(process: Process) -> None:
    log = process.log()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


# -- two hosts, two certificates, two services ------------------------------------------------------


@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
def test_two_hosts_each_reach_their_own_service(edge: Edge, version: str) -> None:
    expected_version = "2" if version == "--http2" else "1.1"
    for host, service in (("shop.example", "shop"), ("www.blog.example", "blog"), ("blog.example", "blog")):
        answer = https(edge, host, "/", version, "-w", "\n%{http_version}")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout == f"hello from {service}\n\n{expected_version}", (host, answer.stdout)
    # A POST body goes through whole, both ways (HTTP/2 in, HTTP/1.1 to the app).
    body = os.urandom(300_000)
    (edge.cluster.tmp / "body.bin").write_bytes(body)
    posted = https(edge, "shop.example", "/upload", version, "--data-binary", f"@{edge.cluster.tmp / 'body.bin'}")
    assert json.loads(posted.stdout) == {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    # Streamed with no length (chunked to the app when the client speaks HTTP/2), and a long download.
    no_length = "Content-Length:" if version == "--http2" else "Transfer-Encoding: chunked"
    streamed = https(edge, "shop.example", "/upload", version, "-T", str(edge.cluster.tmp / "body.bin"), "-H", no_length, "-X", "POST")
    assert json.loads(streamed.stdout) == {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}, streamed.stderr
    download = https(edge, "shop.example", "/bytes?size=5000000", version, "-o", "/dev/null", "-w", "%{size_download}")
    assert download.stdout == "5000000", download.stderr


def test_the_gateway_serves_without_cryptography(edge: Edge) -> None:
    """Its certificates are read and checked with the ssl module and mesh's DER reader: the
    cryptography package (~9 MB) is not in the running gateway (docs/performance.md, Memory)."""
    from tests.integration.test_sidecar_cryptography import cryptography_mapped

    assert https(edge, "shop.example", "/", "--http2").returncode == 0
    assert cryptography_mapped(edge.gateway.process.popen.pid) == []


@pytest.mark.parametrize(("server_name", "names"), [("shop.example", "DNS:shop.example, DNS:www.shop.example"),
                                                     ("blog.example", "DNS:blog.example, DNS:*.blog.example")])
def test_openssl_sees_the_certificate_of_each_server_name(edge: Edge, server_name: str, names: str) -> None:
    shown = s_client(
        edge.gateway.listen, "-servername", server_name, "-CAfile", str(edge.bundle), "-verify_hostname", server_name,
        "-verify_return_error", "-alpn", "h2,http/1.1",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"subject=CN = {server_name}" in shown.stdout, shown.stdout
    assert "Verify return code: 0 (ok)" in shown.stdout
    assert "ALPN protocol: h2" in shown.stdout
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", shown.stdout, re.S)
    assert pem is not None
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem.group(0), capture_output=True, text=True)
    assert names in text.stdout


def test_an_unknown_host_gets_404_no_route(edge: Edge) -> None:
    for version in ("--http2", "--http1.1"):
        answer = https(edge, "shop.example", "/", version, "-D", "-", "-H", "Host: nobody.example")
        assert re.match(r"HTTP/[\d.]+ 404", answer.stdout), answer.stdout
        assert "x-mesh-error: no-route" in answer.stdout.lower()


def test_grpc_over_tls_through_the_gateway(edge: Edge) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=edge.ca.pem)
    options = NO_PROXY + [("grpc.ssl_target_name_override", "rpc.example"), ("grpc.default_authority", "rpc.example")]
    with grpc.secure_channel(f"127.0.0.1:{edge.gateway.listen}", credentials, options=options) as channel:
        rpc = stubs(channel)
        assert rpc["Hello"](b"edge", timeout=10) == b"hello edge"
        assert edge.greeter.metadata.get("mesh-client-id") == edge.cluster.spiffe("gateway")
        assert edge.greeter.metadata.get("x-forwarded-proto") == "https"
        assert list(rpc["Count"](b"500", timeout=10)) == [str(i).encode() for i in range(500)]
        assert list(rpc["Echo"](iter([b"a", b"b" * 100_000]), timeout=10)) == [b"echo a", b"echo " + b"b" * 100_000]
        with pytest.raises(grpc.RpcError) as err:
            rpc["Slow"](b"3", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- versions, redirects, what the app is told ----------------------------------------------------


def test_tls_1_0_and_1_1_are_refused_and_1_2_served(edge: Edge) -> None:
    port = edge.gateway.listen
    before = metric(edge.gateway, "tls_handshake_failures_total", direction="edge", reason="unsupported-protocol")  # type: ignore[arg-type]
    for flag in ("-tls1", "-tls1_1"):
        # SECLEVEL 0 lets this client offer what it otherwise would not: the refusal is the gateway's.
        refused = s_client(port, flag, "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "shop.example")
        assert refused.returncode != 0
        assert "alert protocol version" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    served = s_client(port, "-tls1_2", "-servername", "shop.example", "-CAfile", str(edge.bundle), "-verify_return_error")
    assert served.returncode == 0 and "Protocol  : TLSv1.2" in served.stdout, served.stdout
    after = metric(edge.gateway, "tls_handshake_failures_total", direction="edge", reason="unsupported-protocol")  # type: ignore[arg-type]
    assert after - before == 2


def test_the_redirect_listener_answers_308(edge: Edge) -> None:
    assert edge.gateway.redirect is not None
    answer = curl("-D", "-", "-o", "/dev/null", "-H", "Host: shop.example", f"http://127.0.0.1:{edge.gateway.redirect}/cart?item=1")
    assert answer.stdout.startswith("HTTP/1.1 308 Permanent Redirect"), answer.stdout
    assert f"Location: https://shop.example:{edge.gateway.listen}/cart?item=1" in answer.stdout
    # A browser (here curl -L) follows it to the HTTPS listener.
    followed = curl(
        "-L", "--cacert", str(edge.bundle),
        "--resolve", f"shop.example:{edge.gateway.redirect}:127.0.0.1", "--resolve", f"shop.example:{edge.gateway.listen}:127.0.0.1",
        f"http://shop.example:{edge.gateway.redirect}/",
    )  # fmt: skip
    assert followed.stdout == "hello from shop\n", followed.stderr
    assert metric(edge.gateway, "gateway_redirects_total") >= 2  # type: ignore[arg-type]


def test_the_app_sees_x_forwarded_and_not_what_the_client_forged(edge: Edge) -> None:
    forged = ("-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Forwarded-Proto: http", "-H", "X-Forwarded-Host: evil.example",
              "-H", "Forwarded: for=6.6.6.6", "-H", "X-Real-IP: 6.6.6.6")  # fmt: skip
    for version in ("--http2", "--http1.1"):
        seen = json.loads(https(edge, "shop.example", "/headers", version, *forged).stdout)
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "https"
        assert seen["x-forwarded-host"] == f"shop.example:{edge.gateway.listen}"
        assert "forwarded" not in seen and "x-real-ip" not in seen
        assert seen["mesh-client-id"] == edge.cluster.spiffe("gateway")


def test_the_tap_shows_the_client_address_and_metrics_do_not(edge: Edge) -> None:
    lines: list[dict] = []

    def tap() -> None:
        with requests.get(edge.gateway.admin_url + "/tap", stream=True, timeout=10) as stream:
            for line in stream.iter_lines():
                item = json.loads(line)
                if item.get("type") == "request":
                    lines.append(item)
                    return

    reader = threading.Thread(target=tap, daemon=True)
    reader.start()
    wait_for(lambda: metric(edge.gateway, "tap_listeners") == 1, 10, "the tap listening")  # type: ignore[arg-type]
    https(edge, "shop.example", "/tapped", "-H", "X-Forwarded-For: 6.6.6.6")
    reader.join(10)
    assert lines and lines[0]["src_address"] == "127.0.0.1" and lines[0]["path"] == "/tapped", lines
    metrics = requests.get(edge.gateway.admin_url + "/metrics", timeout=5).text
    assert "127.0.0.1" not in metrics and "6.6.6.6" not in metrics  # no client address in any label
    assert "gateway_tls_cert_expiry_timestamp_seconds" in metrics


# -- a certificate replaced under load ----------------------------------------------------------------


def fingerprint_of(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def get_over(context: ssl.SSLContext, port: int, conn: http.client.HTTPConnection | None = None) -> tuple[http.client.HTTPConnection, str]:
    """GET / on ``conn`` (or a new TLS connection with SNI shop.example); the answer's body."""
    if conn is None:
        conn = http.client.HTTPConnection("shop.example", port, timeout=10)
        conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="shop.example")
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read().decode()
    if response.status != 200:
        raise AssertionError(f"{response.status} {body}")
    return conn, body


def test_a_certificate_replaced_during_a_request_loop_loses_nothing(edge: Edge) -> None:
    directory = edge.cluster.tmp / "reload"
    cert, key = edge.ca.issue(directory, "shop", ["shop.example"])
    gateway = start_gateway(edge.cluster, "gateway-reload", "--to", "shop", "--tls-cert", str(cert), "--tls-key", str(key), endpoints=edge.endpoints)
    context = ssl.create_default_context(cafile=str(edge.bundle))
    kept, _ = get_over(context, gateway.listen)  # an open keep-alive connection across the swap
    assert isinstance(kept.sock, ssl.SSLSocket)
    old = fingerprint_of(kept.sock)
    seen: dict[str, int] = {}
    failures: list[str] = []
    swapped_at: float | None = None
    new: str | None = None
    started = time.monotonic()
    requests_made = 0
    while time.monotonic() - started < 40 and requests_made < 3000:
        try:
            conn, body = get_over(context, gateway.listen)  # a new handshake per request
            assert isinstance(conn.sock, ssl.SSLSocket)
            served = fingerprint_of(conn.sock)
            conn.close()
            assert body == "hello from shop\n", body
            seen[served] = seen.get(served, 0) + 1
            get_over(context, gateway.listen, kept)
        except (OSError, ssl.SSLError, AssertionError, http.client.HTTPException) as exc:
            failures.append(repr(exc))
        requests_made += 1
        if swapped_at is None and time.monotonic() - started > 1.0:
            # As a renewal tool does: the new pair written beside, then renamed over (key first: for a
            # moment the key does not fit the certificate, and the gateway must keep the old one).
            new_cert, new_key = edge.ca.issue(directory / "next", "shop", ["shop.example"])
            leaf = x509.load_pem_x509_certificates(new_cert.read_bytes())[0]
            new = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
            os.replace(new_key, key)
            time.sleep(0.3)
            os.replace(new_cert, cert)
            swapped_at = time.monotonic()
        if new is not None and seen.get(new, 0) >= 20:
            break
    assert failures == [], failures[:5]
    assert new is not None and seen.get(new, 0) >= 20, (seen, requests_made)
    assert seen.get(old, 0) > 0
    assert fingerprint_of(kept.sock) == old  # the open connection kept its handshake, and kept working
    kept.close()
    assert "now serving a new certificate for shop.example" in gateway.process.log()
    assert_clean(gateway.process)
    gateway.process.terminate()


# -- limits -------------------------------------------------------------------------------------


def raw_get(port: int, *headers: str, sock: socket.socket | None = None) -> bytes:
    own = sock is None
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(("GET / HTTP/1.1\r\nHost: any.example\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(re.search(rb"(?i)content-length: (\d+)", data).group(1)):  # type: ignore[union-attr]
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and not re.search(rb"(?i)content-length", data.partition(b"\r\n\r\n")[0]):
                break
        return data
    finally:
        if own:
            sock.close()


def answers_200(port: int) -> bool:
    try:
        return raw_get(port).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_a_client_over_its_rate_gets_429_with_retry_after(edge: Edge) -> None:
    gateway = start_gateway(edge.cluster, "gateway-rate", "--route", "*=shop", "--client-rps", "2", "--client-burst", "4", endpoints=edge.endpoints)
    with socket.create_connection(("127.0.0.1", gateway.listen), timeout=10) as sock:
        answers = [raw_get(gateway.listen, sock=sock) for _ in range(12)]
    statuses = [int(a.split(b" ", 2)[1]) for a in answers]
    assert statuses[:4] == [200] * 4, statuses
    assert statuses.count(429) >= 6, statuses
    refused = next(a for a in answers if a.startswith(b"HTTP/1.1 429"))
    assert re.search(rb"(?i)\r\nretry-after: [1-9]\d*\r\n", refused), refused
    assert b"x-mesh-error: rate-limited" in refused
    time.sleep(1.2)  # the bucket refills
    assert raw_get(gateway.listen).startswith(b"HTTP/1.1 200")
    assert_clean(gateway.process)
    gateway.process.terminate()


def test_connections_per_client_are_limited(edge: Edge) -> None:
    gateway = start_gateway(edge.cluster, "gateway-conns", "--route", "*=shop", "--client-connections", "3", endpoints=edge.endpoints)
    held = [socket.create_connection(("127.0.0.1", gateway.listen), timeout=10) for _ in range(3)]
    try:
        for sock in held:
            assert raw_get(gateway.listen, sock=sock).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", gateway.listen), timeout=10) as fourth:
            try:
                answer = raw_get(gateway.listen, sock=fourth)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", answer  # closed before a byte was read
        wait_for(
            lambda: metric(gateway, "gateway_refused_connections_total", reason="client-connections") == 1,  # type: ignore[arg-type]
            5, "the refusal counted",
        )  # fmt: skip
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: answers_200(gateway.listen), 5, "a connection again once the others closed")
    assert_clean(gateway.process)
    gateway.process.terminate()


def test_a_trusted_proxys_forwarded_chain_is_kept_and_its_clients_limited_apart(edge: Edge) -> None:
    gateway = start_gateway(
        edge.cluster, "gateway-trusting", "--route", "*=shop", "--trust-forwarded", "127.0.0.0/8",
        "--client-rps", "1", "--client-burst", "1", "--client-connections", "1",
        endpoints=edge.endpoints,
    )  # fmt: skip
    first = raw_get(gateway.listen, "X-Forwarded-For: 198.51.100.7", "X-Forwarded-Proto: https")
    with socket.create_connection(("127.0.0.1", gateway.listen), timeout=10) as sock:
        # Connections of a trusted proxy are not counted per client (it carries many).
        second = raw_get(gateway.listen, "X-Forwarded-For: 198.51.100.8")
        sock.sendall(b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.9\r\nX-Forwarded-Proto: https\r\n\r\n")
        headers = json.loads(raw_body(sock))
    again = raw_get(gateway.listen, "X-Forwarded-For: 198.51.100.7")
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200"), (first, second)
    assert again.startswith(b"HTTP/1.1 429"), again  # 198.51.100.7's bucket, not the proxy's
    assert headers["x-forwarded-for"] == "198.51.100.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"  # what the proxy in front saw
    gateway.process.terminate()


def raw_body(sock: socket.socket) -> bytes:
    data = b""
    while True:
        data += sock.recv(65536)
        head, sep, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            return body


# -- errors at start --------------------------------------------------------------------------------


def test_bad_certificates_are_clear_errors_at_start(edge: Edge, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    cert, key = edge.certs["shop"]
    _, other_key = edge.certs["blog"]
    expired_cert, expired_key = edge.ca.issue(tmp_path, "old", ["old.example"], not_before=datetime.now(UTC) - timedelta(days=30), days=2)
    cases = [
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key)], f"certificate file {tmp_path / 'missing.pem'} does not exist"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], f"the key in {other_key} does not belong to the certificate in {cert}"),
        (["--tls-cert", str(expired_cert), "--tls-key", str(expired_key)], "(old.example) expired on"),
        (["--tls-cert", str(cert)], "1 --tls-cert but 0 --tls-key: they go in pairs"),
        (["--http-redirect", "127.0.0.1:0"], "--http-redirect sends clients to HTTPS, but the gateway has no certificate"),
        (["--route", "shop example=shop"], "--route shop example=shop: 'shop example' is not a host to route"),
    ]
    for args, says in cases:
        started = time.monotonic()
        result = edge.cluster.mesh("gateway", "--to", "shop", "--listen", "127.0.0.1:0", "--no-zeroconf", *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "error: " in result.stderr and says in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 15


# -- from mesh.toml, with `mesh up` and `mesh check` -------------------------------------------------


def test_mesh_up_serves_the_gateway_of_mesh_toml_and_check_warns_of_expiry(cluster: Cluster, tmp_path: Path) -> None:
    import textwrap

    from tests.integration.conftest import free_port
    from tests.integration.test_inject import HTTP_SERVER
    from tests.integration.test_up_config import processes_of, up_detached

    cluster.init_ca()
    server = tmp_path / "server.py"
    server.write_text(textwrap.dedent(HTTP_SERVER))
    ca = ThrowawayCA.create()
    ca.issue(tmp_path / "certs", "shop", ["shop.example"], days=10)  # expires within 30 days: `mesh check` warns
    bundle = ca.write_bundle(tmp_path / "ca.pem")
    port, redirect = free_port(), free_port()
    config = tmp_path / "mesh.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [mesh]
            trust_domain = "{cluster.trust_domain}"

            [[service]]
            name = "web"
            command = ["{sys.executable}", "{server}"]
            health = "/"

            [[gateway]]
            listen = "127.0.0.1:{port}"
            routes = [ {{ host = "shop.example", to = "web" }} ]
            tls = [ {{ cert = "certs/shop.pem", key = "certs/shop.key" }} ]
            http_redirect = "127.0.0.1:{redirect}"
            """
        )
    )
    up_detached(cluster, str(config))
    url = ("--cacert", str(bundle), "--resolve", f"shop.example:{port}:127.0.0.1", f"https://shop.example:{port}/")
    wait_for(lambda: curl("--http2", *url).stdout.startswith("hello from web"), 30, "the gateway serving HTTPS")
    assert curl("--http2", *url).stdout == f"hello from web caller={cluster.spiffe('gateway')}\n"
    moved = curl("-D", "-", "-o", "/dev/null", "-H", "Host: shop.example", f"http://127.0.0.1:{redirect}/")
    assert f"Location: https://shop.example:{port}/" in moved.stdout, moved.stdout

    check = cluster.mesh("check", "-o", "json", timeout=60)
    report = json.loads(check.stdout)
    (gateway,) = [c for c in report["categories"] if c["name"] == "gateway"]
    (line,) = gateway["checks"]
    assert line["status"] == "warn", line
    assert line["message"].startswith(f"gateway[0].tls[0]: the certificate for shop.example ({tmp_path / 'certs' / 'shop.pem'}) expires in 9d")

    down = cluster.mesh("down", timeout=60)
    assert down.returncode == 0, down.stderr
    wait_for(lambda: processes_of(cluster.home) == [], 10, "no process left")


# -- the front door's hardening, over TLS ---------------------------------------------------------


def tls_socket(edge: Edge, alpn: list[str]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(edge.bundle))
    context.set_alpn_protocols(alpn)
    sock = socket.create_connection(("127.0.0.1", edge.gateway.listen), timeout=20)
    return context.wrap_socket(sock, server_hostname="shop.example")


def test_rapid_reset_over_tls_ends_in_enhance_your_calm(edge: Edge) -> None:
    from hyperframe import frame as hyperframe_frame

    from tests.integration.test_h2_hardening import RawClient, _ended, _goaway

    sock = tls_socket(edge, ["h2"])
    assert sock.selected_alpn_protocol() == "h2"
    attacker = RawClient(sock)
    flood = []
    for i in range(3000):
        reset = hyperframe_frame.RstStreamFrame(2 * i + 1)
        reset.error_code = 8
        flood += [attacker.headers(2 * i + 1, False), reset]
    attacker.send(flood)
    frames, _ = attacker.read(_ended, timeout=15)
    sock.close()
    goaway = _goaway(frames)
    assert goaway is not None and goaway.error_code == 11, frames[-3:]  # ENHANCE_YOUR_CALM
    assert (goaway.last_stream_id + 1) // 2 <= 400
    assert https(edge, "shop.example", "/", "--http2").stdout == "hello from shop\n"  # others are served
    assert_clean(edge.gateway.process)


def test_silent_and_slow_tls_clients_meet_the_head_deadline(edge: Edge) -> None:
    """A client that never says hello, and one that dribbles a head after its handshake: both are cut
    within the head deadline (10 s, a budget that includes the handshake), the second with a 408."""
    results: dict[str, object] = {}

    def silent() -> None:
        with socket.create_connection(("127.0.0.1", edge.gateway.listen), timeout=30) as sock:
            started = time.monotonic()
            results["silent"] = (sock.recv(100), time.monotonic() - started)

    def slow() -> None:
        sock = tls_socket(edge, ["http/1.1"])
        started = time.monotonic()
        try:
            for piece in (b"GET / HTTP/1.1\r\n", b"Host: shop.example\r\n", b"X-Slow: 1\r\n"):
                sock.sendall(piece)
                time.sleep(1)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError as exc:
            answer = repr(exc).encode()
        results["slow"] = (answer, time.monotonic() - started)
        sock.close()

    threads = [threading.Thread(target=silent), threading.Thread(target=slow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    silent_answer, silent_took = results["silent"]  # type: ignore[misc]
    slow_answer, slow_took = results["slow"]  # type: ignore[misc]
    assert silent_answer == b"" and 8 < silent_took < 15, results
    assert slow_answer.startswith(b"HTTP/1.1 408 "), slow_answer  # type: ignore[union-attr]
    assert b"x-mesh-error: head-timeout" in slow_answer and 8 < slow_took < 15, results  # type: ignore[operator]
    assert metric(edge.gateway, "tls_handshake_failures_total", direction="edge", reason="timeout") >= 1  # type: ignore[arg-type]


def test_gateway_workers_share_the_tls_and_redirect_listeners(edge: Edge) -> None:
    """`mesh gateway --workers 2` with TLS: both workers serve the one HTTPS listener and the one
    redirect listener (SO_REUSEPORT); each connection is one worker's, and each worker counts its own."""
    cert, key = edge.certs["shop"]
    argv = [sys.executable, "-m", "mesh", "gateway", "--name", "gateway-workers", "--listen", "127.0.0.1:0", "--no-zeroconf"]
    process = edge.cluster.spawn("gateway-workers", [
        *argv, "--endpoints", str(edge.endpoints), "--route", "shop.example=shop",
        "--tls-cert", str(cert), "--tls-key", str(key), "--http-redirect", "127.0.0.1:0", "--workers", "2",
    ])  # fmt: skip
    deadline = time.monotonic() + 30
    while len(ready := list(READY.finditer(process.log()))) < 2:
        assert time.monotonic() < deadline and process.popen.poll() is None, process.log()
        time.sleep(0.05)
    assert len({m.group("listen") for m in ready}) == 1 and len({m.group("redirect") for m in ready}) == 1, ready
    workers = [Gateway(process, port_of(m.group("admin")), port_of(m.group("listen")), port_of(m.group("redirect"))) for m in ready]
    listen, redirect = workers[0].listen, workers[0].redirect
    for _ in range(30):  # a connection each: the kernel picks the worker
        answer = https(edge, "shop.example", port=listen)
        assert answer.stdout == "hello from shop\n", answer.stderr
    served = [metric(worker, "response_total") for worker in workers]  # type: ignore[arg-type]
    assert sum(served) >= 30 and all(served), served
    moved = curl("-D", "-", "-o", "/dev/null", "-H", "Host: shop.example", f"http://127.0.0.1:{redirect}/cart")
    assert f"Location: https://shop.example:{listen}/cart" in moved.stdout, moved.stdout
    assert process.terminate() == 0
    assert_clean(process)
