from __future__ import annotations

import os
import stat
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, strategies as st

from mesh.errors import IdentityError
from mesh.home import MeshHome
from mesh.identity import (
    CLOCK_SKEW,
    CertificateAuthority,
    InsecurePermissionsWarning,
    IssuedCredentials,
    SpiffeId,
    cert_to_pem,
    describe_certificate,
    fingerprint,
    generate_key,
    key_to_pem,
    load_certificates,
    load_credentials,
    make_csr,
    operator_identity,
    parse_fingerprint,
    renew_at,
    service_identity,
    spiffe_id_of,
    trust_domain_of,
    verify_chain,
)

REVIEWS = service_identity("mesh.local", "reviews")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


# ----------------------------------------------------------------- init / load


def test_init_writes_the_layout_with_safe_permissions(home: MeshHome) -> None:
    CertificateAuthority.init(home)
    assert mode(home.ca_dir) == 0o700
    assert mode(home.root_key) == 0o600
    assert mode(home.issuer_key) == 0o600
    for public in (home.root_cert, home.issuer_cert, home.bundle):
        assert mode(public) == 0o644
    assert home.has_ca()
    # nothing half-written or left over from atomic writes
    assert sorted(p.name for p in home.ca_dir.iterdir()) == [
        "bundle.pem",
        "issuer.key",
        "issuer.pem",
        "root.key",
        "root.pem",
    ]


