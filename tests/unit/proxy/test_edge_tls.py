"""The gateway's certificates: clear errors at start, SNI choosing among them, TLS 1.2+ and ALPN,
and reloading when the files change (real handshakes in memory, no sockets)."""

from __future__ import annotations

import os
import ssl
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from mesh.errors import IdentityError
from mesh.identity import read_server_certificate
from mesh.proxy._edge_tls import EdgeCertificates
from tests.edge_certs import ThrowawayCA


@pytest.fixture(scope="module")
def ca() -> ThrowawayCA:
    return ThrowawayCA.create()


def handshake(
    server: ssl.SSLContext,
    ca: ThrowawayCA,
    server_name: str | None,
    *,
    alpn: list[str] | None = None,
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLObject:
    """A client handshake against ``server`` through memory BIOs; the client's SSLObject."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cadata=ca.pem.decode())
    client_ctx.check_hostname = server_name is not None
    if server_name is None:
        client_ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        client_ctx.set_alpn_protocols(alpn)
    if version is not None:
        client_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        client_ctx.maximum_version = version
        client_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    try:
        client.do_handshake()  # the ClientHello
    except ssl.SSLWantReadError:
        pass
    for _ in range(10):
        s_in.write(c_out.read())
        try:
            srv.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            pass  # the server refused: its alert goes to the client, which raises it
        c_in.write(s_out.read())
        try:
            client.do_handshake()
            return client
        except ssl.SSLWantReadError:
            continue
    raise AssertionError("no handshake")


def served_names(obj: ssl.SSLObject) -> list[str]:
    cert = x509.load_der_x509_certificate(obj.getpeercert(binary_form=True))
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


# -- errors at start ----------------------------------------------------------------------------


def test_missing_and_odd_files_are_named(tmp_path: Path, ca: ThrowawayCA) -> None:
    cert, key = ca.issue(tmp_path, "shop", ["shop.example"])
    with pytest.raises(IdentityError, match=r"certificate file .*nope\.pem does not exist"):
        read_server_certificate(tmp_path / "nope.pem", key)
    with pytest.raises(IdentityError, match=r"key file .* is a directory"):
        read_server_certificate(cert, tmp_path)
    (tmp_path / "junk.pem").write_text("hello\n")
    with pytest.raises(IdentityError, match=r"junk\.pem holds no PEM certificate"):
        read_server_certificate(tmp_path / "junk.pem", key)
    with pytest.raises(IdentityError, match=r"junk\.pem holds no PEM private key"):
        read_server_certificate(cert, tmp_path / "junk.pem")


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, ca: ThrowawayCA) -> None:
    cert, _ = ca.issue(tmp_path, "shop", ["shop.example"])
    _, other_key = ca.issue(tmp_path, "blog", ["blog.example"], kind="rsa")
    with pytest.raises(IdentityError) as info:
        read_server_certificate(cert, other_key)
    assert info.value.message == f"the key in {other_key} does not belong to the certificate in {cert}"
    assert "same order" in (info.value.hint or "")


def test_an_encrypted_key_says_how_to_decrypt_it(tmp_path: Path, ca: ThrowawayCA) -> None:
    cert, key = ca.issue(tmp_path, "shop", ["shop.example"], password=b"secret")
    with pytest.raises(IdentityError, match="encrypted with a passphrase") as info:
        read_server_certificate(cert, key)
    assert "openssl pkey" in (info.value.hint or "")


def test_expired_and_future_certificates_are_errors_at_start(tmp_path: Path, ca: ThrowawayCA) -> None:
    old = ca.issue(tmp_path, "old", ["old.example"], not_before=datetime.now(UTC) - timedelta(days=10), days=5)
    with pytest.raises(IdentityError, match=r"old\.pem \(old\.example\) expired on \d{4}-"):
        EdgeCertificates([old])
    future = ca.issue(tmp_path, "future", ["future.example"], not_before=datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(IdentityError, match="is not valid before"):
        EdgeCertificates([future])


def test_rsa_ecdsa_and_names(tmp_path: Path, ca: ThrowawayCA) -> None:
    rsa_pair = ca.issue(tmp_path, "rsa", ["Shop.Example", "www.shop.example"], kind="rsa")
    certificate = read_server_certificate(*rsa_pair)
    assert certificate.names == ("shop.example", "www.shop.example")
    assert certificate.label == "shop.example"


# -- SNI, versions, ALPN ------------------------------------------------------------------------


@pytest.fixture
def two(tmp_path: Path, ca: ThrowawayCA) -> EdgeCertificates:
    return EdgeCertificates(
        [ca.issue(tmp_path, "shop", ["shop.example"]), ca.issue(tmp_path, "blog", ["blog.example", "*.blog.example"], kind="rsa")]
    )


def test_sni_picks_the_certificate(two: EdgeCertificates, ca: ThrowawayCA) -> None:
    assert served_names(handshake(two.context, ca, "shop.example")) == ["shop.example"]
    assert served_names(handshake(two.context, ca, "blog.example")) == ["blog.example", "*.blog.example"]
    assert served_names(handshake(two.context, ca, "www.blog.example")) == ["blog.example", "*.blog.example"]
    # No SNI, or a name nobody has: the first pair, as nginx's default server.
    assert served_names(handshake(two.context, ca, None)) == ["shop.example"]
    assert two.select("a.b.blog.example").names == ("shop.example",)  # a wildcard is one label deep
    assert two.select("SHOP.example.").names == ("shop.example",)


def test_alpn_and_versions(two: EdgeCertificates, ca: ThrowawayCA) -> None:
    h2 = handshake(two.context, ca, "blog.example", alpn=["h2", "http/1.1"])
    assert h2.selected_alpn_protocol() == "h2" and h2.version() == "TLSv1.3"
    assert handshake(two.context, ca, "shop.example", alpn=["http/1.1"]).selected_alpn_protocol() == "http/1.1"
    assert handshake(two.context, ca, "shop.example", version=ssl.TLSVersion.TLSv1_2).version() == "TLSv1.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1 are: that is the point
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            # The server's refusal (alert protocol_version), not the client's inability to offer it.
            with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION|tlsv1 alert protocol version"):
                handshake(two.context, ca, "shop.example", version=old)


# -- reloading ----------------------------------------------------------------------------------


def replace(tmp_path: Path, ca: ThrowawayCA, stem: str, names: list[str], target: tuple[Path, Path], **kw: object) -> None:
    """Write a new pair next to the served one, then rename it over (as a renewal tool does)."""
    new_cert, new_key = ca.issue(tmp_path / "new", stem, names, **kw)  # type: ignore[arg-type]
    os.replace(new_key, target[1])
    os.replace(new_cert, target[0])


def test_a_replaced_pair_is_served_from_the_next_handshake(tmp_path: Path, ca: ThrowawayCA) -> None:
    pair = ca.issue(tmp_path, "shop", ["shop.example"])
    certs = EdgeCertificates([pair])
    before = certs.select("shop.example").fingerprint
    assert certs.reload() == []  # nothing changed
    replace(tmp_path, ca, "shop", ["shop.example", "new.shop.example"], pair)
    (note,) = certs.reload()
    assert not note.refused and "now serving a new certificate for shop.example" in note.message
    assert certs.select("shop.example").fingerprint != before
    assert served_names(handshake(certs.context, ca, "new.shop.example")) == ["shop.example", "new.shop.example"]


def test_a_pair_that_does_not_check_out_is_refused_once_and_the_old_one_served(tmp_path: Path, ca: ThrowawayCA) -> None:
    pair = ca.issue(tmp_path, "shop", ["shop.example"])
    certs = EdgeCertificates([pair])
    served = certs.select("shop.example").fingerprint
    # A renewal that writes the certificate first: for a moment the key is the old one's.
    new_cert, new_key = ca.issue(tmp_path / "new", "shop", ["shop.example"])
    os.replace(new_cert, pair[0])
    (note,) = certs.reload()
    assert note.refused and "does not belong to the certificate" in note.message
    assert certs.reload() == []  # reported once per change
    assert certs.select("shop.example").fingerprint == served
    assert served_names(handshake(certs.context, ca, "shop.example")) == ["shop.example"]
    os.replace(new_key, pair[1])  # the key follows
    (note,) = certs.reload()
    assert not note.refused and certs.select("shop.example").fingerprint != served


def test_an_expired_replacement_is_refused(tmp_path: Path, ca: ThrowawayCA) -> None:
    pair = ca.issue(tmp_path, "shop", ["shop.example"])
    certs = EdgeCertificates([pair])
    replace(tmp_path, ca, "shop", ["shop.example"], pair, not_before=datetime.now(UTC) - timedelta(days=9), days=3)
    (note,) = certs.reload()
    assert note.refused and "expired" in note.message


def test_expiring_within_30_days(tmp_path: Path, ca: ThrowawayCA) -> None:
    certs = EdgeCertificates([ca.issue(tmp_path, "soon", ["soon.example"], days=10), ca.issue(tmp_path, "later", ["later.example"])])
    assert [c.label for c in certs.expiring()] == ["soon.example"]
