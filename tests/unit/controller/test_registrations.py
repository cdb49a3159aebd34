"""Registrations: a loopback address registered from another host is refused, with a hint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mesh.controller._api import ApiError, ApiRequest
from mesh.controller._app import ControllerApp
from mesh.controller._app_proxies import loopback_from_another_host
from mesh.controller._durable import Durable
from mesh.controller._state import ControllerState
from mesh.controller._store_embedded import EmbeddedStore
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


async def opened_app(tmp_path: Path) -> ControllerApp:
    state = ControllerState(trust_domain=DOMAIN)
    store = EmbeddedStore(tmp_path / "mesh.db")
    await store.open()
    durable = Durable(store, state)
    await durable.open("sha256:test", "token")
    return ControllerApp(state, None, "token", "10.77.1.1:4190", durable)


async def test_a_loopback_address_from_another_host_is_refused_with_a_hint(tmp_path: Path) -> None:
    """Before, it was kept and only the controller's own log said that every other host would dial
    itself; now the proxy hears it (and logs it, see ControlLink), and nothing is handed out."""
    app = await opened_app(tmp_path)
    with pytest.raises(ApiError) as refused:
        await app.register(registration("127.0.0.1:4143", "10.77.1.2", "10.77.1.1"))
    assert refused.value.status == 400
    assert "web-abc123 registers the loopback address 127.0.0.1:4143 from 10.77.1.2" in refused.value.message
    assert "other hosts cannot reach it" in refused.value.message
    assert "leave --inbound out" in (refused.value.hint or "") and "mesh join" in (refused.value.hint or "")
    assert app.state.entries() == []


@pytest.mark.parametrize("remote", ["10.77.1.1", "127.0.0.1"])
async def test_a_loopback_address_from_the_controllers_own_host_is_kept(
    remote: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    app = await opened_app(tmp_path)
    caplog.set_level(logging.INFO, logger="mesh.controller")
    for _ in range(2):  # the second is a heartbeat: nothing new, nothing logged
        response = await app.register(registration("127.0.0.1:4143", remote, "10.77.1.1"))
        assert response.status == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [(e.endpoint.address, e.host) for e in app.state.entries()] == [("127.0.0.1:4143", "10.77.1.1")]
