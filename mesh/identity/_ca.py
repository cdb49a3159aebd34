"""The certificate authority kept in MESH_HOME/ca: a root (trust anchor) and an issuer.

The root key signs only issuers; the issuer signs workload leaves. Rotation
replaces the issuer under the same root, so the bundle (roots only) does not
change and leaves signed by the old issuer keep verifying until they expire:
they carry their issuer in their own chain.

The trust domain is read from the root certificate's URI SAN ``spiffe://<td>``:
one source of truth that travels with the trust anchor itself.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from mesh.errors import IdentityError
from mesh.home import MeshHome, atomic_write
from mesh.identity._certs import (
    PrivateKey,
    cert_to_pem,
    csr_public_key,
    generate_key,
    key_matches_cert,
    key_to_pem,
    load_certificate,
    load_certificates,
    load_key,
    make_issuer,
    make_leaf,
    make_root,
)
from mesh.identity._credentials import IssuedCredentials
from mesh.identity._facts import DEFAULT_LEAF_TTL, iso_utc, mesh_id, mesh_ids, trust_domain_of, utcnow
from mesh.identity._files import read_file, warn_if_loose
from mesh.identity._spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, validate_trust_domain

_INIT_HINT = "run `mesh ca init` (or point --home / MESH_HOME at the directory that holds the CA)"
_RESTORE_HINT = "restore MESH_HOME/ca from a backup, or start over with `mesh ca init --force`"


def _ca_files(home: MeshHome) -> dict[str, Path]:
    return {
        "root.pem": home.root_cert,
        "root.key": home.root_key,
        "issuer.pem": home.issuer_cert,
        "issuer.key": home.issuer_key,
        "bundle.pem": home.bundle,
    }


def _issuer_label() -> str:
    # Distinct issuer names make `openssl verify -untrusted` and humans pick the right one.
    return f"{utcnow():%Y-%m-%d} {secrets.token_hex(3)}"


class CertificateAuthority:
    """A loaded CA. Create it with ``init`` or ``load`` (the constructor trusts its arguments)."""

    def __init__(
        self,
        home: MeshHome,
        root_cert: x509.Certificate,
        issuer_cert: x509.Certificate,
        issuer_key: PrivateKey,
        bundle_pem: bytes,
    ) -> None:
        self._home = home
        self._root_cert = root_cert
        self._issuer_cert = issuer_cert
        self._issuer_key = issuer_key
        self._bundle_pem = bundle_pem
        self._trust_domain = trust_domain_of(root_cert)

    def __repr__(self) -> str:
        home = str(self._home.root)
        return f"CertificateAuthority(trust_domain={self._trust_domain!r}, home={home!r})"

    # ------------------------------------------------------------ creation

    @classmethod
    def init(
        cls, home: MeshHome, trust_domain: str = DEFAULT_TRUST_DOMAIN, force: bool = False
    ) -> CertificateAuthority:
        """Create a root and an issuer in ``home``; replace an existing CA only with ``force``."""
        validate_trust_domain(trust_domain)
        existing = [name for name, path in _ca_files(home).items() if path.exists()]
        if existing and not force:
            raise IdentityError(
                f"a CA already exists in {home.ca_dir}",
                hint="pass --force to replace it; every certificate it issued will stop verifying",
            )
        home.ensure_dir(home.ca_dir, 0o700)

        root_key = generate_key()
        root_cert = make_root(root_key, trust_domain)
        issuer_key = generate_key()
        issuer_cert = make_issuer(issuer_key, root_cert, root_key, label=_issuer_label())
        bundle_pem = cert_to_pem(root_cert)

        # Keys before certificates, bundle last: `load` checks that pairs match,
        # so an interrupted init is reported, never half-trusted.
        atomic_write(home.root_key, key_to_pem(root_key), mode=0o600)
        atomic_write(home.root_cert, cert_to_pem(root_cert), mode=0o644)
        atomic_write(home.issuer_key, key_to_pem(issuer_key), mode=0o600)
        atomic_write(home.issuer_cert, cert_to_pem(issuer_cert), mode=0o644)
        atomic_write(home.bundle, bundle_pem, mode=0o644)
        return cls(home, root_cert, issuer_cert, issuer_key, bundle_pem)

    @classmethod
    def load(cls, home: MeshHome) -> CertificateAuthority:
        """Load and cross-check the CA in ``home``. Loose key permissions warn, they do not fail."""
        files = _ca_files(home)
        missing = [name for name, path in files.items() if not path.exists()]
        if len(missing) == len(files):
            raise IdentityError(f"no CA in {home.ca_dir}", hint=_INIT_HINT)
        if missing:
            raise IdentityError(
                f"the CA in {home.ca_dir} is incomplete: {', '.join(missing)} missing",
                hint=_RESTORE_HINT,
            )
        warn_if_loose(home.root_key)
        warn_if_loose(home.issuer_key)

        root_cert = load_certificate(read_file(home.root_cert, "root certificate"), source=str(home.root_cert))
        issuer_cert = load_certificate(read_file(home.issuer_cert, "issuer certificate"), source=str(home.issuer_cert))
        issuer_key = load_key(read_file(home.issuer_key, "issuer key"), str(home.issuer_key))
        bundle_pem = read_file(home.bundle, "trust bundle")
        anchors = load_certificates(bundle_pem, source=str(home.bundle))

        if not key_matches_cert(issuer_key, issuer_cert):
            raise IdentityError(
                f"{home.issuer_key} does not belong to {home.issuer_cert}",
                hint=_RESTORE_HINT,
            )
        try:
            issuer_cert.verify_directly_issued_by(root_cert)
        except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: same verdict
            raise IdentityError(f"{home.issuer_cert} was not signed by {home.root_cert}", hint=_RESTORE_HINT) from None
        if root_cert not in anchors:
            raise IdentityError(f"{home.bundle} does not contain {home.root_cert}", hint=_RESTORE_HINT)
        return cls(home, root_cert, issuer_cert, issuer_key, bundle_pem)

    # ------------------------------------------------------------ properties

    @property
    def home(self) -> MeshHome:
        return self._home

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def root_cert(self) -> x509.Certificate:
        return self._root_cert

    @property
    def issuer_cert(self) -> x509.Certificate:
        return self._issuer_cert

    @property
    def issuer_not_after(self) -> datetime:
        return self._issuer_cert.not_valid_after_utc

    @property
    def bundle_pem(self) -> bytes:
        """The trust anchors (roots only) that every workload verifies peers against."""
        return self._bundle_pem

    @property
    def mesh_id(self) -> str:
        """This mesh's id in discovery records (``mesh_id`` of the root)."""
        return mesh_id(self._root_cert)

    @property
    def mesh_ids(self) -> tuple[str, ...]:
        """The ids of every anchor of the bundle: records of any of them are this mesh's."""
        return mesh_ids(self._bundle_pem)

    # ------------------------------------------------------------ signing

    def _check_can_sign(self, identity: SpiffeId) -> None:
        if identity.trust_domain != self._trust_domain:
            raise IdentityError(
                f"cannot issue {identity}: this CA serves trust domain {self._trust_domain}",
                hint=f"ask for spiffe://{self._trust_domain}/{identity.kind}/{identity.name}",
            )
        if utcnow() >= self.issuer_not_after:
            raise IdentityError(
                f"the issuer certificate expired on {iso_utc(self.issuer_not_after)}",
                hint="run `mesh ca rotate` to make a new issuer",
            )

    def _chain_pem(self, leaf: x509.Certificate) -> bytes:
        return cert_to_pem(leaf) + cert_to_pem(self._issuer_cert)

    def issue(
        self,
        identity: SpiffeId,
        ttl: timedelta = DEFAULT_LEAF_TTL,
        *,
        not_before: datetime | None = None,
    ) -> IssuedCredentials:
        """A fresh key and certificate for ``identity``, for callers that hold the key themselves.

        The leaf never outlives the issuer (``ttl`` is cut at the issuer's
        notAfter). ``not_before`` defaults to one minute ago (clock skew); tests
        pass an older one to make expired certificates.
        """
        self._check_can_sign(identity)
        key = generate_key()
        leaf = make_leaf(
            key.public_key(),
            identity,
            self._issuer_cert,
            self._issuer_key,
            ttl=ttl,
            not_before=not_before,
        )
        return IssuedCredentials(
            identity=identity,
            cert_chain_pem=self._chain_pem(leaf),
            key_pem=key_to_pem(key),
            bundle_pem=self._bundle_pem,
            not_after=leaf.not_valid_after_utc,
        )

    def sign_csr(
        self,
        csr_pem: bytes,
        identity: SpiffeId,
        ttl: timedelta = DEFAULT_LEAF_TTL,
        *,
        not_before: datetime | None = None,
    ) -> bytes:
        """Sign the CSR's public key as ``identity``; returns the leaf + issuer chain PEM.

        The CSR only proves possession of the key (its signature is checked);
        its subject and SANs are ignored: the caller decides who this is.
        """
        self._check_can_sign(identity)
        public_key = csr_public_key(csr_pem)
        leaf = make_leaf(
            public_key,
            identity,
            self._issuer_cert,
            self._issuer_key,
            ttl=ttl,
            not_before=not_before,
        )
        return self._chain_pem(leaf)

    # ------------------------------------------------------------ rotation

    def rotate(self) -> None:
        """Replace the issuer with a new one signed by the same root. The bundle does not change."""
        if utcnow() >= self._root_cert.not_valid_after_utc:
            raise IdentityError(
                f"the root certificate expired on {iso_utc(self._root_cert.not_valid_after_utc)}",
                hint="make a new trust anchor with `mesh ca init --force`, then re-issue workloads",
            )
        home = self._home
        warn_if_loose(home.root_key)
        # The root key is read only here: the only operation that needs it.
        root_key = load_key(read_file(home.root_key, "root key", hint=_RESTORE_HINT), str(home.root_key))
        if not key_matches_cert(root_key, self._root_cert):
            raise IdentityError(f"{home.root_key} does not belong to {home.root_cert}", hint=_RESTORE_HINT)
        issuer_key = generate_key()
        issuer_cert = make_issuer(issuer_key, self._root_cert, root_key, label=_issuer_label())
        atomic_write(home.issuer_key, key_to_pem(issuer_key), mode=0o600)
        atomic_write(home.issuer_cert, cert_to_pem(issuer_cert), mode=0o644)
        self._issuer_cert = issuer_cert
        self._issuer_key = issuer_key
