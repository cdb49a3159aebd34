"""mTLS contexts and peer identity.

Both sides: TLS 1.3 only, a certificate required from the peer, the chain
verified by OpenSSL against the bundle (roots only), X509 strict mode. No
hostname check — mesh certificates carry only a URI SAN — so after the
handshake the caller checks the peer's SPIFFE id with ``check_peer_identity``.

Private keys never touch a disk: ``SSLContext.load_cert_chain`` wants paths, so
on Linux the PEM goes into an anonymous memory file (``memfd_create``) opened
through ``/proc/self/fd/N``; elsewhere into a 0600 file in a 0700 temporary
directory that is deleted as soon as OpenSSL has read it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mesh.errors import IdentityError
from mesh.identity._credentials import IssuedCredentials
from mesh.identity._der import read_der_certificate
from mesh.identity._facts import spiffe_id_of
from mesh.identity._revocation import CertificateRevoked, RevocationList, serial_text
from mesh.identity._spiffe import SpiffeId

DEFAULT_ALPN: tuple[str, ...] = ("http/1.1",)


class PeerCertSource(Protocol):
    """``ssl.SSLObject``, ``ssl.SSLSocket`` and ``trio.SSLStream`` all qualify."""

    def getpeercert(self, binary_form: bool = ...) -> Any: ...


# ------------------------------------------------------------ key loading


def _memfd_supported() -> bool:
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


@contextlib.contextmanager
def _memory_files(*contents: bytes) -> Iterator[list[str]]:
    """Paths that read back ``contents`` and vanish when the block ends."""
    fds: list[int] = []
    try:
        for data in contents:
            fd = os.memfd_create("mesh-credential", os.MFD_CLOEXEC)
            fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        yield [f"/proc/self/fd/{fd}" for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def _private_temp_files(*contents: bytes) -> Iterator[list[str]]:
    with tempfile.TemporaryDirectory(prefix="mesh-tls-") as directory:  # mkdtemp: 0700
        paths = []
        for index, data in enumerate(contents):
            path = Path(directory) / f"{index}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            paths.append(str(path))
        yield paths


def load_pem_pair(
    context: ssl.SSLContext,
    chain_pem: bytes,
    key_pem: bytes,
    *,
    what: str,
    hint: str = "the key and certificate must belong together",
) -> None:
    """Load a certificate chain and its key into ``context`` from memory (never a file on disk)."""
    opener = _memory_files if _memfd_supported() else _private_temp_files
    with opener(chain_pem, key_pem) as (chain_path, key_path):
        try:
            context.load_cert_chain(chain_path, key_path)
        except ssl.SSLError as exc:
            raise IdentityError(f"cannot use {what}: {exc.reason or exc}", hint=hint) from None


def _load_chain_and_key(context: ssl.SSLContext, creds: IssuedCredentials) -> None:
    load_pem_pair(
        context,
        creds.cert_chain_pem,
        creds.key_pem,
        what=f"the credentials of {creds.identity}",
        hint="the key and certificate must belong together; issue new credentials",
    )


class MeshContext(ssl.SSLContext):
    """An ``SSLContext`` that knows its holder's trust domain: ``peer_identity`` refuses a
    peer of any other, on every handshake made with it (None: a context without credentials);
    and, when it has one, the holder's list of revoked serials, which it refuses too."""

    trust_domain: str | None = None
    revoked: RevocationList | None = None


@dataclass(frozen=True, slots=True)
class VerifiedPeer:
    """Who the peer of a handshake is, and which certificate it proved it with."""

    identity: SpiffeId
    serial: int


def _verifying_context(protocol: int, bundle_pem: bytes, owner: str, alpn: Sequence[str]) -> MeshContext:
    """TLS 1.3 only, peers verified against ``bundle_pem``; no certificate of our own (yet)."""
    context = MeshContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    # Identities are URIs checked by us after the handshake, never host names.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        context.load_verify_locations(cadata=bundle_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise IdentityError(
            f"the trust bundle of {owner} is not valid PEM",
            hint="copy bundle.pem again from MESH_HOME/ca/bundle.pem",
        ) from None
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def _base_context(
    protocol: int, creds: IssuedCredentials, alpn: Sequence[str], revoked: RevocationList | None
) -> MeshContext:
    context = _verifying_context(protocol, creds.bundle_pem, str(creds.identity), alpn)
    _load_chain_and_key(context, creds)
    context.trust_domain = creds.identity.trust_domain
    context.revoked = revoked
    return context


def bundle_client_context(bundle_pem: bytes, alpn: Sequence[str]) -> ssl.SSLContext:
    """A client context that verifies the server against ``bundle_pem`` and presents no
    certificate: for a holder that has none yet (it asks for one with a join token)."""
    return _verifying_context(ssl.PROTOCOL_TLS_CLIENT, bundle_pem, "this mesh", alpn)


def server_context(
    creds: IssuedCredentials, alpn: Sequence[str] = DEFAULT_ALPN, revoked: RevocationList | None = None
) -> MeshContext:
    """A context for accepting mTLS: the client must present a certificate from our bundle
    (and, with ``revoked``, one whose serial is not in it)."""
    return _base_context(ssl.PROTOCOL_TLS_SERVER, creds, alpn, revoked)


