"""A workload's credentials: its certificate chain, its private key, the trust bundle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mesh.errors import IdentityError
from mesh.home import atomic_write
from mesh.identity._der import CertificateFacts, read_pem_certificates
from mesh.identity._facts import spiffe_id_of
from mesh.identity._files import read_file, warn_if_loose
from mesh.identity._spiffe import SpiffeId

if TYPE_CHECKING:
    from cryptography import x509

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
BUNDLE_FILE = "bundle.pem"


@dataclass(frozen=True)
class CredentialPaths:
    cert: Path
    key: Path
    bundle: Path


@dataclass(frozen=True)
class IssuedCredentials:
    """What a workload needs for mTLS. ``cert_chain_pem`` is leaf then issuer."""

    identity: SpiffeId
    cert_chain_pem: bytes
    key_pem: bytes
    bundle_pem: bytes
    not_after: datetime

    def __repr__(self) -> str:  # keep the private key out of logs and tracebacks
        identity, not_after = str(self.identity), self.not_after.isoformat()
        return f"IssuedCredentials(identity={identity!r}, not_after={not_after})"

    @classmethod
    def from_pem(
        cls, cert_chain_pem: bytes, key_pem: bytes, bundle_pem: bytes, identity: SpiffeId | None = None
    ) -> IssuedCredentials:
        """Credentials from PEM already checked (its identity: the leaf's SPIFFE id unless given)."""
        leaf = read_pem_certificates(cert_chain_pem, source="the certificate chain")[0]
        return cls(
            identity=identity if identity is not None else spiffe_id_of(leaf),
            cert_chain_pem=cert_chain_pem,
            key_pem=key_pem,
            bundle_pem=bundle_pem,
            not_after=leaf.not_valid_after_utc,
        )

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf, as cryptography reads it (loads cryptography: a sidecar uses ``leaf_facts``)."""
        from mesh.identity._certs import load_certificates

        return load_certificates(self.cert_chain_pem, source="the certificate chain")[0]

    @property
    def leaf_facts(self) -> CertificateFacts:
        """The leaf's serial, dates and SANs, read without cryptography."""
        return read_pem_certificates(self.cert_chain_pem, source="the certificate chain")[0]

    def write(self, directory: Path) -> CredentialPaths:
        """Write ``cert.pem``, ``key.pem`` (0600) and ``bundle.pem`` into ``directory``.

        A missing directory is created 0700. Each file is replaced atomically
        (temp + rename), so none is ever half-written; the three renames are
        not one transaction, which is why the key comes first and
        ``load_credentials`` checks that key and certificate belong together.
        """
        directory = Path(directory)
        if not directory.exists():
            try:
                directory.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise IdentityError(f"cannot create {directory}: {exc.strerror}") from None
        paths = CredentialPaths(directory / CERT_FILE, directory / KEY_FILE, directory / BUNDLE_FILE)
        atomic_write(paths.key, self.key_pem, mode=0o600)
        atomic_write(paths.cert, self.cert_chain_pem, mode=0o644)
        atomic_write(paths.bundle, self.bundle_pem, mode=0o644)
        return paths


def read_credential_files(cert_path: Path, key_path: Path, bundle_path: Path) -> tuple[bytes, bytes, bytes]:
    """The contents of the three files (errors name the file); a key readable by others only warns."""
    hint = "issue credentials with `mesh ca issue NAME --out DIR`"
    chain_pem = read_file(Path(cert_path), "certificate", hint=hint)
    key_pem = read_file(Path(key_path), "private key", hint=hint)
    bundle_pem = read_file(Path(bundle_path), "trust bundle", hint=hint)
    warn_if_loose(Path(key_path))
    return chain_pem, key_pem, bundle_pem


def load_credentials(cert_path: Path, key_path: Path, bundle_path: Path) -> IssuedCredentials:
    """Read and check credentials written by ``IssuedCredentials.write`` or ``mesh ca issue``.

    Checked: every file parses, the key is P-256 and matches the leaf, the leaf
    carries exactly one SPIFFE id. A key readable by others only warns.
    """
    paths = Path(cert_path), Path(key_path), Path(bundle_path)
    return check_credentials(*paths, *read_credential_files(*paths))


def check_credentials(
    cert_path: Path, key_path: Path, bundle_path: Path, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes
) -> IssuedCredentials:
    """``load_credentials``'s checks on the files' contents (errors name the files). Uses cryptography:
    a sidecar runs it in its identity helper process (mesh/identity/_helper.py)."""
    from mesh.identity._certs import key_matches_cert, load_certificates, load_key

    chain = load_certificates(chain_pem, source=str(cert_path))
    load_certificates(bundle_pem, source=str(bundle_path))
    key = load_key(key_pem, str(key_path))
    leaf = chain[0]
    if not key_matches_cert(key, leaf):
        raise IdentityError(
            f"private key {key_path} does not belong to the certificate {cert_path}",
            hint="keep cert.pem and key.pem from the same `mesh ca issue`",
        )
    return IssuedCredentials(
        identity=spiffe_id_of(leaf),
        cert_chain_pem=chain_pem,
        key_pem=key_pem,
        bundle_pem=bundle_pem,
        not_after=leaf.not_valid_after_utc,
    )
