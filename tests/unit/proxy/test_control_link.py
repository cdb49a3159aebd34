"""The proxy's controller link: it never applies an older config, and it learns every controller."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mesh.discovery import ControllerAddress, MemoryRegistry
from mesh.proxy._control import ControlLink


class Recorder:
    """Stands in for the Proxy: records the snapshots whose policies it was given."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def apply_policy_snapshot(self, snapshot: dict[str, Any]) -> None:
        self.applied.append(int(snapshot["config_version"]))


def link() -> tuple[ControlLink, Recorder]:
    proxy = Recorder()
    first = ControllerAddress("127.0.0.1", 4190, "spiffe://td/svc/mesh-controller", b"bundle")
    return ControlLink(proxy, first, MemoryRegistry(), "web-1"), proxy  # type: ignore[arg-type]


def snapshot(version: int, config_version: int, controllers: list[str] | None = None) -> dict[str, Any]:
    return {"version": version, "config_version": config_version, "endpoints": {}, "controllers": controllers or []}


def test_an_older_config_is_refused_logged_once_and_shown(caplog: pytest.LogCaptureFixture) -> None:
    control, proxy = link()
    caplog.set_level(logging.WARNING, logger="mesh.proxy.control")
    assert control.apply_snapshot(snapshot(9, 4))
    assert not control.apply_snapshot(snapshot(1, 0))  # a controller that lost its store
    assert not control.apply_snapshot(snapshot(2, 0))
    assert proxy.applied == [4] and control.config_version == 4
    described = control.describe()["refused"]
    assert described["config_version"] == 0 and described["kept_version"] == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "offers config version 0, older than version 4 in force here" in warnings[0]
    # The same version again (an empty store that was applied to since) is taken, and the refusal is over.
    assert control.apply_snapshot(snapshot(3, 4))
    assert control.describe()["refused"] is None and proxy.applied == [4, 4]


def test_controllers_are_learned_from_snapshots_keeping_the_current_first() -> None:
    control, _ = link()
    control.apply_snapshot(snapshot(1, 0, ["127.0.0.1:5190", "127.0.0.1:4190"]))
    assert control.describe()["controllers"] == ["127.0.0.1:4190", "127.0.0.1:5190"]
    assert control.controllers[1].identity == control.controllers[0].identity
    assert not control._next_controller() and control.controller.address == "127.0.0.1:5190"
    assert control._next_controller()  # a whole round: back to the first, time to back off
    control.apply_snapshot(snapshot(2, 0, ["bad address"]))
    assert [c.address for c in control.controllers] == ["127.0.0.1:4190"]
