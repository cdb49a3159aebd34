"""Hosts and roles at the controller: who may read, who may write, host and operator identities,
gateways that are never endpoints, proxies that die, and `mesh status --hosts`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from mesh.controller import _app_proxies
from mesh.controller._api import ApiError, ApiRequest
from mesh.controller._app import ControllerApp
from mesh.controller._durable import Durable
from mesh.controller._fanin_admin import proxy_targets
from mesh.controller._hosts import hosts_view
from mesh.controller._state import ControllerState, EndpointEntry
from mesh.controller._store_embedded import EmbeddedStore
from mesh.discovery import Endpoint
from mesh.home import MeshHome
from mesh.identity import (
    CertificateAuthority,
    SpiffeId,
    generate_key,
    host_identity,
    load_certificates,
    make_csr,
    operator_identity,
    service_identity,
    spiffe_id_of,
)

TD = "hosts.test"
HERE = "10.77.1.1:4190"
HOST_B = host_identity(TD, "b")
OPERATOR = operator_identity(TD, "ada")
WEB = service_identity(TD, "web")


async def make_app(tmp_path: Path, name: str = "mesh.db", address: str = HERE) -> ControllerApp:
    home = MeshHome(tmp_path / "home")
    ca = CertificateAuthority.load(home) if home.has_ca() else CertificateAuthority.init(home, trust_domain=TD)
    state = ControllerState(trust_domain=TD)
    store = EmbeddedStore(tmp_path / name)
    await store.open()
    durable = Durable(store, state)
    await durable.open("sha256:test", "token")
    return ControllerApp(state, ca, "token", address, durable, host_address="10.77.1.1")


def request(
    method: str, path: str, peer: SpiffeId | None, body: Any = None, remote: str = "10.77.1.2", query: dict | None = None
) -> ApiRequest:
    raw = json.dumps(body).encode() if body is not None else b""
    return ApiRequest(method, path, query or {}, {}, raw, peer, remote, "10.77.1.1")


def csr(identity: SpiffeId) -> str:
    return make_csr(generate_key(), identity).decode()


async def test_a_host_identity_reads_and_never_writes(tmp_path: Path) -> None:
    app = await make_app(tmp_path)
    for path in ("/v1/status", "/v1/hosts", "/v1/store", "/v1/config/history"):
        assert (await app.handle(request("GET", path, HOST_B))).status == 200, path
    writes = [
        ("POST", "/v1/config", {"config": {"mesh": {"trust_domain": TD}}}),
        ("POST", "/v1/faults", {"service": "web", "abort_status": 503}),
        ("POST", "/v1/config/rollback", {"version": 1}),
        ("POST", "/v1/operator-grants", {"name": "eve"}),
        ("GET", "/v1/certificates", None),
    ]
    for method, path, body in writes:
        with pytest.raises(ApiError) as refused:
            await app.handle(request(method, path, HOST_B, body))
        assert refused.value.status == 403, path
        assert "is a host identity: it may read the mesh, not change it" in refused.value.message
        assert "mesh operator grant" in (refused.value.hint or "")
    # Query-string values in taps are for operators only.
    with pytest.raises(ApiError) as refused:
        await app.handle(request("GET", "/v1/tap", HOST_B, query={"show_query": "1"}))
    assert refused.value.status == 403
    # A service reads nothing of the sort.
    with pytest.raises(ApiError) as refused:
        await app.handle(request("GET", "/v1/status", WEB))
    assert refused.value.status == 403 and "operators and joined hosts only" in refused.value.message


async def test_joining_gives_a_host_identity_with_the_token_only(tmp_path: Path) -> None:
    app = await make_app(tmp_path)
    body = {"kind": "host", "name": "b", "csr": csr(HOST_B), "address": "10.77.1.2", "mesh_version": "9.9"}
    with pytest.raises(ApiError) as refused:
        await app.handle(request("POST", "/v1/certificates", None, {**body, "token": "wrong"}))
    assert refused.value.status == 403
    response = await app.handle(request("POST", "/v1/certificates", None, {**body, "token": "token"}))
    leaf = load_certificates(response.body["certificate"].encode())[0]
    assert str(spiffe_id_of(leaf)) == f"spiffe://{TD}/host/b"
    assert app.state.joined_hosts["10.77.1.2"]["name"] == "b"
    # Renewal by the host itself; never for another name, never by a service.
    renewed = await app.handle(request("POST", "/v1/certificates", HOST_B, body))
    assert renewed.status == 200
    for peer, name in ((HOST_B, "c"), (WEB, "b")):
        with pytest.raises(ApiError) as refused:
            await app.handle(request("POST", "/v1/certificates", peer, {**body, "name": name}))
        assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        await app.handle(request("POST", "/v1/certificates", None, {**body, "token": "token", "name": "B!"}))
    assert refused.value.status == 400 and "invalid host name" in refused.value.message


async def test_an_operator_grant_works_once(tmp_path: Path) -> None:
    app = await make_app(tmp_path)
    granted = await app.handle(request("POST", "/v1/operator-grants", OPERATOR, {"name": "ops-c", "ttl_seconds": 120}))
    grant = granted.body["grant"]
    stored = json.dumps([item.value.decode() for item in (await app.durable.store.range(""))[0]])
    assert grant not in stored  # kept by its hash only
    body = {"kind": "operator", "grant": grant, "csr": csr(operator_identity(TD, "x")), "token": "token"}
    with pytest.raises(ApiError) as refused:
        await app.handle(request("POST", "/v1/certificates", None, {**body, "token": "wrong"}))
    assert refused.value.status == 403 and "join token" in refused.value.message
    response = await app.handle(request("POST", "/v1/certificates", None, body))
    leaf = load_certificates(response.body["certificate"].encode())[0]
    assert str(spiffe_id_of(leaf)) == f"spiffe://{TD}/operator/ops-c"  # the grant's name, not the CSR's
    with pytest.raises(ApiError) as refused:
        await app.handle(request("POST", "/v1/certificates", None, body))
    assert refused.value.status == 403 and "unknown, already used or expired" in refused.value.message
    for ttl in (10, 10**6, "1h", True):
        with pytest.raises(ApiError) as refused:
            await app.handle(request("POST", "/v1/operator-grants", OPERATOR, {"name": "x", "ttl_seconds": ttl}))
        assert refused.value.status == 400


async def test_a_gateway_is_seen_by_the_fan_in_and_is_never_an_endpoint(tmp_path: Path) -> None:
    app = await make_app(tmp_path)
    gateway = service_identity(TD, "gateway")
    body = {"service": "gateway", "instance": "gateway-1", "address": "10.77.1.2:4000", "role": "gateway", "time": 1.0}
    assert (await app.handle(request("POST", "/v1/registrations", gateway, body))).status == 200
    web = {"service": "web", "instance": "web-1", "address": "10.77.1.2:4001"}
    assert (await app.handle(request("POST", "/v1/registrations", WEB, web))).status == 200
    assert list(app.state.snapshot()["endpoints"]) == ["web"]
    assert [t.service for t in proxy_targets(app.state)] == ["gateway", "web"]
    assert {e["role"] for e in app.status_view()["services"]["gateway"]} == {"gateway"}
    with pytest.raises(ApiError) as refused:
        await app.handle(request("POST", "/v1/registrations", WEB, {**web, "role": "boss"}))
    assert refused.value.status == 400


async def test_a_proxy_whose_watch_ends_is_withdrawn_unless_it_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_app_proxies, "DEPARTURE_GRACE", 0.05)
    app = await make_app(tmp_path)
    said_goodbye: list[str] = []
    app.on_departure = lambda entry: said_goodbye.append(entry.endpoint.address)
    for instance, port in (("web-1", 4001), ("web-2", 4002)):
        body = {"service": "web", "instance": instance, "address": f"10.77.1.2:{port}"}
        await app.handle(request("POST", "/v1/registrations", WEB, body))
    # web-1 died: its watch ended and nothing came back.
    await app._withdraw_if_departed("web-1")
    assert [e.instance for e in app.state.entries()] == ["web-2"] and said_goodbye == ["10.77.1.2:4001"]
    # web-2 reconnected within the grace (a new watch here): kept.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app._withdraw_if_departed, "web-2")
        app.state.watch_started("web-2", "web", str(WEB))
    assert [e.instance for e in app.state.entries()] == ["web-2"]
    app.state.watches.clear()
    # web-2 moved to another controller of the mesh, which wrote its registration anew: kept.
    other = await make_app(tmp_path, address="10.77.1.9:4190")  # its own store file: mimic its write here
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app._withdraw_if_departed, "web-2")
        await trio.sleep(0.01)
        moved = EndpointEntry(app.state.entry("web-2").endpoint, "web-2", "registration", controller=other.address)
        await app.durable.register(moved, 30)
    assert [e.instance for e in app.state.entries()] == ["web-2"]
    # A registration another controller took is not this one's to withdraw.
    await app._withdraw_if_departed("web-2")
    assert [e.instance for e in app.state.entries()] == ["web-2"]


def test_hosts_view_puts_every_source_together() -> None:
    state = ControllerState(trust_domain=TD, clock=lambda: 1000.0)
    state.controllers = {HERE: {"version": "1.0"}, "10.77.1.5:4190": {"version": "1.1"}}
    state.joined_hosts = {
        "10.77.1.2": {"name": "b", "version": "1.0", "joined_at": 900.0},
        "10.77.1.3": {"name": "c", "version": "1.0", "joined_at": 950.0, "operator": True},
    }
    state.heard_from("10.77.1.2", "1.0", 1000.25)
    state.heard_from("10.77.1.1", "1.0", 990.0)  # this controller's own host: no skew with itself
    state.upsert(EndpointEntry(Endpoint("web", "10.77.1.2", 4001), "web-1", "registration", host="10.77.1.2"))
    state.upsert(EndpointEntry(Endpoint("gateway", "127.0.0.1", 4002), "gw-1", "registration", role="gateway", host="10.77.1.1"))
    state.upsert(EndpointEntry(Endpoint("db", "10.77.1.7", 5432), "zeroconf:10.77.1.7:5432", "zeroconf"))
    rows = {r["address"]: r for r in hosts_view(state, HERE, "10.77.1.1", "1.0", 1000.0)}
    assert list(rows) == ["10.77.1.1", "10.77.1.2", "10.77.1.3", "10.77.1.5", "10.77.1.7"]
    here = rows["10.77.1.1"]
    assert here["this"] and here["roles"] == ["controller"] and here["gateways"] == ["gateway"] and here["skew_seconds"] == 0
    b = rows["10.77.1.2"]
    assert (b["name"], b["roles"], b["services"], b["skew_seconds"], b["last_seen"]) == ("b", ["joined"], ["web"], 0.25, 1000.0)
    assert rows["10.77.1.3"]["roles"] == ["joined", "operator"] and rows["10.77.1.3"]["last_seen"] == 950.0
    assert rows["10.77.1.5"]["roles"] == ["controller"] and rows["10.77.1.5"]["version"] == "1.1"
    assert rows["10.77.1.7"]["roles"] == ["zeroconf"] and rows["10.77.1.7"]["services"] == ["db"]
