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
        from mesh.net import ApiClient
        from mesh.identity import CertificateAuthority, client_context, generate_key, make_csr, service_identity
        from mesh.discovery import controller_from_home

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
