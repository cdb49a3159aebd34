"""The sidecar's DER reader (mesh/identity/_der.py) against cryptography, field by field."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings, strategies as st

from mesh.errors import IdentityError
from mesh.home import MeshHome
from mesh.identity import CertificateAuthority, fingerprint, service_identity
from mesh.identity._der import CertificateFacts, read_der_certificate, read_pem_certificates

_KEY = ec.generate_private_key(ec.SECP256R1())
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=1024 + 1024)
_ED = ed25519.Ed25519PrivateKey.generate()


def assert_same(facts: CertificateFacts, cert: x509.Certificate) -> None:
    assert facts.der == cert.public_bytes(serialization.Encoding.DER)
    assert facts.serial_number == cert.serial_number
    assert facts.not_valid_before_utc == cert.not_valid_before_utc
    assert facts.not_valid_after_utc == cert.not_valid_after_utc
    assert facts.subject == cert.subject.rfc4514_string()
    assert list(facts.common_names) == [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        uris, dns = [], []
    assert list(facts.uri_sans) == uris
    assert list(facts.dns_sans) == dns
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    assert facts.is_ca == is_ca
    assert facts.public_key_info == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "sha256:" + facts.sha256 == fingerprint(cert)


def test_a_mesh_root_issuer_and_leaf(tmp_path) -> None:
    ca = CertificateAuthority.init(MeshHome(tmp_path / "home"), "der.test")
    creds = ca.issue(service_identity("der.test", "web"), timedelta(hours=1))
    chain = x509.load_pem_x509_certificates(creds.cert_chain_pem)
    facts = read_pem_certificates(creds.cert_chain_pem)
    assert len(facts) == 2
    for fact, cert in zip(facts, chain, strict=True):
        assert_same(fact, cert)
    (root,) = read_pem_certificates(creds.bundle_pem)
    assert_same(root, x509.load_pem_x509_certificate(creds.bundle_pem))
    assert facts[0].uri_sans == ("spiffe://der.test/svc/web",) and not facts[0].is_ca
    assert facts[1].is_ca and root.is_ca and root.uri_sans == ("spiffe://der.test",)


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=12
)
_ATTRIBUTES = st.sampled_from(
    [
        NameOID.COMMON_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.EMAIL_ADDRESS,
        NameOID.TITLE,
        NameOID.DOMAIN_COMPONENT,
    ]
)
_DNS = st.from_regex(r"\A(\*\.)?[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}\Z")
_URI = st.from_regex(r"\Aspiffe://[a-z0-9.]{1,12}(/[a-z0-9]{1,8}){0,2}\Z")
_MOMENT = st.datetimes(min_value=datetime(1951, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda moment: moment.replace(microsecond=0, tzinfo=UTC)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.tuples(_ATTRIBUTES, _TEXT), min_size=1, max_size=4),
    uris=st.lists(_URI, max_size=3),
    dns=st.lists(_DNS, max_size=3),
    serial=st.integers(min_value=1, max_value=(1 << 159) - 1),
    start=_MOMENT,
    days=st.integers(min_value=1, max_value=40000),
    ca=st.sampled_from([None, True, False]),
    key=st.sampled_from([_KEY, _RSA, _ED]),
)
def test_generated_certificates_read_as_cryptography_reads_them(names, uris, dns, serial, start, days, ca, key) -> None:
    attributes = []
    for oid, value in names:
        if oid == NameOID.EMAIL_ADDRESS or oid == NameOID.DOMAIN_COMPONENT:
            value = value.encode("ascii", "replace").decode()  # IA5String
        attributes.append(x509.NameAttribute(oid, value))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(min(start + timedelta(days=days), datetime(9999, 1, 1, tzinfo=UTC)))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    general = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    cert = builder.sign(_KEY, hashes.SHA256())
    assert_same(read_der_certificate(cert.public_bytes(serialization.Encoding.DER)), cert)


def _self_signed(subject: x509.Name) -> x509.Certificate:
    now = datetime.now(UTC).replace(microsecond=0)
    builder = x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(_KEY.public_key())
    builder = builder.serial_number(7).not_valid_before(now).not_valid_after(now + timedelta(days=1))
    return builder.sign(_KEY, hashes.SHA256())


def test_a_multi_valued_rdn_and_escaped_values() -> None:
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, "a,b"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, " x+y ")]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
        ]
    )
    cert = _self_signed(subject)
    assert_same(read_der_certificate(cert.public_bytes(serialization.Encoding.DER)), cert)


def _one_cert_pem() -> bytes:
    cert = _self_signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"nothing here", "holds no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "corrupted PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "corrupted PEM certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(b"\x30\x03\x02\x01\x01")
            + b"-----END CERTIFICATE-----\n",
            "corrupted PEM certificate",
        ),
    ],
)
def test_bad_pem_is_refused_as_load_certificates_refuses_it(pem: bytes, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        read_pem_certificates(pem, source="x.pem")


def test_every_truncation_of_a_certificate_is_a_value_error() -> None:
    der = x509.load_pem_x509_certificate(_one_cert_pem()).public_bytes(serialization.Encoding.DER)
    for cut in range(len(der)):
        with pytest.raises(ValueError):
            read_der_certificate(der[:cut])
    assert read_der_certificate(der).common_names == ("x",)


def test_pem_with_other_blocks_and_text_around() -> None:
    pem = b"comment\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n" + _one_cert_pem() * 2
    assert [f.common_names for f in read_pem_certificates(pem)] == [("x",), ("x",)]