def test_root_and_issuer_profiles(ca: CertificateAuthority) -> None:
    root, issuer = ca.root_cert, ca.issuer_cert
    now = datetime.now(UTC)
    assert ext(root, x509.BasicConstraints).value.ca and ext(root, x509.BasicConstraints).critical
    assert root.subject == root.issuer
    assert trust_domain_of(root) == "mesh.local"
    assert timedelta(days=3649) < root.not_valid_after_utc - now <= timedelta(days=3650)
    assert root.not_valid_before_utc <= now - CLOCK_SKEW + timedelta(seconds=5)

    constraints = ext(issuer, x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ext(issuer, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert timedelta(days=364) < issuer.not_valid_after_utc - now <= timedelta(days=365)
    issuer.verify_directly_issued_by(root)
    assert isinstance(issuer.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(issuer.public_key().curve, ec.SECP256R1)
    # bundle = the root only; the issuer travels in each leaf's chain
    assert load_certificates(ca.bundle_pem) == [root]


def test_load_returns_the_same_ca(ca: CertificateAuthority, home: MeshHome) -> None:
    loaded = CertificateAuthority.load(home)
    assert loaded.trust_domain == "mesh.local"
    assert loaded.root_cert == ca.root_cert
    assert loaded.issuer_cert == ca.issuer_cert
    assert loaded.bundle_pem == ca.bundle_pem


def test_custom_trust_domain_is_read_back_from_the_root(home: MeshHome) -> None:
    CertificateAuthority.init(home, trust_domain="corp.example")
    ca = CertificateAuthority.load(home)
    assert ca.trust_domain == "corp.example"
    creds = ca.issue(service_identity("corp.example", "api"))
    assert str(creds.identity) == "spiffe://corp.example/svc/api"


def test_init_refuses_an_existing_ca_without_force(
    ca: CertificateAuthority, home: MeshHome
) -> None:
    before = home.root_cert.read_bytes()
    with pytest.raises(IdentityError) as info:
        CertificateAuthority.init(home)
    assert "already exists" in info.value.message
    assert info.value.hint and "--force" in info.value.hint
    assert home.root_cert.read_bytes() == before

    replaced = CertificateAuthority.init(home, force=True)
    assert replaced.root_cert != ca.root_cert
    assert CertificateAuthority.load(home).root_cert == replaced.root_cert


def test_init_refuses_even_a_partial_ca(home: MeshHome) -> None:
    home.ensure_dir(home.ca_dir)
    home.root_key.write_bytes(b"something precious")
    with pytest.raises(IdentityError, match="already exists"):
        CertificateAuthority.init(home)
    assert home.root_key.read_bytes() == b"something precious"


def test_bad_trust_domain_is_refused_before_writing(home: MeshHome) -> None:
    with pytest.raises(IdentityError, match="invalid trust domain 'Bad Domain'"):
        CertificateAuthority.init(home, trust_domain="Bad Domain")
    assert not home.ca_dir.exists()


def test_load_without_a_ca_says_run_init(home: MeshHome) -> None:
    with pytest.raises(IdentityError) as info:
        CertificateAuthority.load(home)
    assert info.value.message == f"no CA in {home.ca_dir}"
    assert info.value.hint and "mesh ca init" in info.value.hint


def test_load_an_incomplete_ca_names_what_is_missing(
    ca: CertificateAuthority, home: MeshHome
) -> None:
    home.issuer_key.unlink()
    with pytest.raises(IdentityError, match="incomplete: issuer.key missing"):
        CertificateAuthority.load(home)


@pytest.mark.parametrize("which", ["root_cert", "issuer_cert", "bundle"])
def test_corrupted_pem_is_one_line_naming_the_file(
    ca: CertificateAuthority, home: MeshHome, which: str
) -> None:
    path: Path = getattr(home, which)
    text = path.read_text()
    path.write_text(text[:120] + "@@@" + text[140:])
    with pytest.raises(IdentityError) as info:
        CertificateAuthority.load(home)
    assert str(path) in info.value.message
    assert "corrupted" in info.value.message
    assert "\n" not in info.value.message


def test_corrupted_key_names_the_file(ca: CertificateAuthority, home: MeshHome) -> None:
    home.issuer_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(IdentityError, match=str(home.issuer_key)):
        CertificateAuthority.load(home)


def test_mismatched_issuer_key_is_detected(ca: CertificateAuthority, home: MeshHome) -> None:
    home.issuer_key.write_bytes(key_to_pem(generate_key()))
    with pytest.raises(IdentityError, match="does not belong to"):
        CertificateAuthority.load(home)


def test_loose_key_permissions_warn_but_load(ca: CertificateAuthority, home: MeshHome) -> None:
    os.chmod(home.issuer_key, 0o644)
    with pytest.warns(InsecurePermissionsWarning, match=f"chmod 600 {home.issuer_key}"):
        loaded = CertificateAuthority.load(home)
    assert loaded.issuer_cert == ca.issuer_cert


def test_tight_permissions_do_not_warn(ca: CertificateAuthority, home: MeshHome) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CertificateAuthority.load(home)


# ----------------------------------------------------------------- issue


def test_issued_leaf_profile(ca: CertificateAuthority) -> None:
    creds = ca.issue(REVIEWS)
    chain = load_certificates(creds.cert_chain_pem)
    assert len(chain) == 2 and chain[1] == ca.issuer_cert
    leaf = chain[0]
    assert spiffe_id_of(leaf) == REVIEWS
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "reviews"
    assert ext(leaf, x509.BasicConstraints).value.ca is False
    usage = ext(leaf, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_agreement and not usage.key_cert_sign
    assert set(ext(leaf, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    uris = ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://mesh.local/svc/reviews"]
    assert ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == []
    assert ext(leaf, x509.SubjectKeyIdentifier).value.digest
    assert (
        ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(ca.issuer_cert, x509.SubjectKeyIdentifier).value.digest
    )
    now = datetime.now(UTC)
    assert leaf.not_valid_before_utc <= now - CLOCK_SKEW + timedelta(seconds=5)
    assert timedelta(hours=23, minutes=59) < leaf.not_valid_after_utc - now <= timedelta(hours=24)
    assert creds.not_after == leaf.not_valid_after_utc
    assert creds.bundle_pem == ca.bundle_pem
    leaf.verify_directly_issued_by(ca.issuer_cert)
    key = serialization.load_pem_private_key(creds.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert "PRIVATE" not in repr(creds)


def test_issue_operator_identity(ca: CertificateAuthority) -> None:
    creds = ca.issue(operator_identity("mesh.local", "alice"), timedelta(hours=1))
    assert str(spiffe_id_of(creds.leaf)) == "spiffe://mesh.local/operator/alice"


def test_issue_refuses_another_trust_domain(ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityError, match="serves trust domain mesh.local"):
        ca.issue(service_identity("other.domain", "reviews"))


def test_leaf_never_outlives_the_issuer(ca: CertificateAuthority) -> None:
    creds = ca.issue(REVIEWS, timedelta(days=5000))
    assert creds.not_after == ca.issuer_not_after


def test_renew_at_is_70_percent_of_the_life_granted_since_issue(ca: CertificateAuthority) -> None:
    leaf = ca.issue(REVIEWS, timedelta(hours=10)).leaf
    issued = leaf.not_valid_before_utc + CLOCK_SKEW  # notBefore is backdated for skew only
    assert renew_at(leaf) == issued + timedelta(hours=10) * 0.7
    assert renew_at(cert_to_pem(leaf)) == renew_at(leaf)
    # Counted from when the holder got it, by its own clock, when it says so.
    received = issued + timedelta(minutes=1)
    assert renew_at(leaf, received_at=received) == received + (leaf.not_valid_after_utc - received) * 0.7


@pytest.mark.parametrize("ttl", [timedelta(seconds=15), timedelta(seconds=60), timedelta(minutes=2), timedelta(hours=24)])
def test_a_short_leaf_is_not_due_at_once(ca: CertificateAuthority, ttl: timedelta) -> None:
    """Counted from the backdated notBefore, anything under ~26 s was due before it was issued
    (a proxy with --cert-ttl 15s renewed 1,730 times in 34 s) and 60 s was due at 40 %."""
    received = datetime.now(UTC)
    leaf = ca.issue(REVIEWS, ttl).leaf
    granted = leaf.not_valid_after_utc - received
    for due in (renew_at(leaf), renew_at(leaf, received_at=received)):
        # (less a second: validity times are whole seconds)
        assert due - received >= granted * 0.7 - timedelta(seconds=1)
        assert due < leaf.not_valid_after_utc


@given(
    lifetime=st.integers(1, 10 * 86400),
    backdated=st.integers(0, 3600),
    received_late=st.integers(-600, 86400),
    previous_ago=st.one_of(st.none(), st.integers(0, 86400)),
)
def test_renewal_is_never_before_half_the_life_nor_more_often_than_a_tenth(
    lifetime: int, backdated: int, received_late: int, previous_ago: int | None
) -> None:
    issued = datetime(2030, 1, 1, tzinfo=UTC)
    end = issued + timedelta(seconds=lifetime)
    leaf = _leaf_valid(issued - timedelta(seconds=backdated), end)
    received = issued + timedelta(seconds=received_late)
    previous = None if previous_ago is None else received - timedelta(seconds=previous_ago)
    due = renew_at(leaf, received_at=received, previous=previous)
    counted_from = min(max(received, leaf.not_valid_before_utc), end)
    granted = end - counted_from
    assert due >= counted_from + granted * 0.5
    if previous is not None:
        assert due - previous >= max(granted, timedelta(seconds=60)) * 0.1


def _leaf_valid(not_before: datetime, not_after: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reviews")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def test_write_and_load_credentials(ca: CertificateAuthority, tmp_path: Path) -> None:
    creds = ca.issue(REVIEWS)
    paths = creds.write(tmp_path / "creds" / "reviews")
    assert mode(paths.key) == 0o600
    assert mode(paths.cert) == 0o644
    assert mode(paths.key.parent) == 0o700
    assert paths.cert.read_bytes() == creds.cert_chain_pem
    loaded = load_credentials(paths.cert, paths.key, paths.bundle)
    assert loaded == creds


def test_load_credentials_rejects_a_foreign_key(ca: CertificateAuthority, tmp_path: Path) -> None:
    paths = ca.issue(REVIEWS).write(tmp_path / "a")
    other = ca.issue(REVIEWS).write(tmp_path / "b")
    with pytest.raises(IdentityError, match="does not belong to the certificate"):
        load_credentials(paths.cert, other.key, paths.bundle)


def test_load_credentials_missing_file_and_loose_key(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    paths = ca.issue(REVIEWS).write(tmp_path / "a")
    with pytest.raises(IdentityError, match="does not exist"):
        load_credentials(paths.cert, tmp_path / "nope.pem", paths.bundle)
    os.chmod(paths.key, 0o640)
    with pytest.warns(InsecurePermissionsWarning):
        load_credentials(paths.cert, paths.key, paths.bundle)


def test_load_credentials_needs_a_spiffe_id(ca: CertificateAuthority, tmp_path: Path) -> None:
    # The CA's own root has a trust-domain URI but no workload id.
    root_key = serialization.load_pem_private_key(ca.home.root_key.read_bytes(), None)
    (tmp_path / "c.pem").write_bytes(cert_to_pem(ca.root_cert))
    (tmp_path / "k.pem").write_bytes(key_to_pem(root_key))  # type: ignore[arg-type]
    (tmp_path / "k.pem").chmod(0o600)
    with pytest.raises(IdentityError, match="invalid SPIFFE id"):
        load_credentials(tmp_path / "c.pem", tmp_path / "k.pem", ca.home.bundle)


# ----------------------------------------------------------------- CSRs


def test_sign_csr_uses_the_callers_identity_not_the_csrs(ca: CertificateAuthority) -> None:
    key = generate_key()
    # The workload asks to be "admin"; the CA caller knows it is "reviews".
    csr = make_csr(key, service_identity("mesh.local", "admin"))
    chain_pem = ca.sign_csr(csr, REVIEWS, timedelta(hours=1))
    leaf, issuer = load_certificates(chain_pem)
    assert issuer == ca.issuer_cert
    assert spiffe_id_of(leaf) == REVIEWS
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "reviews"
    def pub(k):
        return k.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    assert pub(leaf.public_key()) == pub(key.public_key())
    assert verify_chain(chain_pem, ca.bundle_pem)[0]


def test_sign_csr_with_extra_sans_still_yields_one_uri(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives import hashes

    key = generate_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("bank.example"),
                    x509.UniformResourceIdentifier("spiffe://mesh.local/svc/admin"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    leaf = load_certificates(ca.sign_csr(csr, REVIEWS, timedelta(hours=1)))[0]
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [str(REVIEWS)]
    assert san.get_values_for_type(x509.DNSName) == []
    assert ext(leaf, x509.BasicConstraints).value.ca is False


def test_sign_csr_refuses_a_bad_signature(ca: CertificateAuthority) -> None:
    csr = x509.load_pem_x509_csr(make_csr(generate_key(), REVIEWS))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # flip a bit of the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(IdentityError, match="signature does not verify"):
        ca.sign_csr(tampered, REVIEWS, timedelta(hours=1))


def test_sign_csr_refuses_garbage_and_other_curves(ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityError, match="not valid PEM"):
        ca.sign_csr(b"hello", REVIEWS, timedelta(hours=1))
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(IdentityError, match="P-256"):
        ca.sign_csr(make_csr(p384, REVIEWS), REVIEWS, timedelta(hours=1))  # type: ignore[arg-type]


# ----------------------------------------------------------------- rotation


def test_rotate_keeps_root_and_bundle_and_old_leaves_verify(
    ca: CertificateAuthority, home: MeshHome
) -> None:
    old_issuer = ca.issuer_cert
    old_leaf = ca.issue(REVIEWS)
    bundle_before = home.bundle.read_bytes()
    root_before = home.root_cert.read_bytes()

    ca.rotate()
    new_leaf = ca.issue(REVIEWS)
    assert ca.issuer_cert != old_issuer
    assert ca.issuer_cert.subject != old_issuer.subject
    assert home.bundle.read_bytes() == bundle_before
    assert home.root_cert.read_bytes() == root_before
    assert mode(home.issuer_key) == 0o600
    assert load_certificates(new_leaf.cert_chain_pem)[1] == ca.issuer_cert

    for creds in (old_leaf, new_leaf):
        ok, detail = verify_chain(creds.cert_chain_pem, ca.bundle_pem)
        assert ok, detail
    reloaded = CertificateAuthority.load(home)
    assert reloaded.issuer_cert == ca.issuer_cert


def test_rotate_with_a_wrong_root_key_is_refused(ca: CertificateAuthority, home: MeshHome) -> None:
    home.root_key.write_bytes(key_to_pem(generate_key()))
    issuer_before = home.issuer_cert.read_bytes()
    with pytest.raises(IdentityError, match="does not belong to"):
        ca.rotate()
    assert home.issuer_cert.read_bytes() == issuer_before


# ----------------------------------------------------------------- inspect / verify


def test_verify_chain_failures_are_explained(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    good = ca.issue(REVIEWS)
    ok, detail = verify_chain(good.cert_chain_pem, ca.bundle_pem)
    assert ok and detail.startswith("spiffe://mesh.local/svc/reviews <- ")

    foreign = other_ca.issue(REVIEWS)
    ok, detail = verify_chain(foreign.cert_chain_pem, ca.bundle_pem)
    assert not ok and "does not verify" in detail  # same names, different keys

    expired = ca.issue(
        REVIEWS, timedelta(hours=1), not_before=datetime.now(UTC) - timedelta(hours=3)
    )
    ok, detail = verify_chain(expired.cert_chain_pem, ca.bundle_pem)
    assert not ok and "expired 2h" in detail

    leaf_only = cert_to_pem(good.leaf)
    ok, detail = verify_chain(leaf_only, ca.bundle_pem)
    assert not ok and "not a trust anchor" in detail

    ok, detail = verify_chain(b"nonsense", ca.bundle_pem)
    assert not ok and "no PEM certificate" in detail

    ok, detail = verify_chain(cert_to_pem(ca.root_cert), ca.bundle_pem)
    assert ok and "trust anchor" in detail


def test_verify_chain_refuses_a_leaf_used_as_a_ca(ca: CertificateAuthority) -> None:
    """A workload key must not be able to mint identities."""
    from cryptography.hazmat.primitives import hashes

    workload = ca.issue(REVIEWS)
    workload_key = serialization.load_pem_private_key(workload.key_pem, None)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .issuer_name(workload.leaf.subject)
        .public_key(generate_key().public_key())
        .serial_number(1)
        .not_valid_before(datetime.now(UTC) - timedelta(minutes=1))
        .not_valid_after(datetime.now(UTC) + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://mesh.local/svc/admin")]
            ),
            critical=False,
        )
        .sign(workload_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    ok, detail = verify_chain(cert_to_pem(forged) + workload.cert_chain_pem, ca.bundle_pem)
    assert not ok and "not a CA certificate" in detail


def test_verify_chain_agrees_with_cryptography_where_available(ca: CertificateAuthority) -> None:
    verification = pytest.importorskip("cryptography.x509.verification")
    if not hasattr(verification.PolicyBuilder, "build_client_verifier"):
        pytest.skip("cryptography < 43 has no client verifier")
    creds = ca.issue(REVIEWS)
    leaf, *intermediates = load_certificates(creds.cert_chain_pem)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([ca.root_cert]))
        .build_client_verifier()
    )
    verified = verifier.verify(leaf, intermediates)
    assert [str(s.value) for s in verified.subjects] == [str(REVIEWS)]
    assert verify_chain(creds.cert_chain_pem, ca.bundle_pem)[0]


def test_describe_certificate(ca: CertificateAuthority) -> None:
    creds = ca.issue(REVIEWS, timedelta(hours=24))
    info = describe_certificate(creds.cert_chain_pem)
    assert info["spiffe_id"] == "spiffe://mesh.local/svc/reviews"
    assert info["subject"] == "CN=reviews"
    assert info["issuer"] == ca.issuer_cert.subject.rfc4514_string()
    assert info["is_ca"] is False
    assert info["not_after"].endswith("Z") and "T" in info["not_after"]
    assert info["time_left"] in ("23h 59m", "24h")
    assert info["fingerprint"] == fingerprint(creds.leaf)
    assert int(info["serial"], 16) == creds.leaf.serial_number

    expired = ca.issue(
        REVIEWS, timedelta(hours=1), not_before=datetime.now(UTC) - timedelta(hours=3)
    )
    assert describe_certificate(expired.leaf)["time_left"].startswith("expired 2h")
    root_info = describe_certificate(ca.root_cert)
    assert root_info["is_ca"] is True and root_info["spiffe_id"] == "spiffe://mesh.local"


def test_fingerprint_format_and_parsing(ca: CertificateAuthority) -> None:
    fp = fingerprint(ca.root_cert)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert fp == fp.lower()
    hexdigits = fp.removeprefix("sha256:")
    openssl_style = "SHA256 Fingerprint=" + ":".join(
        hexdigits[i : i + 2].upper() for i in range(0, 64, 2)
    )
    assert parse_fingerprint(openssl_style) == fp
    assert parse_fingerprint(fp.upper()) == fp
    assert parse_fingerprint(hexdigits) == fp
    with pytest.raises(IdentityError, match="invalid CA fingerprint"):
        parse_fingerprint("sha256:abc")


def test_identity_round_trip_through_a_certificate(ca: CertificateAuthority) -> None:
    identity = SpiffeId.parse("spiffe://mesh.local/svc/ratings-v2")
    assert spiffe_id_of(ca.issue(identity).leaf) == identity


def test_credentials_are_frozen(ca: CertificateAuthority) -> None:
    creds = ca.issue(REVIEWS)
    with pytest.raises(AttributeError):
        creds.key_pem = b""  # type: ignore[misc]
    assert isinstance(creds, IssuedCredentials)
