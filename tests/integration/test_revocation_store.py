"""Revocations kept in the store (`mesh ca revoke`), on both backends: the embedded SQLite file
and a real etcd. Through the controller's API handlers, with a real CA signing real certificates."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from mesh.config import parse_store_url
from mesh.controller._api import ApiError, ApiRequest
from mesh.controller._app import ControllerApp
from mesh.controller._durable import Durable
from mesh.controller._state import ControllerState
from mesh.controller._store_embedded import EmbeddedStore
from mesh.controller._store_etcd import EtcdStore
from mesh.home import MeshHome
from mesh.identity import (
    CertificateAuthority,
    fingerprint,
    generate_key,
    load_certificates,
    make_csr,
    operator_identity,
    service_identity,
)
from tests.integration.etcd import EtcdCluster

pytestmark = pytest.mark.timeout(60)

DOMAIN = "revoke.test"
OPERATOR = operator_identity(DOMAIN, "alice")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), size=1)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(MeshHome(tmp_path_factory.mktemp("home")), DOMAIN)


class Backend:
    """Opens stores on one backend; every store opened here sees the same data (same file or prefix)."""

    def __init__(self, kind: str, tmp_path: Path, etcd: EtcdCluster | None) -> None:
        self.kind = kind
        self.path = tmp_path / "mesh.db"
        self.url = f"{etcd.url}/{tmp_path.name}" if etcd else ""
        self.stores: list[Any] = []

    async def app(self, ca: CertificateAuthority, address: str = "127.0.0.1:4190") -> ControllerApp:
        url = parse_store_url(self.url or "embedded")
        store: Any = EmbeddedStore(self.path) if url.embedded else EtcdStore(url)
        await store.open()
        self.stores.append(store)
        state = ControllerState(trust_domain=DOMAIN)
        durable = Durable(store, state, "" if url.embedded else url.prefix)
        await durable.open(fingerprint(ca.root_cert), "token")
        return ControllerApp(state, ca, "token", address, durable)

    async def aclose(self) -> None:
        for store in self.stores:
            await store.aclose()


@pytest.fixture(params=["embedded", "etcd"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    etcd = request.getfixturevalue("etcd") if request.param == "etcd" else None
    opened = Backend(request.param, tmp_path, etcd)
    try:
        yield opened
    finally:
        await opened.aclose()


def call(method: str, path: str, body: Any = None, peer: Any = OPERATOR, serial: int | None = None) -> ApiRequest:
    data = json.dumps(body).encode() if body is not None else b""
    return ApiRequest(method, path, {}, {}, data, peer, "127.0.0.1", "127.0.0.1", peer_serial=serial)


async def signed(app: ControllerApp, service: str) -> int:
    """A certificate for ``service`` signed through the API with the join token; its serial."""
    csr = make_csr(generate_key(), service_identity(DOMAIN, service)).decode()
    response = await app.sign(call("POST", "/v1/certificates", {"service": service, "csr": csr, "token": "token"}, None))
    return load_certificates(response.body["certificate"].encode())[0].serial_number


async def test_revoke_by_serial_is_stored_listed_and_survives_a_restart(backend: Backend, ca: CertificateAuthority) -> None:
    app = await backend.app(ca)
    web, other = await signed(app, "web"), await signed(app, "api")
    response = await app.handle(call("POST", "/v1/revocations", {"serial": format(web, "X"), "reason": "key leaked"}))
    assert [r["serial"] for r in response.body["revoked"]] == [format(web, "x")]
    assert response.body["revoked"][0]["revoked_by"] == str(OPERATOR)
    assert app.state.snapshot()["revoked"] == [format(web, "x")]
    issued = {c["serial"]: c for c in (await app.certificates(call("GET", "/v1/certificates"))).body["certificates"]}
    assert issued[format(web, "x")]["revoked"]["reason"] == "key leaked"
    assert issued[format(other, "x")]["revoked"] is None
    again = await app.handle(call("POST", "/v1/revocations", {"serial": format(web, "x")}))
    assert again.body["revoked"] == [] and len(again.body["already_revoked"]) == 1

    restarted = await backend.app(ca)  # a new controller process on the same store
    assert restarted.state.snapshot()["revoked"] == [format(web, "x")]
    listed = await restarted.handle(call("GET", "/v1/revocations"))
    assert [r["reason"] for r in listed.body["revocations"]] == ["key leaked"]


async def test_a_revoked_certificate_cannot_renew_or_call_the_api(backend: Backend, ca: CertificateAuthority) -> None:
    app = await backend.app(ca)
    web = await signed(app, "web")
    await app.handle(call("POST", "/v1/revocations", {"identity": "web"}))
    csr = make_csr(generate_key(), service_identity(DOMAIN, "web")).decode()
    renewal = call("POST", "/v1/certificates", {"service": "web", "csr": csr}, service_identity(DOMAIN, "web"), web)
    with pytest.raises(ApiError) as refused:
        await app.handle(renewal)
    assert refused.value.status == 403
    assert f"the certificate {web:x} of spiffe://{DOMAIN}/svc/web was revoked (by {OPERATOR}" in refused.value.message
    # Another certificate of the same service (a new proxy, with the join token) works.
    fresh = await signed(app, "web")
    renewed = call("POST", "/v1/certificates", {"service": "web", "csr": csr}, service_identity(DOMAIN, "web"), fresh)
    assert (await app.handle(renewed)).status == 200


async def test_revoke_every_certificate_of_an_identity(backend: Backend, ca: CertificateAuthority) -> None:
    app = await backend.app(ca)
    first, second, other = await signed(app, "web"), await signed(app, "web"), await signed(app, "api")
    response = await app.handle(call("POST", "/v1/revocations", {"identity": f"spiffe://{DOMAIN}/svc/web"}))
    assert sorted(r["serial"] for r in response.body["revoked"]) == sorted([format(first, "x"), format(second, "x")])
    assert format(other, "x") not in app.state.revoked


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"serial": "abc123"}, 404, "no certificate with serial abc123 in force"),
        ({"serial": "not-hex"}, 400, "expected hexadecimal digits"),
        ({"identity": "nobody"}, 404, f"no certificate of spiffe://{DOMAIN}/svc/nobody in force"),
        ({"identity": "spiffe://other.test/svc/web"}, 400, "not of this mesh's trust domain"),
        ({}, 400, "expected"),
        ({"serial": "ab", "identity": "web"}, 400, "expected"),
        ({"serial": "ab", "reason": "x" * 201}, 400, "at most 200"),
    ],
)
async def test_bad_revocations_are_refused_clearly(
    backend: Backend, ca: CertificateAuthority, body: dict[str, Any], status: int, words: str
) -> None:
    app = await backend.app(ca)
    await signed(app, "web")
    with pytest.raises(ApiError) as refused:
        await app.handle(call("POST", "/v1/revocations", body))
    assert refused.value.status == status and words in refused.value.message
    assert app.state.revoked == {}


async def test_only_operators_revoke(backend: Backend, ca: CertificateAuthority) -> None:
    app = await backend.app(ca)
    web = await signed(app, "web")
    for peer in (service_identity(DOMAIN, "web"), service_identity(DOMAIN, "api"), None):
        with pytest.raises(ApiError) as refused:
            await app.handle(call("POST", "/v1/revocations", {"serial": format(web, "x")}, peer))
        assert refused.value.status in (401, 403)
    assert app.state.revoked == {}


async def test_a_revocation_reaches_another_controller_on_the_same_etcd(
    etcd: EtcdCluster, tmp_path: Path, ca: CertificateAuthority
) -> None:
    """Several controllers share an etcd store (one per embedded file): the second learns it by its watch."""
    backend = Backend("etcd", tmp_path, etcd)
    try:
        await _two_controllers(backend, ca)
    finally:
        await backend.aclose()


async def _two_controllers(backend: Backend, ca: CertificateAuthority) -> None:
    first = await backend.app(ca, "127.0.0.1:4190")
    second = await backend.app(ca, "127.0.0.1:4191")
    web = await signed(first, "web")
    async with trio.open_nursery() as nursery:
        await nursery.start(second.durable.run)
        await first.handle(call("POST", "/v1/revocations", {"serial": format(web, "x")}))
        with trio.fail_after(5):
            while format(web, "x") not in second.state.revoked:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert second.state.snapshot()["revoked"] == [format(web, "x")]


async def test_a_revocation_goes_when_its_certificate_would_have_expired(tmp_path: Path, ca: CertificateAuthority) -> None:
    """On a lease until the certificate's notAfter plus the clock-skew allowance (embedded store, its
    clock driven by the test; etcd's leases are the same model, in real time)."""
    now = [0.0]
    store = EmbeddedStore(tmp_path / "mesh.db", clock=lambda: now[0])
    await store.open()
    state = ControllerState(trust_domain=DOMAIN)
    durable = Durable(store, state)
    await durable.open(fingerprint(ca.root_cert), "token")
    app = ControllerApp(state, ca, "token", "127.0.0.1:4190", durable)
    try:
        web = await signed(app, "web")
        await app.handle(call("POST", "/v1/revocations", {"serial": format(web, "x")}))
        left = state.revoked[format(web, "x")]["not_after"] - time.time()
        changed = trio.Event()
        durable.on_change = changed.set
        async with trio.open_nursery() as nursery:
            await nursery.start(durable.run)
            now[0] = left + 30  # expired, but within the skew allowance: still refused
            store.expire_leases()
            await trio.sleep(0.2)
            assert format(web, "x") in state.revoked
            now[0] = left + 61
            store.expire_leases()
            with trio.fail_after(5):
                await changed.wait()
                while state.revoked:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert state.snapshot()["revoked"] == []
    finally:
        await store.aclose()
