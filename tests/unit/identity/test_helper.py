"""The identity helper (mesh/identity/_helper.py): the child's answers, and a sidecar asking a real one."""

from __future__ import annotations

import io
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.errors import IdentityError
from mesh.home import MeshHome
from mesh.identity import CertificateAuthority, IssuedCredentials, serve_helper, service_identity
from mesh.proxy._identity import ask_identity_helper


def answer_of(request: Any) -> dict[str, Any]:
    out = io.BytesIO()
    serve_helper(io.BytesIO(request if isinstance(request, bytes) else json.dumps(request).encode()), out)
    return json.loads(out.getvalue())


def test_a_new_key_and_its_csr() -> None:
    answer = answer_of({"op": "new-key", "identity": "spiffe://h.test/svc/web"})
    key = serialization.load_pem_private_key(answer["key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    csr = x509.load_pem_x509_csr(answer["csr"].encode())
    assert csr.is_signature_valid
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://h.test/svc/web"]
    # Every request, a new key.
    assert answer_of({"op": "new-key", "identity": "spiffe://h.test/svc/web"})["key"] != answer["key"]


def test_issue_from_the_local_ca(tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "home")
    CertificateAuthority.init(home, "h.test")
    answer = answer_of({"op": "issue", "home": str(home.root), "service": "web", "ttl_seconds": 120})
    creds = IssuedCredentials.from_pem(answer["chain"].encode(), answer["key"].encode(), answer["bundle"].encode())
    assert str(creds.identity) == answer["identity"] == "spiffe://h.test/svc/web"
    assert timedelta(seconds=100) < creds.not_after - creds.leaf_facts.not_valid_before_utc <= timedelta(seconds=181)
    no_ca = answer_of({"op": "issue", "home": str(tmp_path / "nothing"), "service": "web", "ttl_seconds": 120})
    assert "ca init" in (no_ca.get("hint") or "") and no_ca["error"]


def test_check_says_what_load_credentials_says(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(MeshHome(tmp_path / "home"), "h.test")
    web = ca.issue(service_identity("h.test", "web"))
    other = ca.issue(service_identity("h.test", "other"))
    request = {
        "op": "check",
        "cert_path": "/x/cert.pem",
        "key_path": "/x/key.pem",
        "bundle_path": "/x/bundle.pem",
        "chain_pem": web.cert_chain_pem.decode(),
        "key_pem": web.key_pem.decode(),
        "bundle_pem": web.bundle_pem.decode(),
    }
    assert answer_of(request) == {"identity": "spiffe://h.test/svc/web"}
    wrong = answer_of({**request, "key_pem": other.key_pem.decode()})
    assert wrong["error"] == "private key /x/key.pem does not belong to the certificate /x/cert.pem"
    junk = answer_of({**request, "key_pem": "\x00\xffjunk"})
    assert junk["error"] == "/x/key.pem is not a valid unencrypted PEM private key"


@pytest.mark.parametrize("request_bytes", [b"", b"not json", b'{"op": "sing"}', b"[1]", b'{"op": "new-key"}'])
def test_a_request_it_does_not_understand(request_bytes: bytes) -> None:
    assert answer_of(request_bytes) == {"error": "the identity helper got a request it does not understand"}


@pytest.mark.process
def test_a_sidecar_asks_a_real_helper_process() -> None:
    answer = trio.run(ask_identity_helper, {"op": "new-key", "identity": "spiffe://h.test/svc/web"})
    assert x509.load_pem_x509_csr(answer["csr"].encode()).is_signature_valid
    with pytest.raises(IdentityError, match="does not understand"):
        trio.run(ask_identity_helper, {"op": "sing"})


@pytest.mark.process
def test_a_helper_that_dies_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import mesh.self_command

    monkeypatch.setattr(mesh.self_command, "mesh_command", lambda: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(IdentityError, match="identity helper process .* failed with exit status 3"):
        trio.run(ask_identity_helper, {"op": "new-key", "identity": "spiffe://h.test/svc/web"})
    monkeypatch.setattr(mesh.self_command, "mesh_command", lambda: ["/nonexistent/python"])
    with pytest.raises(IdentityError, match="cannot start the identity helper process /nonexistent/python"):
        trio.run(ask_identity_helper, {"op": "new-key", "identity": "spiffe://h.test/svc/web"})
