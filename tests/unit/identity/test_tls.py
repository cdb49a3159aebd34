"""mTLS between real trio endpoints on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from mesh.errors import IdentityError
from mesh.identity import (
    CertificateAuthority,
    IssuedCredentials,
    SpiffeId,
    _tls,
    check_peer_identity,
    client_context,
    handshake_failure_reason,
    peer_identity,
    server_context,
    service_identity,
)

REVIEWS = service_identity("mesh.local", "reviews")
RATINGS = service_identity("mesh.local", "ratings")


@dataclass
class Side:
    """What one end saw: the peer's id (or whatever ``check`` returned) or the failure."""

    result: Any = None
    error: BaseException | None = None
    alpn: str | None = None

    @property
    def reason(self) -> str:
        assert self.error is not None, f"expected a failure, got {self.result!r}"
        return handshake_failure_reason(self.error)


async def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    client_check: Callable[[trio.SSLStream[Any]], Any] = peer_identity,
) -> tuple[Side, Side]:
    """Run one TLS handshake plus a one-byte exchange (TLS 1.3 delivers the server's
    verdict on the client certificate after the client's handshake has finished)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    server, client = Side(), Side()

    async def serve() -> None:
        tls = trio.SSLStream(await listener.accept(), server_ctx, server_side=True)
        try:
            await tls.do_handshake()
            server.alpn = tls.selected_alpn_protocol()
            server.result = peer_identity(tls)
            await tls.send_all(b"!")
            await tls.receive_some(1)
        except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
            server.error = exc
        finally:
            await trio.aclose_forcefully(tls)

    async def connect() -> None:
        tls = trio.SSLStream(await trio.open_tcp_stream("127.0.0.1", port), client_ctx)
        try:
            await tls.do_handshake()
            client.alpn = tls.selected_alpn_protocol()
            if await tls.receive_some(1) != b"!":
                raise ConnectionError("server closed the connection")
            client.result = client_check(tls)
            await tls.send_all(b"!")
        except Exception as exc:  # noqa: BLE001
            client.error = exc
        finally:
            await trio.aclose_forcefully(tls)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(connect)
    await listener.aclose()
    return server, client


def expired(ca: CertificateAuthority, identity: SpiffeId) -> IssuedCredentials:
    return ca.issue(identity, timedelta(hours=1), not_before=datetime.now(UTC) - timedelta(hours=3))


async def test_mutual_tls_both_sides_see_each_others_identity(ca: CertificateAuthority) -> None:
    server, client = await handshake(
        server_context(ca.issue(REVIEWS)), client_context(ca.issue(RATINGS))
    )
    assert server.error is None and client.error is None, (server.error, client.error)
    assert server.result == RATINGS
    assert client.result == REVIEWS
    assert server.alpn == client.alpn == "http/1.1"


async def test_contexts_are_tls13_only_with_required_client_certs(ca: CertificateAuthority) -> None:
    for ctx in (server_context(ca.issue(REVIEWS)), client_context(ca.issue(REVIEWS))):
        assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode is ssl.CERT_REQUIRED
        assert ctx.check_hostname is False


async def test_check_peer_identity_accepts_the_expected_server(ca: CertificateAuthority) -> None:
    _, client = await handshake(
        server_context(ca.issue(REVIEWS)),
        client_context(ca.issue(RATINGS)),
        lambda tls: check_peer_identity(tls, "spiffe://mesh.local/svc/reviews"),
    )
    assert client.error is None and client.result == REVIEWS


async def test_wrong_server_identity_is_refused_with_a_clear_message(
    ca: CertificateAuthority,
) -> None:
    _, client = await handshake(
        server_context(ca.issue(REVIEWS)),
        client_context(ca.issue(RATINGS)),
        lambda tls: check_peer_identity(tls, RATINGS),
    )
    assert isinstance(client.error, IdentityError)
    assert client.error.message == (
        "peer presented spiffe://mesh.local/svc/reviews, expected spiffe://mesh.local/svc/ratings"
    )
    assert client.reason == client.error.message


def signed_for_another_trust_domain(ca: CertificateAuthority, uri: str) -> IssuedCredentials:
    """A leaf for a foreign trust domain signed by our own issuer (``ca.issue`` refuses to)."""
    from mesh.identity import cert_to_pem, generate_key, key_to_pem
    from mesh.identity._certs import make_leaf

    key = generate_key()
    identity = SpiffeId.parse(uri)
    leaf = make_leaf(key.public_key(), identity, ca.issuer_cert, ca._issuer_key)
    chain = cert_to_pem(leaf) + cert_to_pem(ca.issuer_cert)
    return IssuedCredentials(identity, chain, key_to_pem(key), ca.bundle_pem, leaf.not_valid_after_utc)


async def test_a_peer_of_another_trust_domain_is_refused_both_ways(ca: CertificateAuthority) -> None:
    """The chain verifies (our issuer signed it); the trust domain does not: refused by whoever
    holds a mesh.local context, server or client."""
    forged = signed_for_another_trust_domain(ca, "spiffe://other.test/svc/admin")
    server, _ = await handshake(server_context(ca.issue(REVIEWS)), client_context(forged))
    assert server.reason == (
        "the peer presented spiffe://other.test/svc/admin, which is not of this mesh's trust domain mesh.local"
    )
    lenient = server_context(forged)
    lenient.trust_domain = None  # a server that takes anyone: the client must refuse on its own
    _, client = await handshake(lenient, client_context(ca.issue(RATINGS)), lambda tls: check_peer_identity(tls, forged.identity))
    assert "not of this mesh's trust domain mesh.local" in client.reason


async def test_client_from_another_ca_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    # The foreign client trusts our server, so the refusal is the server's own verdict.
    foreign = dataclasses.replace(
        other_ca.issue(RATINGS), bundle_pem=other_ca.bundle_pem + ca.bundle_pem
    )
    server, client = await handshake(server_context(ca.issue(REVIEWS)), client_context(foreign))
    assert "not issued by this mesh's CA" in server.reason
    assert client.error is not None  # trio closes without flushing the alert: the client sees EOF


async def test_server_from_another_ca_is_refused(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    server, client = await handshake(
        server_context(other_ca.issue(REVIEWS)), client_context(ca.issue(RATINGS))
    )
    assert "not issued by this mesh's CA" in client.reason
    assert server.error is not None


async def test_expired_client_certificate_is_refused(ca: CertificateAuthority) -> None:
    server, client = await handshake(
        server_context(ca.issue(REVIEWS)), client_context(expired(ca, RATINGS))
    )
    assert server.reason == "the peer certificate has expired"
    assert client.error is not None


async def test_expired_server_certificate_is_refused(ca: CertificateAuthority) -> None:
    server, client = await handshake(
        server_context(expired(ca, REVIEWS)), client_context(ca.issue(RATINGS))
    )
    assert client.reason == "the peer certificate has expired"
    assert server.error is not None


async def test_client_without_a_certificate_is_refused(ca: CertificateAuthority) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=ca.bundle_pem.decode())
    anonymous.set_alpn_protocols(["http/1.1"])
    server, client = await handshake(server_context(ca.issue(REVIEWS)), anonymous)
    assert server.reason == "the peer presented no client certificate"
    assert client.error is not None


async def test_tls12_client_is_refused(ca: CertificateAuthority) -> None:
    old = client_context(ca.issue(RATINGS))
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    server, client = await handshake(server_context(ca.issue(REVIEWS)), old)
    assert "TLS 1.3" in server.reason
    assert client.error is not None


async def test_alpn_negotiation(ca: CertificateAuthority) -> None:
    server, client = await handshake(
        server_context(ca.issue(REVIEWS), alpn=("h2", "http/1.1", "mesh-tcp")),
        client_context(ca.issue(RATINGS), alpn=("mesh-tcp",)),
    )
    assert server.error is None and client.error is None
    assert server.alpn == client.alpn == "mesh-tcp"


async def test_tempfile_fallback_works_and_leaves_nothing_behind(
    ca: CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(_tls, "_memfd_supported", lambda: False)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    server, client = await handshake(
        server_context(ca.issue(REVIEWS)), client_context(ca.issue(RATINGS))
    )
    assert server.result == RATINGS and client.result == REVIEWS
    assert list(scratch.iterdir()) == []


def test_memfd_is_used_on_linux(ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _tls._memfd_supported():
        pytest.skip("no memfd_create on this platform")
    import tempfile

    def no_temp_files(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a key must not be written to a temporary file when memfd works")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_temp_files)
    server_context(ca.issue(REVIEWS))


def test_mismatched_key_is_a_clear_error(ca: CertificateAuthority) -> None:
    a, b = ca.issue(REVIEWS), ca.issue(RATINGS)
    broken = IssuedCredentials(a.identity, a.cert_chain_pem, b.key_pem, a.bundle_pem, a.not_after)
    with pytest.raises(
        IdentityError, match="cannot use the credentials of spiffe://mesh.local/svc/reviews"
    ):
        server_context(broken)


class _FakeTLS:
    def __init__(self, der: bytes | None, verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED) -> None:
        self._der = der
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if verify_mode is ssl.CERT_NONE:
            self.context.check_hostname = False
        self.context.verify_mode = verify_mode

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return self._der


def test_peer_identity_edge_cases(ca: CertificateAuthority) -> None:
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(IdentityError, match="presented no certificate"):
        peer_identity(_FakeTLS(None))
    der = ca.issue(REVIEWS).leaf.public_bytes(serialization.Encoding.DER)
    assert peer_identity(_FakeTLS(der)) == REVIEWS
    with pytest.raises(IdentityError, match="not verified"):
        peer_identity(_FakeTLS(der, ssl.CERT_NONE))
    root_der = ca.root_cert.public_bytes(serialization.Encoding.DER)
    with pytest.raises(IdentityError):
        peer_identity(_FakeTLS(root_der))


def test_failure_reason_falls_back_to_a_line() -> None:
    assert "TLS handshake" in handshake_failure_reason(trio.BrokenResourceError())
    wrapped = trio.BrokenResourceError()
    wrapped.__cause__ = IdentityError("peer presented x, expected y")
    assert handshake_failure_reason(wrapped) == "peer presented x, expected y"


# Plain blocking sockets flush the TLS alert a refusing server sends, so the
# client's side of the story (what the peer told us) can be checked too.


def socket_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[Side, Side]:
    import socket
    import threading

    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    server, client = Side(), Side()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                server.result = peer_identity(tls)
                tls.sendall(b"!")
                tls.recv(1)
        except Exception as exc:  # noqa: BLE001
            server.error = exc
        finally:
            left.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right) as tls:
            if tls.recv(1) != b"!":
                raise ConnectionError("server closed the connection")
            client.result = peer_identity(tls)
            tls.sendall(b"!")
    except Exception as exc:  # noqa: BLE001
        client.error = exc
    finally:
        right.close()
        thread.join(10)
    return server, client


def test_blocking_sockets_see_each_others_identity(ca: CertificateAuthority) -> None:
    server, client = socket_handshake(
        server_context(ca.issue(REVIEWS)), client_context(ca.issue(RATINGS))
    )
    assert (server.result, client.result) == (RATINGS, REVIEWS)


def test_refused_client_learns_why_from_the_alert(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    serving = server_context(ca.issue(REVIEWS))

    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=ca.bundle_pem.decode())
    server, client = socket_handshake(serving, anonymous)
    assert server.reason == "the peer presented no client certificate"
    assert client.reason == "the peer requires a client certificate and we sent none"

    server, client = socket_handshake(serving, client_context(expired(ca, RATINGS)))
    assert server.reason == "the peer certificate has expired"
    assert client.reason == "the peer refused our certificate: it has expired"

    foreign = dataclasses.replace(
        other_ca.issue(RATINGS), bundle_pem=other_ca.bundle_pem + ca.bundle_pem
    )
    server, client = socket_handshake(serving, client_context(foreign))
    assert "not issued by this mesh's CA" in server.reason
    assert "does not trust our certificate's CA" in client.reason


async def test_a_revoked_peer_is_refused_both_ways_and_others_still_pass(ca: CertificateAuthority) -> None:
    """The holder's RevocationList is looked up after every handshake, by server and client alike."""
    from mesh.identity import CertificateRevoked, RevocationList, parse_serial, serial_text, serials_from

    revoked_creds, other_creds = ca.issue(RATINGS), ca.issue(RATINGS)
    revoked_serial = revoked_creds.leaf.serial_number
    revoked = RevocationList()
    assert revoked.replace(serials_from([serial_text(revoked_serial), "not a serial", 7])) == {revoked_serial}
    assert revoked.replace([revoked_serial]) == frozenset()  # nothing new

    server, _ = await handshake(server_context(ca.issue(REVIEWS), revoked=revoked), client_context(revoked_creds))
    assert isinstance(server.error, CertificateRevoked)
    assert server.reason == (
        f"the peer presented {RATINGS} with certificate {serial_text(revoked_serial)}, which an operator revoked"
    )
    server, _ = await handshake(server_context(ca.issue(REVIEWS), revoked=revoked), client_context(other_creds))
    assert server.error is None and server.result == RATINGS

    _, client = await handshake(
        server_context(revoked_creds),
        client_context(ca.issue(REVIEWS), revoked=revoked),
        lambda tls: check_peer_identity(tls, RATINGS),
    )
    assert isinstance(client.error, CertificateRevoked)
    assert parse_serial(f"0x{revoked_serial:X}") == parse_serial(":".join(f"{b:02X}" for b in revoked_serial.to_bytes(20, "big")).lstrip("0:")) == revoked_serial


@pytest.mark.parametrize("text", ["", "zz", "0", "-1", "f" * 41])
def test_bad_serials_are_refused(text: str) -> None:
    from mesh.identity import parse_serial

    with pytest.raises(IdentityError):
        parse_serial(text)
