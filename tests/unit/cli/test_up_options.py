"""`mesh up`, `mesh controller` and `mesh gateway`: which addresses their options lead to.
No controller, proxy or service is started: the last step is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mesh.errors import ControllerError


class Started(Exception):
    """Raised by a recorder in place of starting something."""


def invoke(home: Path, *args: str) -> Any:
    from mesh.cli import app

    return CliRunner().invoke(app, ["--home", str(home), *args])


def write_config(tmp_path: Path, discovery: str = "") -> Path:
    path = tmp_path / "mesh.toml"
    path.write_text(f'[mesh]\ntrust_domain = "up.test"\n{discovery}\n[[service]]\nname = "web"\ncommand = ["./web"]\n')
    return path


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """argv of the detached `mesh up --daemon`, which is never started."""
    from mesh.controller import daemon

    seen: list[list[str]] = []

    def spawn(home: Any, name: str, argv: list[str]) -> Any:
        seen.append(argv)
        raise Started(name)

    monkeypatch.setattr(daemon, "spawn", spawn)
    return seen


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The Reach a foreground `mesh up` would run with."""
    import mesh.cli.up

    seen: list[Any] = []

    def run(home: Any, reach: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(reach)

    monkeypatch.setattr(mesh.cli.up, "_run", run)
    return seen


def test_a_wildcard_listen_without_an_address_is_refused_before_anything_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = invoke(home, "up", "--listen", "0.0.0.0:4190")
    assert result.exit_code == 1
    assert isinstance(result.exception, ControllerError)
    assert "other hosts cannot dial 0.0.0.0" in result.exception.message
    assert "--advertise ADDR" in (result.exception.hint or "")
    assert not home.exists()  # not even a CA


def test_detached_up_passes_the_decision_on(tmp_path: Path, spawned: list[list[str]]) -> None:
    config = write_config(tmp_path, '[discovery]\ninterfaces = ["10.0.0.5"]\n')
    result = invoke(tmp_path / "home", "up", str(config), "--detach", "--listen", "0.0.0.0:0")
    assert isinstance(result.exception, Started), result.output
    assert spawned == [["up", "--daemon", "--listen", "0.0.0.0:0", str(config.resolve())]]
    # The CA was made in the config's trust domain, before the daemon.
    assert (tmp_path / "home" / "ca" / "root.pem").exists()


def test_detached_up_with_advertise_and_lan(tmp_path: Path, spawned: list[list[str]]) -> None:
    invoke(tmp_path / "home", "up", "--detach", "--advertise", "10.0.0.7", "--lan", "--demo")
    assert spawned == [
        ["up", "--daemon", "--listen", "0.0.0.0:4190", "--advertise", "10.0.0.7", "--lan", "--demo"]
    ]


def test_foreground_up_follows_the_config(tmp_path: Path, ran: list[Any]) -> None:
    config = write_config(tmp_path, '[discovery]\ninterfaces = ["10.0.0.5"]\n')
    result = invoke(tmp_path / "home", "up", str(config))
    assert result.exit_code == 0, result.output
    (reach,) = ran
    assert reach.listen == ("10.0.0.5", 4190) and reach.host == "10.0.0.5"
    assert reach.interfaces == ("10.0.0.5",)


def test_foreground_up_defaults_to_loopback(tmp_path: Path, ran: list[Any]) -> None:
    assert invoke(tmp_path / "home", "up").exit_code == 0
    assert ran[0].listen == ("127.0.0.1", 4190) and ran[0].host is None


def test_up_says_when_other_hosts_cannot_join() -> None:
    from mesh.cli.up import _up_view

    summary = {
        "ca_created": False, "trust_domain": "mesh.local", "home": "/h", "controller": "127.0.0.1:4190", "pid": 1,
        "services": ["web"], "demo": None, "join": "mesh join 127.0.0.1:4190 --token t --ca-fingerprint sha256:x",
        "controller_local": True, "services_address": None,
    }  # fmt: skip
    lines = _up_view(summary)
    assert any("only this host reaches the controller" in line and "--listen ADDR:PORT" in line for line in lines)
    assert "other hosts join with:" not in lines
    lan = _up_view(
        {**summary, "controller": "10.0.0.5:4190", "controller_local": False, "services_address": "10.0.0.5",
         "join": "mesh join 10.0.0.5:4190 --token t --ca-fingerprint sha256:x"}
    )  # fmt: skip
    assert "services are reachable from other hosts at 10.0.0.5" in lan
    assert lan[lan.index("other hosts join with:") + 1] == "  mesh join 10.0.0.5:4190 --token t --ca-fingerprint sha256:x"


@pytest.fixture
def controller_settings(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import mesh.controller

    seen: list[Any] = []

    async def run_controller(settings: Any, stop: Any = None, *, task_status: Any = None) -> None:
        seen.append(settings)
        if task_status is not None:  # `mesh controller` waits for it to tell systemd it is ready
            task_status.started()

    monkeypatch.setattr(mesh.controller, "run_controller", run_controller)
    return seen


def test_controller_wildcard_advertises_its_interface(tmp_path: Path, controller_settings: list[Any]) -> None:
    result = invoke(tmp_path / "home", "controller", "--listen", "0.0.0.0:4190", "--interface", "10.0.0.5")
    assert result.exit_code == 0, result.output
    assert controller_settings[0].advertise == "10.0.0.5"
    assert controller_settings[0].interfaces == ("10.0.0.5",)


def test_controller_wildcard_alone_is_refused(tmp_path: Path, controller_settings: list[Any]) -> None:
    result = invoke(tmp_path / "home", "controller", "--listen", "0.0.0.0:4190", "--lan")
    assert isinstance(result.exception, ControllerError) and not controller_settings
    ok = invoke(tmp_path / "home", "controller", "--listen", "0.0.0.0:4190", "--lan", "--advertise", "10.0.0.9")
    assert ok.exit_code == 0 and controller_settings[0].advertise == "10.0.0.9"


def test_gateway_takes_interfaces_and_an_endpoints_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mesh.proxy._main

    seen: list[Any] = []

    async def build_proxy(options: Any, settings: Any) -> Any:
        seen.append(options)
        raise Started("gateway")

    monkeypatch.setattr(mesh.proxy._main, "build_proxy", build_proxy)
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text("")
    args = ["gateway", "--to", "web", "--interface", "10.0.0.5", "--interface", "127.0.0.1"]
    result = invoke(tmp_path / "home", *args, "--endpoints", str(endpoints))
    assert isinstance(result.exception, Started), result.output
    assert seen[0].interfaces == ("10.0.0.5", "127.0.0.1") and seen[0].endpoints == endpoints


def test_telemetry_flags_are_checked_before_anything_starts_and_passed_on(tmp_path: Path, spawned: list[list[str]]) -> None:
    home = tmp_path / "home"
    result = invoke(home, "up", "--demo", "--otlp-endpoint", "collector:4318")
    assert result.exit_code == 1 and "--otlp-endpoint: expected an http:// or https:// URL" in result.exception.message
    assert not home.exists()
    result = invoke(home, "up", "--demo", "--trace-sample", "1.5")
    assert result.exit_code == 1 and "--trace-sample" in result.exception.message
    log = tmp_path / "access.log"
    result = invoke(home, "up", "--detach", "--demo", "--otlp-endpoint", "http://127.0.0.1:4318", "--access-log", str(log))
    assert isinstance(result.exception, Started), result.output
    (argv,) = spawned
    assert argv[argv.index("--otlp-endpoint") + 1] == "http://127.0.0.1:4318"
    assert argv[argv.index("--access-log") + 1] == str(log)


def test_mesh_toml_telemetry_is_validated_with_key_paths(tmp_path: Path) -> None:
    config = tmp_path / "mesh.toml"
    config.write_text('[telemetry]\notlp_endpoint = "udp://x"\ntrace_sample = "all"\n')
    result = invoke(tmp_path / "home", "up", str(config))
    assert result.exit_code == 1
    text = str(result.exception)
    assert "telemetry.otlp_endpoint: expected an http:// or https:// URL" in text
    assert "telemetry.trace_sample: expected a number 0–1" in text