def client_context(
    creds: IssuedCredentials, alpn: Sequence[str] = DEFAULT_ALPN, revoked: RevocationList | None = None
) -> MeshContext:
    """A context for connecting with mTLS: we present ``creds``; the server must present ours."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, creds, alpn, revoked)


# ------------------------------------------------------------ peer identity


def verified_peer(ssl_object: PeerCertSource) -> VerifiedPeer:
    """The SPIFFE id and serial of the verified peer certificate (IdentityError if there is none).

    With a context made by ``server_context``/``client_context`` the id must be of
    the holder's own trust domain: the chain proves who signed the certificate,
    not that the signer's mesh is ours (a leaf for ``spiffe://other.test/...``
    signed by our issuer verifies too). With a ``RevocationList`` in the context,
    a revoked serial raises ``CertificateRevoked``.
    """
    context = getattr(ssl_object, "context", None)
    # CERT_OPTIONAL still verifies a certificate the peer sends (a bad one aborts
    # the handshake); only CERT_NONE leaves it unchecked.
    if isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_NONE:
        # An unverified certificate proves nothing; refuse rather than trust it.
        raise IdentityError(
            "the peer certificate was not verified (verify_mode is CERT_NONE)",
            hint="build the context with mesh.identity.server_context/client_context",
        )
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise IdentityError("the peer presented no certificate", hint="the peer must use mesh mTLS")
    try:
        certificate = read_der_certificate(der)
    except ValueError:  # OpenSSL verified it: only a certificate we cannot read gets here
        raise IdentityError("the peer certificate cannot be read", hint="the peer must use mesh mTLS") from None
    identity = spiffe_id_of(certificate)
    ours = getattr(context, "trust_domain", None)
    if ours is not None and identity.trust_domain != ours:
        raise IdentityError(
            f"the peer presented {identity}, which is not of this mesh's trust domain {ours}",
            hint="only identities of the mesh's own trust domain are accepted, whoever signed them",
        )
    serial = certificate.serial_number
    revoked = getattr(context, "revoked", None)
    if revoked is not None and serial in revoked.serials:
        raise CertificateRevoked(
            f"the peer presented {identity} with certificate {serial_text(serial)}, which an operator revoked",
            hint="`mesh ca issued` shows the revocation; the peer needs a new certificate (restart it)",
        )
    return VerifiedPeer(identity, serial)


def peer_identity(ssl_object: PeerCertSource) -> SpiffeId:
    """The SPIFFE id of the verified peer certificate (see ``verified_peer``)."""
    return verified_peer(ssl_object).identity


def check_peer(ssl_object: PeerCertSource, expected: SpiffeId | str) -> VerifiedPeer:
    """The verified peer if its id is ``expected``; IdentityError naming both otherwise."""
    wanted = expected if isinstance(expected, SpiffeId) else SpiffeId.parse(expected)
    peer = verified_peer(ssl_object)
    if peer.identity != wanted:
        raise IdentityError(
            f"peer presented {peer.identity}, expected {wanted}",
            hint="discovery points at the wrong endpoint, or the peer runs with another identity",
        )
    return peer


def check_peer_identity(ssl_object: PeerCertSource, expected: SpiffeId | str) -> SpiffeId:
    """The peer's SPIFFE id if it is ``expected``; IdentityError naming both otherwise."""
    return check_peer(ssl_object, expected).identity


# ------------------------------------------------------------ failure reasons

_FOREIGN = "the peer certificate was not issued by this mesh's CA (another CA or trust domain, or a stale bundle)"
# OpenSSL X509_V_ERR_* codes we explain in mesh's words.
_VERIFY_REASONS = {
    2: _FOREIGN,  # unable to get issuer certificate
    7: "the peer certificate's signature does not verify (a CA re-created with --force?)",
    9: "the peer certificate is not yet valid (check the clocks)",
    10: "the peer certificate has expired",
    18: "the peer certificate is self-signed and not one of this mesh's",
    19: "the peer certificate chains to a root that is not in this mesh's bundle",
    20: _FOREIGN,  # unable to get local issuer certificate
    21: _FOREIGN,  # unable to verify the first certificate
}

# OpenSSL error reasons (including alerts sent by the peer about our certificate).
_SSL_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer presented no client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate and we sent none",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer refused our certificate: it has expired",
    "TLSV1_ALERT_UNKNOWN_CA": ("the peer does not trust our certificate's CA (another mesh, or a stale bundle)"),
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "TLS version mismatch: mesh speaks TLS 1.3 only",
    "UNSUPPORTED_PROTOCOL": "TLS version mismatch: mesh speaks TLS 1.3 only",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (plain text on an mTLS port?)",
    "NO_APPLICATION_PROTOCOL": "no common ALPN protocol with the peer",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "no common ALPN protocol with the peer",
}


def handshake_failure_reason(exc: BaseException) -> str:
    """One line saying why an mTLS handshake (or the identity check after it) failed.

    Follows ``__cause__``/``__context__`` so wrappers such as
    ``trio.BrokenResourceError`` are explained by the ssl error inside.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, IdentityError):
            return current.message
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = _VERIFY_REASONS.get(current.verify_code)
            return reason or f"the peer certificate was refused: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            reason = _SSL_REASONS.get(current.reason or "")
            if reason:
                return reason
            if isinstance(current, ssl.SSLEOFError):
                return "the peer closed the connection during the TLS handshake"
            return f"OpenSSL said {current.reason or current}"
        current = current.__cause__ or current.__context__
    return f"connection failed during the TLS handshake: {exc}"
