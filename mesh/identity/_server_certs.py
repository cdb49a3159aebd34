"""Certificates an operator gives a gateway for outside clients: not mesh identities.

They come from a public CA or the operator's own, with any key type OpenSSL takes
(RSA, ECDSA, Ed25519), and a chain in the certificate file (leaf first). Both files
are read once into memory and checked there (the key belongs to the leaf, the
dates), and the TLS context is loaded from those same bytes: what was checked is
what is served, even when the files change meanwhile (a certificate being renewed).

Outside clients get TLS 1.2 or 1.3 only, with forward-secret AEAD suites on 1.2
(Mozilla's "intermediate" profile without DHE, which would need DH parameters),
and ALPN ``h2``/``http/1.1``.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mesh.errors import IdentityError
from mesh.identity._der import CertificateFacts, read_pem_certificates
from mesh.identity._facts import fingerprint, iso_utc, utcnow
from mesh.identity._files import read_file
from mesh.identity._tls import load_pem_pair

# TLS 1.2 suites (TLS 1.3 has its own, all good): ECDHE for forward secrecy, AEAD only.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
EDGE_ALPN: tuple[str, ...] = ("h2", "http/1.1")

_UNREADABLE_HINT = "make the file readable by the user the gateway runs as (keys: chmod 600, owned by that user)"


@dataclass(frozen=True)
class ServerCertificate:
    """A certificate/key pair read and checked; ``names`` are the DNS names it serves (lower-case)."""

    cert_path: Path
    key_path: Path
    chain_pem: bytes
    key_pem: bytes
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    fingerprint: str

    @property
    def label(self) -> str:
        """How logs name it: its first DNS name, else its file."""
        return self.names[0] if self.names else str(self.cert_path)

    def validity_problem(self, now: datetime | None = None) -> str | None:
        """Why it cannot be served now (expired, not yet valid); None when it can."""
        now = now or utcnow()
        if now < self.not_before:
            return f"the certificate in {self.cert_path} is not valid before {iso_utc(self.not_before)}"
        if now >= self.not_after:
            return f"the certificate in {self.cert_path} ({self.label}) expired on {iso_utc(self.not_after)}"
        return None


def read_server_certificate(cert_path: Path, key_path: Path) -> ServerCertificate:
    """Read and check a pair; IdentityError saying what is wrong with which file (dates are not checked
    here: ``validity_problem``)."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    chain_pem = read_file(cert_path, "certificate file", unreadable_hint=_UNREADABLE_HINT)
    key_pem = read_file(key_path, "key file", unreadable_hint=_UNREADABLE_HINT)
    leaf = read_pem_certificates(chain_pem, source=str(cert_path))[0]
    _check_key(chain_pem, key_pem, cert_path, key_path)
    return ServerCertificate(
        cert_path=cert_path,
        key_path=key_path,
        chain_pem=chain_pem,
        key_pem=key_pem,
        names=dns_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint=fingerprint(leaf),
    )


_ENCRYPTED_MARKS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def _check_key(chain_pem: bytes, key_pem: bytes, cert_path: Path, key_path: Path) -> None:
    """The key can be read and belongs to the leaf: OpenSSL, which will serve them, loads the pair
    (any key type it takes; X509_check_private_key), so the gateway needs no cryptography."""
    if any(mark in key_pem for mark in _ENCRYPTED_MARKS):  # "Password was not given but private key is encrypted"
        raise IdentityError(
            f"the key in {key_path} is encrypted with a passphrase",
            hint=f"the gateway needs it unencrypted and protected by file permissions: "
            f"openssl pkey -in {key_path} -out KEY.pem && chmod 600 KEY.pem",
        )
    try:
        load_pem_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), chain_pem, key_pem, what=str(cert_path))
    except IdentityError as exc:
        # OpenSSL's reasons, in the message: another key of the leaf's type, or a key of another type.
        if "KEY_VALUES_MISMATCH" in exc.message or "NO_CERTIFICATE_ASSIGNED" in exc.message:
            raise IdentityError(
                f"the key in {key_path} does not belong to the certificate in {cert_path}",
                hint="give each --tls-cert the key it was issued for (the pairs go in the same order)",
            ) from None
        raise IdentityError(
            f"{key_path} holds no PEM private key that can be read",
            hint="give the key file (-----BEGIN PRIVATE KEY----- or RSA/EC PRIVATE KEY) of this certificate",
        ) from None


def dns_names(cert: CertificateFacts) -> tuple[str, ...]:
    """The DNS names of the subjectAltName; the common name only when there are none (RFC 6125)."""
    names = [n.lower().rstrip(".") for n in cert.dns_sans] or [n.lower() for n in cert.common_names]
    return tuple(dict.fromkeys(names))


def edge_server_context(cert: ServerCertificate, alpn: Sequence[str] = EDGE_ALPN) -> ssl.SSLContext:
    """A server context for outside clients: TLS 1.2–1.3, no client certificate, ``cert`` served."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(list(alpn))
    load_pem_pair(context, cert.chain_pem, cert.key_pem, what=f"the certificate in {cert.cert_path}")
    return context
