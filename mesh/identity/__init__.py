"""Identity: the CA (root, issuer, leaf), CSR signing, SPIFFE ids, mTLS contexts, peer identity.

The proxy and the controller build on exactly the names exported here; see
docs/security.md for the model and the decisions behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.identity._credentials import (
    CredentialPaths,
    IssuedCredentials,
    check_credentials,
    load_credentials,
    read_credential_files,
)
from mesh.identity._der import CertificateFacts, read_pem_certificates
from mesh.identity._facts import (
    CLOCK_SKEW,
    DEFAULT_LEAF_TTL,
    ISSUER_LIFETIME,
    MIN_LEAF_TTL,
    RENEW_FRACTION,
    RENEW_MIN_INTERVAL,
    ROOT_LIFETIME,
    fingerprint,
    iso_utc,
    mesh_id,
    mesh_ids,
    renew_at,
    spiffe_id_of,
    trust_domain_of,
    trust_domains_of,
)
from mesh.identity._files import InsecurePermissionsWarning
from mesh.identity._helper import HELPER_COMMAND, serve_helper
from mesh.identity._revocation import CertificateRevoked, RevocationList, parse_serial, serial_text, serials_from
from mesh.identity._server_certs import EDGE_ALPN, ServerCertificate, edge_server_context, read_server_certificate
from mesh.identity._spiffe import (
    CONTROLLER_SERVICE,
    DEFAULT_TRUST_DOMAIN,
    SpiffeId,
    host_identity,
    host_name_from,
    operator_identity,
    service_identity,
    validate_name,
    validate_trust_domain,
)
from mesh.identity._tls import (
    VerifiedPeer,
    bundle_client_context,
    check_peer,
    check_peer_identity,
    client_context,
    handshake_failure_reason,
    peer_identity,
    server_context,
    verified_peer,
)

if TYPE_CHECKING:
    from mesh.identity._ca import CertificateAuthority
    from mesh.identity._certs import (
        cert_to_pem,
        generate_key,
        key_to_pem,
        load_certificate,
        load_certificate_file,
        load_certificates,
        make_csr,
    )
    from mesh.identity._inspect import describe_certificate, human_duration, parse_fingerprint, verify_chain

# These need the cryptography package (~9 MB): it loads on first use of one of them. A running
# sidecar uses none (its keys and CSRs are made by a helper process: mesh/identity/_helper.py).
_CRYPTOGRAPHY_NAMES = {
    "CertificateAuthority": "_ca",
    "cert_to_pem": "_certs",
    "generate_key": "_certs",
    "key_to_pem": "_certs",
    "load_certificate": "_certs",
    "load_certificate_file": "_certs",
    "load_certificates": "_certs",
    "make_csr": "_certs",
    "describe_certificate": "_inspect",
    "human_duration": "_inspect",
    "parse_fingerprint": "_inspect",
    "verify_chain": "_inspect",
}


def __getattr__(name: str) -> Any:
    module = _CRYPTOGRAPHY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CLOCK_SKEW",
    "EDGE_ALPN",
    "HELPER_COMMAND",
    "CONTROLLER_SERVICE",
    "DEFAULT_LEAF_TTL",
    "DEFAULT_TRUST_DOMAIN",
    "ISSUER_LIFETIME",
    "MIN_LEAF_TTL",
    "RENEW_FRACTION",
    "RENEW_MIN_INTERVAL",
    "ROOT_LIFETIME",
    "CertificateAuthority",
    "CertificateFacts",
    "CertificateRevoked",
    "CredentialPaths",
    "InsecurePermissionsWarning",
    "RevocationList",
    "VerifiedPeer",
    "IssuedCredentials",
    "ServerCertificate",
    "SpiffeId",
    "cert_to_pem",
    "bundle_client_context",
    "check_credentials",
    "check_peer",
    "check_peer_identity",
    "client_context",
    "describe_certificate",
    "edge_server_context",
    "fingerprint",
    "generate_key",
    "handshake_failure_reason",
    "host_identity",
    "host_name_from",
    "human_duration",
    "iso_utc",
    "key_to_pem",
    "load_certificate",
    "load_certificate_file",
    "load_certificates",
    "load_credentials",
    "make_csr",
    "mesh_id",
    "mesh_ids",
    "operator_identity",
    "parse_fingerprint",
    "parse_serial",
    "peer_identity",
    "read_credential_files",
    "read_pem_certificates",
    "read_server_certificate",
    "renew_at",
    "serial_text",
    "serials_from",
    "serve_helper",
    "server_context",
    "service_identity",
    "spiffe_id_of",
    "trust_domain_of",
    "trust_domains_of",
    "validate_name",
    "validate_trust_domain",
    "verified_peer",
    "verify_chain",
]
