"""Keys, CSRs and the three kinds of certificate mesh makes: root, issuer, leaf.

Every key is ECDSA P-256 and every signature ECDSA-SHA256. Profiles follow
RFC 5280 and the SPIFFE X509-SVID spec:

- root (trust anchor): CA, pathlen 1, keyCertSign+cRLSign, URI SAN ``spiffe://<td>``;
- issuer (intermediate): CA, pathlen 0, keyCertSign+cRLSign, signed by the root;
- leaf (workload/operator): not a CA, digitalSignature+keyAgreement,
  serverAuth+clientAuth, exactly one URI SAN (the SPIFFE id), CN = name.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.errors import IdentityError
from mesh.identity._facts import CLOCK_SKEW, DEFAULT_LEAF_TTL, ISSUER_LIFETIME, ROOT_LIFETIME, trust_domain_of, utcnow
from mesh.identity._files import read_file
from mesh.identity._spiffe import SpiffeId, trust_domain_uri

PrivateKey = ec.EllipticCurvePrivateKey


# --------------------------------------------------------------------- keys


def generate_key() -> PrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: protected by file permissions (0600), never sent anywhere."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes, source: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise IdentityError(
            f"{source} is not a valid unencrypted PEM private key",
            hint="restore the file or issue new credentials",
        ) from None
    except Exception:  # noqa: BLE001 - cryptography raises UnsupportedAlgorithm and friends
        raise IdentityError(f"{source} holds an unsupported private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise IdentityError(f"{source} is not an ECDSA P-256 private key (mesh uses only P-256)")
    return key


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    return _public_der(key.public_key()) == _public_der(cert.public_key())


# ---------------------------------------------------------------- parsing


def load_certificates(pem: bytes | str, *, source: str = "input") -> list[x509.Certificate]:
    """Every CERTIFICATE block of ``pem`` in order (other PEM blocks are skipped)."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise IdentityError(
            f"{source} holds no PEM certificate",
            hint="pass a file with -----BEGIN CERTIFICATE----- blocks",
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise IdentityError(
            f"{source} holds a corrupted PEM certificate",
            hint="restore the file from a backup or re-create it",
        ) from None


def load_certificate_file(path: Path, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in the PEM file ``path``; errors name the file."""
    return load_certificates(read_file(Path(path), what), source=str(path))


def load_certificate(pem: bytes | str, *, source: str = "input") -> x509.Certificate:
    """The first certificate of ``pem``."""
    return load_certificates(pem, source=source)[0]


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


# ---------------------------------------------------------------- building


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:  # most significant first: O=<td>, CN=<name>
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)

_LEAF_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def _validity(not_before: datetime | None, lifetime: timedelta, cap: datetime | None) -> tuple[datetime, datetime]:
    if lifetime <= timedelta(0):
        raise IdentityError(f"certificate lifetime must be positive, got {lifetime}")
    if not_before is None:
        # Backdating is for skew only: the holder still gets ``lifetime`` from now.
        now = utcnow()
        start, end = now - CLOCK_SKEW, now + lifetime
    else:
        start = not_before if not_before.tzinfo else not_before.replace(tzinfo=UTC)
        end = start + lifetime
    if cap is not None and end > cap:
        end = cap  # never outlive the certificate that signs us
    if end <= start:
        raise IdentityError("the signing certificate expires before the new certificate would start")
    return start, end


def make_root(key: PrivateKey, trust_domain: str, *, lifetime: timedelta = ROOT_LIFETIME) -> x509.Certificate:
    start, end = _validity(None, lifetime, None)
    subject = _name("mesh root CA", trust_domain)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(trust_domain_uri(trust_domain))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )


def make_issuer(
    key: PrivateKey,
    root_cert: x509.Certificate,
    root_key: PrivateKey,
    *,
    lifetime: timedelta = ISSUER_LIFETIME,
    label: str,
) -> x509.Certificate:
    start, end = _validity(None, lifetime, root_cert.not_valid_after_utc)
    trust_domain = trust_domain_of(root_cert)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(f"mesh issuer CA {label}", trust_domain))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )


def make_leaf(
    public_key: ec.EllipticCurvePublicKey,
    identity: SpiffeId,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    *,
    ttl: timedelta = DEFAULT_LEAF_TTL,
    not_before: datetime | None = None,
) -> x509.Certificate:
    """A workload (or operator) certificate for ``identity``; nothing else is copied in."""
    start, end = _validity(not_before, ttl, issuer_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(identity.name))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


# --------------------------------------------------------------------- CSRs


def make_csr(key: PrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR for ``identity``. The CA decides the identity anyway; this is a courtesy."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(identity.name))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of a CSR whose signature proves possession of the private key."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem if isinstance(csr_pem, bytes) else csr_pem.encode())
    except ValueError:
        raise IdentityError(
            "the certificate signing request is not valid PEM",
            hint="send a PEM CSR made with mesh.identity.make_csr",
        ) from None
    try:
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
    except Exception:  # noqa: BLE001 - unsupported algorithms surface as various errors
        signature_ok, public_key = False, None
    if not signature_ok:
        raise IdentityError(
            "the certificate signing request's signature does not verify",
            hint="the CSR was altered or signed with another key; make a new one",
        )
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise IdentityError("the certificate signing request's key is not ECDSA P-256 (mesh uses only P-256)")
    return public_key
