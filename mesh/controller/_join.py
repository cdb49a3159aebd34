"""Joining a mesh from another host: pin the trust bundle by fingerprint, get this host's identity.

`mesh join HOST:PORT --token T --ca-fingerprint F [--advertise ADDR] [--name NAME] [--operator GRANT]`:

1. fetch the controller's bundle (unverified), keep it only if an anchor has fingerprint F;
2. check that the controller proves an identity of that bundle;
3. ask it for this host's identity (``spiffe://TD/host/NAME``, with the join token; the key
   is made here and never leaves), and with ``--operator`` for an operator identity too (with
   the one-time grant an operator made: `mesh operator grant`);
4. only then write MESH_HOME: ``ca/bundle.pem``, ``join-token``, ``controller.json``,
   ``host/`` (and ``operator/``), and ``host.json``: role ``joined`` and this host's own
   address, the one it reaches the controller from (or ``--advertise``), which `mesh inject`,
   `mesh proxy` and `mesh gateway` then listen on and advertise by default.

A wrong token or grant fails at step 3, before anything is written.
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

from mesh import __version__
from mesh.errors import ControllerError
from mesh.home import HostRecord, MeshHome, atomic_write, write_host_record


def _unverified_context() -> ssl.SSLContext:
    # Only to fetch the public bundle; it is trusted after its fingerprint matches.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


def source_address(host: str, port: int) -> str | None:
    """The address of this host that the kernel picks to reach ``host:port`` (nothing is sent:
    a UDP socket is only connected), or None when that is loopback (the controller is here)."""
    import ipaddress

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def refuse_a_controllers_home(home: MeshHome) -> None:
    if home.has_ca():
        raise ControllerError(
            f"{home.root} holds a CA (it is a controller's MESH_HOME): joining another mesh here would mix them",
            hint="join from another host, or give this one another home: `mesh --home DIR join …`",
        )


async def join_mesh(
    home: MeshHome,
    address: str,
    token: str,
    ca_fingerprint: str,
    *,
    name: str | None = None,
    advertise: str | None = None,
    operator_grant: str | None = None,
) -> dict[str, Any]:
    from mesh.discovery import parse_address
    from mesh.identity import fingerprint, host_identity, host_name_from, load_certificates, parse_fingerprint
    from mesh.net import ApiClient, bootstrap_client_context

    refuse_a_controllers_home(home)
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
    own_address = advertise or source_address(host, port)
    host_name = name or host_name_from(socket.gethostname())
    host_id = host_identity(trust_domain, host_name)  # a bad --name fails here, before any request
    # Now with verification: the controller must prove it holds a certificate of this bundle.
    verified = await ApiClient.connect(host, port, bootstrap_client_context(bundle), expected_identity=identity)
    try:
        common = {"token": token.strip(), "address": own_address, "mesh_version": __version__}
        host_creds = await _identity(verified, host_id, bundle, {**common, "kind": "host", "name": host_name})
        operator_creds = None
        if operator_grant is not None:
            from mesh.identity import operator_identity

            # The name is the grant's; the one asked for here is a courtesy the controller ignores.
            operator_creds = await _identity(
                verified,
                operator_identity(trust_domain, host_name),
                bundle,
                {**common, "kind": "operator", "grant": operator_grant.strip()},
            )
    finally:
        await verified.aclose()
    home.ensure_dir(home.root)
    home.ensure_dir(home.ca_dir)
    atomic_write(home.bundle, bundle, mode=0o644)
    atomic_write(home.join_token, token.strip() + "\n", mode=0o600)
    record = {
        "address": f"{host}:{port}",
        "trust_domain": trust_domain,
        "bundle": "ca/bundle.pem",
        "identity": identity,
    }
    atomic_write(home.controller_json, json.dumps(record, indent=2) + "\n", mode=0o644)
    home.ensure_dir(home.host_dir)
    host_creds.write(home.host_dir)
    if operator_creds is not None:
        home.ensure_dir(home.operator_dir)
        operator_creds.write(home.operator_dir)
    bind = "0.0.0.0" if advertise is not None else own_address
    write_host_record(
        home,
        HostRecord(
            role="joined",
            address=own_address,
            bind=bind,
            name=host_name,
            controller=record["address"],
            operator=operator_creds is not None,
        ),
    )
    return {
        "controller": record["address"],
        "trust_domain": trust_domain,
        "ca_fingerprint": wanted,
        "bundle": str(home.bundle),
        "home": str(home.root),
        "host": host_name,
        "address": own_address,
        "identity": str(host_creds.identity),
        "operator": str(operator_creds.identity) if operator_creds is not None else None,
    }


async def _identity(client: Any, identity: Any, bundle: bytes, body: dict[str, Any]) -> Any:
    """A key made here, a CSR, the certificate the controller signs for it."""
    from mesh.identity import IssuedCredentials, generate_key, key_to_pem, load_certificates, make_csr, spiffe_id_of

    key = generate_key()
    response = await client.request("POST", "/v1/certificates", {**body, "csr": make_csr(key, identity).decode()})
    if response.status != 200:
        answer = response.body if isinstance(response.body, dict) else {"error": str(response.body)}
        raise ControllerError(
            f"the controller refused a certificate for {identity}: {answer.get('error', response.status)}",
            hint=answer.get("hint"),
        )
    chain = response.body["certificate"].encode()
    leaf = load_certificates(chain)[0]
    return IssuedCredentials(
        identity=spiffe_id_of(leaf),
        cert_chain_pem=chain,
        key_pem=key_to_pem(key),
        bundle_pem=response.body.get("bundle", bundle.decode()).encode(),
        not_after=leaf.not_valid_after_utc,
    )
