"""`mesh inject` hands its network flags to the sidecar as `mesh proxy` does (no process started)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import mesh.inject

    seen: list[Any] = []

    def fake_run(options: Any) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(mesh.inject, "run_inject_command", fake_run)
    return seen


def inject(*args: str) -> None:
    from mesh.cli import app

    result = CliRunner().invoke(app, ["inject", *args, "--", "sleep", "1"])
    assert result.exit_code == 0, result.output


def test_the_host_decides_by_default(captured: list[Any]) -> None:
    # Not given: the sidecar takes its host's address and interface (MESH_HOME/host.json), else loopback.
    inject("--name", "web")
    assert captured[0].proxy_args["interfaces"] is None
    assert captured[0].proxy_args["inbound"] is None
    assert captured[0].proxy_args["advertise"] is None


def test_interface_and_advertise_reach_the_sidecar(captured: list[Any]) -> None:
    # One LAN interface for zeroconf, a wildcard inbound and the address peers dial.
    inject(
        "--name", "web", "--inbound", "0.0.0.0:0", "--interface", "10.0.0.5", "--interface", "127.0.0.1",
        "--advertise", "10.0.0.5",
    )  # fmt: skip
    args = captured[0].proxy_args
    assert args["interfaces"] == ("10.0.0.5", "127.0.0.1")
    assert args["advertise"] == "10.0.0.5"
    assert args["inbound"] == "0.0.0.0:0"


def test_lan_means_every_interface(captured: list[Any]) -> None:
    inject("--name", "web", "--lan")
    assert captured[0].proxy_args["interfaces"] == ("all",)


def test_an_endpoints_file_reaches_the_sidecar(captured: list[Any], tmp_path: Any) -> None:
    # `mesh up` passes it with [discovery] mode = "static".
    inject("--name", "web", "--no-zeroconf", "--endpoints", str(tmp_path / "endpoints.toml"))
    args = captured[0].proxy_args
    assert args["endpoints"] == tmp_path / "endpoints.toml" and args["zeroconf"] is False
