"""Joining a mesh from another host: fetch the trust bundle, pin it by fingerprint."""

from __future__ import annotations

import json
import ssl
from typing import Any

from mesh.errors import ControllerError
from mesh.home import MeshHome, atomic_write


def _unverified_context() -> ssl.SSLContext:
    # Only to fetch the public bundle; it is trusted after its fingerprint matches.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


async def join_mesh(home: MeshHome, address: str, token: str, ca_fingerprint: str) -> dict[str, Any]:
    from mesh.net import ApiClient, bootstrap_client_context
    from mesh.discovery import parse_address
    from mesh.identity import fingerprint, load_certificates, parse_fingerprint

    host, port = parse_address(address)
    wanted = parse_fingerprint(ca_fingerprint)
    client = await ApiClient.connect(host, port, _unverified_context())
    try:
        response = await client.request("GET", "/v1/bundle")
    finally:
        await client.aclose()
    if response.status != 200:
        raise ControllerError(f"the controller at {address} did not give its trust bundle ({response.status})")
    bundle = response.body["bundle"].encode()
    trust_domain = response.body["trust_domain"]
    anchors = load_certificates(bundle, source="the controller's bundle")
    if not any(fingerprint(cert) == wanted for cert in anchors):
        raise ControllerError(
            f"the trust anchor at {address} does not have fingerprint {wanted}",
            hint="check the fingerprint `mesh up` printed; someone may be in the middle",
        )
    identity = f"spiffe://{trust_domain}/svc/mesh-controller"
    # Now with verification: the controller must prove it holds a certificate of this bundle.
    verified = await ApiClient.connect(host, port, bootstrap_client_context(bundle), expected_identity=identity)
    await verified.aclose()
    home.ensure_dir(home.root)
    home.ensure_dir(home.ca_dir)
    atomic_write(home.bundle, bundle, mode=0o644)
    atomic_write(home.join_token, token.strip() + "\n", mode=0o600)
    record = {"address": f"{host}:{port}", "trust_domain": trust_domain, "bundle": "ca/bundle.pem", "identity": identity}
    atomic_write(home.controller_json, json.dumps(record, indent=2) + "\n", mode=0o644)
    return {
        "controller": record["address"],
        "trust_domain": trust_domain,
        "ca_fingerprint": wanted,
        "bundle": str(home.bundle),
        "home": str(home.root),
    }
