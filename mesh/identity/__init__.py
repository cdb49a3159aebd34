"""Identity: the CA (root, issuer, leaf), CSR signing, SPIFFE ids, mTLS contexts, peer identity.

The proxy and the controller build on exactly the names exported here; see
docs/security.md for the model and the decisions behind it.
"""

from __future__ import annotations

from mesh.identity._ca import CertificateAuthority
from mesh.identity._certs import (
    CLOCK_SKEW,
    DEFAULT_LEAF_TTL,
    ISSUER_LIFETIME,
    MIN_LEAF_TTL,
    RENEW_FRACTION,
    RENEW_MIN_INTERVAL,
    ROOT_LIFETIME,
    cert_to_pem,
    generate_key,
    key_to_pem,
    load_certificate,
    load_certificate_file,
    load_certificates,
    make_csr,
    renew_at,
    spiffe_id_of,
    trust_domain_of,
)
from mesh.identity._credentials import CredentialPaths, IssuedCredentials, load_credentials
from mesh.identity._files import InsecurePermissionsWarning
from mesh.identity._inspect import (
    describe_certificate,
    fingerprint,
    human_duration,
    iso_utc,
    mesh_id,
    mesh_ids,
    parse_fingerprint,
    verify_chain,
)
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
    bundle_client_context,
    check_peer_identity,
    client_context,
    handshake_failure_reason,
    peer_identity,
    server_context,
)

__all__ = [
    "CLOCK_SKEW",
    "EDGE_ALPN",
    "CONTROLLER_SERVICE",
    "DEFAULT_LEAF_TTL",
    "DEFAULT_TRUST_DOMAIN",
    "ISSUER_LIFETIME",
    "MIN_LEAF_TTL",
    "RENEW_FRACTION",
    "RENEW_MIN_INTERVAL",
    "ROOT_LIFETIME",
    "CertificateAuthority",
    "CredentialPaths",
    "InsecurePermissionsWarning",
    "IssuedCredentials",
    "ServerCertificate",
    "SpiffeId",
    "cert_to_pem",
    "bundle_client_context",
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
    "peer_identity",
    "read_server_certificate",
    "renew_at",
    "server_context",
    "service_identity",
    "spiffe_id_of",
    "trust_domain_of",
    "validate_name",
    "validate_trust_domain",
    "verify_chain",
]
