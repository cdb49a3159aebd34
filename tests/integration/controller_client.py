"""Talk to a running controller the way a misbehaving proxy would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from mesh.home import MeshHome


def renew_as(home_path: Path, holder: str, asks_for: str, extra: dict[str, Any] | None = None) -> tuple[int, Any]:
    """With a valid certificate for ``holder``, ask the controller to sign one for ``asks_for``
    (``extra``: more fields of the request, such as ``ttl_seconds``)."""

    async def main() -> tuple[int, Any]:
        from mesh.discovery import controller_from_home
        from mesh.identity import CertificateAuthority, client_context, generate_key, make_csr, service_identity
        from mesh.net import ApiClient

        home = MeshHome(home_path)
        ca = CertificateAuthority.load(home)
        creds = ca.issue(service_identity(ca.trust_domain, holder))
        controller = controller_from_home(home)
        assert controller is not None
        client = await ApiClient.connect(
            controller.host, controller.port, client_context(creds, alpn=("h2",)), controller.identity
        )
        try:
            csr = make_csr(generate_key(), service_identity(ca.trust_domain, asks_for)).decode()
            body = {"service": asks_for, "csr": csr, **(extra or {})}
            response = await client.request("POST", "/v1/certificates", body)
        finally:
            await client.aclose()
        return response.status, response.body

    return trio.run(main)



def signed_by_controller(home_path: Path, service: str) -> Any:
    """Credentials for ``service`` signed by the running controller with the join token (as a new
    proxy gets them): a key the test holds, as a thief would."""

    async def main() -> Any:
        from mesh.discovery import controller_from_home
        from mesh.proxy._control import request_certificate

        controller = controller_from_home(MeshHome(home_path))
        assert controller is not None
        token = (home_path / "join-token").read_text().strip()
        return await request_certificate(controller, service, token=token, current=None)

    return trio.run(main)



class MtlsConnection:
    """One keep-alive mTLS connection to a proxy's inbound port with ``creds`` (a caller's view)."""

    def __init__(self, creds: Any, port: int) -> None:
        import socket

        from mesh.identity import client_context

        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.tls = client_context(creds, alpn=("http/1.1",)).wrap_socket(raw)

    def get(self) -> str:
        """The status line of ``GET /``, or how the connection ended ("closed…")."""
        try:
            self.tls.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            answer = self.tls.recv(65536)
        except OSError as exc:  # ssl.SSLError is an OSError
            return f"closed: {exc}"
        return answer.split(b"\r\n", 1)[0].decode() if answer else "closed"

    def ended(self, timeout: float) -> bool:
        """Whether the peer ends the connection within ``timeout`` seconds, unasked."""
        import time

        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.tls.settimeout(left)
                if self.tls.recv(65536) == b"":  # else the rest of the last answer: read on
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
        return False

    def close(self) -> None:
        self.tls.close()


def mtls_request(creds: Any, port: int) -> str:
    """A GET on a new mTLS connection: its status line, or how the connection ended."""
    try:
        connection = MtlsConnection(creds, port)
    except OSError as exc:
        return f"closed: {exc}"
    try:
        return connection.get()
    finally:
        connection.close()
