"""A leaf signed by this mesh's own issuer for another trust domain is refused on every
handshake: inbound, outbound and at the controller (DESIGN.md section 4)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trio

from mesh.home import MeshHome
from tests.integration.conftest import Cluster, Pair

pytestmark = pytest.mark.timeout(90)

FOREIGN_ADMIN = "spiffe://other.test/svc/admin"


def forge(home: Path, spiffe_id: str, out: Path) -> tuple[Path, Path, Path]:
    """Credentials for ``spiffe_id`` signed with the issuer of ``home``'s CA: what an attacker
    who can make that CA sign anything (or a second mesh sharing the CA) would hold."""
    from mesh.identity import CertificateAuthority, SpiffeId, cert_to_pem, generate_key, key_to_pem
    from mesh.identity._certs import make_leaf

    ca = CertificateAuthority.load(MeshHome(home))
    key = generate_key()
    leaf = make_leaf(key.public_key(), SpiffeId.parse(spiffe_id), ca.issuer_cert, ca._issuer_key)
    out.mkdir(parents=True)
    paths = out / "cert.pem", out / "key.pem", out / "bundle.pem"
    paths[0].write_bytes(cert_to_pem(leaf) + cert_to_pem(ca.issuer_cert))
    paths[1].write_bytes(key_to_pem(key))
    paths[1].chmod(0o600)
    paths[2].write_bytes(ca.bundle_pem)
    return paths


def client_context(creds: tuple[Path, Path, Path], alpn: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(creds[2])  # the mesh's real server is verified
    context.load_cert_chain(creds[0], creds[1])
    context.set_alpn_protocols([alpn])
    return context


def exchange(port: int, context: ssl.SSLContext, request: bytes) -> bytes:
    """Send ``request`` over TLS and read until the server closes; b"" when refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                tls.sendall(request)
                chunks = []
                while chunk := tls.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


def tls_failures(admin_url: str, **labels: str) -> float:
    from mesh.telemetry import parse_prometheus_text

    text = requests.get(f"{admin_url}/metrics", timeout=5).text
    return sum(
        s.value
        for s in parse_prometheus_text(text)
        if s.name == "tls_handshake_failures_total" and all(s.labels_dict.get(k) == v for k, v in labels.items())
    )


def test_inbound_refuses_a_foreign_trust_domain_signed_by_our_issuer(pair: Pair, tmp_path: Path) -> None:
    """Before: the app answered, and was told its caller was spiffe://other.test/svc/admin."""
    creds = forge(pair.cluster.home, FOREIGN_ADMIN, tmp_path / "forged")
    request = b"GET /headers HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
    assert exchange(pair.web.inbound, client_context(creds, "http/1.1"), request) == b""
    pair.web.process.wait_for(r"inbound: refused a connection from 127\.0\.0\.1:\d+: .*other\.test.*trust domain")
    # Opaque TCP (ALPN mesh-tcp) is no way around it.
    assert exchange(pair.web.inbound, client_context(creds, "mesh-tcp"), request) == b""
    assert tls_failures(pair.web.admin_url, direction="inbound", reason="trust-domain") == 2
    # A caller of this mesh is served as before, and seen as itself.
    seen = requests.get("http://web/headers", proxies={"http": pair.client.proxy_url}, timeout=10).json()
    assert seen["mesh-client-id"] == pair.cluster.spiffe("client")
    # A proxy handed such a certificate says so at start, rather than being refused by every peer.
    files = ["--cert", str(creds[0]), "--key", str(creds[1]), "--bundle", str(creds[2])]
    started = pair.cluster.mesh("proxy", "--service", "admin", "--app", "127.0.0.1:1", "--no-zeroconf", *files)
    assert started.returncode == 1
    assert f"the certificate is for {FOREIGN_ADMIN}, but {creds[2]} trusts the trust domain" in started.stderr


@pytest.fixture
def forged_server(tmp_path: Path, cluster: Cluster) -> Iterator[int]:
    """A TLS server presenting spiffe://other.test/svc/web (signed by the mesh's issuer) that
    answers every request with 200 "forged"; its port."""
    cluster.init_ca()
    cert, key, bundle = forge(cluster.home, "spiffe://other.test/svc/web", tmp_path / "forged-web")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(bundle)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nforged")
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_outbound_refuses_a_peer_of_a_foreign_trust_domain(cluster: Cluster, forged_server: int) -> None:
    """An endpoints file that names a foreign identity: before, the proxy took the forged peer
    for web and handed its answer to the app."""
    endpoints = cluster.tmp / "endpoints.toml"
    endpoints.write_text(
        f'[[endpoint]]\nservice = "web"\naddress = "127.0.0.1:{forged_server}"\nidentity = "spiffe://other.test/svc/web"\n'
    )
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=["--no-zeroconf"])
    response = requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=10)
    assert response.status_code == 502 and response.headers.get("x-mesh-error"), (response.status_code, response.text)
    assert "forged" not in response.text
    client.process.wait_for(r"127\.0\.0\.1:\d+.*other\.test.*trust domain")
    assert tls_failures(client.admin_url, direction="outbound", reason="trust-domain") >= 1


def test_controller_refuses_a_foreign_trust_domain_at_the_handshake(cluster: Cluster, tmp_path: Path) -> None:
    """An operator of another trust domain, signed by this mesh's issuer: the controller ends the
    connection after the handshake (before: it served it, answering 403 per request)."""
    from tests.integration.test_control_plane import up

    up(cluster)
    creds = forge(cluster.home, "spiffe://other.test/operator/root", tmp_path / "forged-operator")
    record = json.loads((cluster.home / "controller.json").read_text())
    host, port = record["address"].rsplit(":", 1)

    async def ask() -> str:
        from mesh.errors import ControllerError
        from mesh.identity import client_context as mesh_client_context, load_credentials
        from mesh.net import ApiClient

        context = mesh_client_context(load_credentials(*creds), alpn=("h2",))
        try:
            client = await ApiClient.connect(host, int(port), context, expected_identity=record["identity"])
            try:
                response = await client.request("GET", "/v1/bundle")
            finally:
                await client.aclose()
        except ControllerError as exc:
            return f"refused: {exc}"
        return f"answered {response.status}"

    assert trio.run(ask).startswith("refused"), "the controller served a foreign trust domain"
    controller = next(p for p in cluster.processes if p.name == "mesh")  # adopted by up()
    controller.wait_for(r"refused a connection from 127\.0\.0\.1:\d+: .*other\.test/operator/root.*trust domain", 5)
