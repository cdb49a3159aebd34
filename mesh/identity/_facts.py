"""What a certificate says, as every holder of mesh credentials reads it: its SPIFFE id or
trust domain, its fingerprint, when to renew it; and the lifetimes mesh gives certificates.

Light: no cryptography (a running sidecar never loads it; docs/performance.md, Memory).
The functions take a ``CertificateFacts`` (mesh/identity/_der.py) or cryptography's
``x509.Certificate`` (the CA and the CLI hold those), and PEM where it says so.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from mesh.errors import IdentityError
from mesh.identity._der import CertificateFacts, read_pem_certificates
from mesh.identity._spiffe import SpiffeId, parse_trust_domain_uri

if TYPE_CHECKING:
    from cryptography import x509

    AnyCertificate = CertificateFacts | x509.Certificate

ROOT_LIFETIME = timedelta(days=3650)
ISSUER_LIFETIME = timedelta(days=365)
DEFAULT_LEAF_TTL = timedelta(hours=24)
# Certificates start a minute in the past so a peer whose clock is slightly
# behind does not see a brand-new certificate as "not yet valid".
CLOCK_SKEW = timedelta(minutes=1)
# Holders renew at 70 % of the validity actually granted, counted from when they
# got the certificate: early enough to survive a controller outage of about 7 h
# on a 24 h leaf. (Counted from the backdated notBefore, a 15 s leaf was due at
# once and a proxy renewed 1,730 times in 34 s.)
RENEW_FRACTION = 0.7
# Renewals are at least 10 % of a lifetime apart, so that a leaf cut short (at
# the issuer's end, or by clocks that disagree) never turns into a signing loop.
RENEW_MIN_INTERVAL = 0.1
# The shortest leaf the controller signs and `--cert-ttl` accepts: renewal at
# 70 % leaves 18 s for a controller that is briefly away.
MIN_LEAF_TTL = timedelta(seconds=60)


def utcnow() -> datetime:
    return datetime.now(UTC)


def facts_of(cert: AnyCertificate | bytes | str) -> CertificateFacts:
    """``cert`` as CertificateFacts (the first certificate of PEM; cryptography's re-read from DER)."""
    if isinstance(cert, CertificateFacts):
        return cert
    if isinstance(cert, (bytes, str)):
        return read_pem_certificates(cert)[0]
    from cryptography.hazmat.primitives.serialization import Encoding

    from mesh.identity._der import read_der_certificate

    return read_der_certificate(cert.public_bytes(Encoding.DER))


def _spiffe_uris(cert: AnyCertificate) -> tuple[list[str], str]:
    facts = facts_of(cert)
    return [u for u in facts.uri_sans if u.startswith("spiffe://")], facts.subject


def spiffe_id_of(cert: AnyCertificate) -> SpiffeId:
    """The SPIFFE id in a leaf's URI SAN (exactly one, as the SPIFFE spec demands)."""
    uris, subject = _spiffe_uris(cert)
    if not uris:
        raise IdentityError(
            f"certificate {subject!r} carries no SPIFFE id (no spiffe:// URI SAN)",
            hint="use a certificate issued by `mesh ca issue` or the mesh controller",
        )
    if len(uris) > 1:
        raise IdentityError(f"certificate {subject!r} carries {len(uris)} SPIFFE ids, expected one")
    return SpiffeId.parse(uris[0])


def trust_domain_of(root: AnyCertificate) -> str:
    """The trust domain a root names in its URI SAN ``spiffe://<td>``."""
    uris, subject = _spiffe_uris(root)
    if len(uris) != 1:
        raise IdentityError(
            f"root certificate {subject!r} does not name a trust domain (expected one URI SAN spiffe://<trust-domain>)",
            hint="re-create the CA with `mesh ca init --force`",
        )
    return parse_trust_domain_uri(uris[0])


def trust_domains_of(bundle_pem: bytes, *, source: str = "the trust bundle") -> list[str]:
    """The trust domain of every root of a bundle, in order."""
    return [trust_domain_of(root) for root in read_pem_certificates(bundle_pem, source=source)]


FINGERPRINT_PREFIX = "sha256:"
MESH_ID_HEX = 16  # 64 bits of the root's fingerprint: enough to tell meshes on one LAN apart


def fingerprint(cert: AnyCertificate | bytes | str) -> str:
    """``sha256:<64 lowercase hex>`` of the certificate's DER: the one format mesh prints."""
    if isinstance(cert, CertificateFacts):
        return FINGERPRINT_PREFIX + cert.sha256
    if isinstance(cert, (bytes, str)):
        return FINGERPRINT_PREFIX + facts_of(cert).sha256
    from cryptography.hazmat.primitives.serialization import Encoding

    return FINGERPRINT_PREFIX + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def mesh_id(root: AnyCertificate | bytes) -> str:
    """The mesh a trust anchor belongs to, as discovery records carry it (TXT ``mesh``): the first
    16 hex digits of the root's SHA-256 fingerprint. Not a secret, and no proof: the mTLS handshake
    is; it lets a proxy ignore the records of another mesh instead of failing handshakes with it."""
    return fingerprint(root)[len(FINGERPRINT_PREFIX) : len(FINGERPRINT_PREFIX) + MESH_ID_HEX]


def mesh_ids(bundle_pem: bytes) -> tuple[str, ...]:
    """The mesh ids of every anchor of a bundle (more than one during a root rotation), in order."""
    return tuple(mesh_id(cert) for cert in read_pem_certificates(bundle_pem, source="the trust bundle"))


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def renew_at(
    cert: AnyCertificate | bytes | str,
    *,
    received_at: datetime | None = None,
    previous: datetime | None = None,
) -> datetime:
    """When a holder should renew ``cert`` (UTC): 70 % into the validity it was granted.

    The lifetime counts from ``received_at``, when the holder got the certificate
    (by its own clock); when that is unknown, from the issue time mesh's CA
    writes, ``notBefore`` + CLOCK_SKEW. So the renewal is never sooner than 50 %
    of the granted life, whatever the backdating. ``previous``, the holder's last
    renewal: the next one comes at least 10 % of the lifetime (60 s leaves at
    least) after it.
    """
    if isinstance(cert, (bytes, str)):
        cert = facts_of(cert)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    issued = received_at if received_at is not None else start + CLOCK_SKEW
    issued = min(max(issued, start), end)
    lifetime = end - issued
    due = issued + lifetime * RENEW_FRACTION
    if previous is not None:
        due = max(due, previous + max(lifetime, MIN_LEAF_TTL) * RENEW_MIN_INTERVAL)
    return due
