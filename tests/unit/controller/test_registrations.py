"""Registrations: a loopback address registered from another host is kept, and flagged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mesh.controller._api import ApiRequest
from mesh.controller._app import ControllerApp, loopback_from_another_host
from mesh.controller._durable import Durable
from mesh.controller._store_embedded import EmbeddedStore
from mesh.controller._state import ControllerState
from mesh.identity import service_identity

DOMAIN = "reg.test"


@pytest.mark.parametrize(
    ("endpoint", "remote", "local", "flagged"),
    [
        ("127.0.0.1", "10.77.1.2", "10.77.1.1", True),  # a proxy on another host, inbound on its loopback
        ("127.0.0.1", "127.0.0.1", "127.0.0.1", False),  # the controller's own host, over loopback
        ("127.0.0.1", "10.77.1.1", "10.77.1.1", False),  # its own host, over the address the controller listens on
        ("10.77.1.2", "10.77.1.2", "10.77.1.1", False),  # a reachable address
        ("127.0.0.1", None, None, False),  # unknown peer: no guess
        ("web.example", "10.77.1.2", "10.77.1.1", False),  # a host name: whoever resolves it decides
    ],
)
def test_loopback_from_another_host(endpoint: str, remote: str | None, local: str | None, flagged: bool) -> None:
    assert loopback_from_another_host(endpoint, remote, local) is flagged


def registration(address: str, remote: str, local: str) -> ApiRequest:
    body = {"service": "web", "instance": "web-abc123", "address": address, "ttl_seconds": 30}
    return ApiRequest(
        "POST", "/v1/registrations", {}, {}, json.dumps(body).encode(), service_identity(DOMAIN, "web"), remote, local
    )


@pytest.mark.parametrize("remote", ["10.77.1.2", "10.77.1.1"])
async def test_register_warns_once_for_a_loopback_address_from_afar(
    remote: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    state = ControllerState(trust_domain=DOMAIN)
    store = EmbeddedStore(tmp_path / "mesh.db")
    await store.open()
    durable = Durable(store, state)
    await durable.open("sha256:test", "token")
    app = ControllerApp(state, None, "token", "10.77.1.1:4190", durable)
    caplog.set_level(logging.INFO, logger="mesh.controller")
    for _ in range(2):  # the second is a heartbeat: nothing new, nothing logged
        response = await app.register(registration("127.0.0.1:4143", remote, "10.77.1.1"))
        assert response.status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Kept either way: a proxy on its own host can still call it.
    assert [e.endpoint.address for e in app.state.entries()] == ["127.0.0.1:4143"]
    if remote == "10.77.1.1":  # the controller's own host
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert "web-abc123 registered the loopback address 127.0.0.1:4143 from 10.77.1.2" in warnings[0]
        assert "other hosts cannot reach it" in warnings[0] and "--inbound" in warnings[0]
