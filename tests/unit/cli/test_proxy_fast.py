"""`mesh proxy` runs without typer (memory), yet means exactly what typer would have parsed.

main() hands a plain `mesh proxy ...` command line to mesh.cli._proxy_fast and
everything else to typer. These tests keep the two in step: same options and
defaults, same values reaching the sidecar, typer for every unusual command
line, and none of the CLI's heavy modules in a running sidecar.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from mesh.cli import _proxy_fast
from mesh.cli._proxy_fast import DEFAULTS, OPTIONS, REQUIRED, parse_proxy_argv

# Modules a sidecar must not load: the CLI framework and its validation (~11 MB of
# a ~60 MB budget, docs/performance.md), rich, the other commands' modules, and cryptography
# (~9 MB: its keys and CSRs come from the identity helper process, mesh/identity/_helper.py).
HEAVY = (
    "cryptography",
    "typer",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "annotated_doc",
    "typing_inspection",
    "shellingham",
    "rich",
    "mesh.cli._app",
    "mesh.cli._output",
    "mesh.cli._state",
    "mesh.cli.proxy",
    "mesh.cli.ca",
    "mesh.cli.up",
    "mesh.cli.top",
    "mesh.cli.tap",
    "mesh.cli.inject",
    "mesh.cli.check",
    "mesh.controller",
    "mesh.debug",
    "mesh.demo",
    "mesh.inject",
)
# With --no-zeroconf, zeroconf and the asyncio loop it runs on stay out too (~5 MB).
ZEROCONF = (
    "zeroconf",
    "asyncio",
    "ifaddr",
    "mesh.discovery._zeroconf",
    "mesh.discovery._zeroconf_advertise",
    "mesh.discovery._zeroconf_io",
    "mesh.discovery._zeroconf_probe",
    "mesh.discovery._zeroconf_records",
)


def _proxy_command() -> Any:
    import typer.main

    from mesh.cli import app

    return typer.main.get_command(app).commands["proxy"]  # type: ignore[attr-defined]


def test_options_and_defaults_mirror_the_typer_command() -> None:
    from mesh.cli.proxy import proxy

    hints = typing.get_type_hints(proxy)
    seen: dict[str, tuple[str, str]] = {}
    for param in _proxy_command().params:
        if param.name == "help":
            continue
        annotation = hints[param.name]
        if param.is_flag:
            assert annotation is bool
            for flag in param.opts:
                seen[flag] = (param.name, "on")
            for flag in param.secondary_opts:
                seen[flag] = (param.name, "off")
        else:
            if param.multiple:
                kind = "multi"
                assert annotation == typing.Optional[list[str]]
            elif Path in (annotation, *typing.get_args(annotation)):
                kind = "path"
            else:
                kind = "str"
                assert annotation in (str, typing.Optional[str])
            (flag,) = param.opts
            seen[flag] = (param.name, kind)
        if param.required:
            assert param.name in REQUIRED
        else:
            assert DEFAULTS[param.name] == param.default, param.name
    assert seen == OPTIONS
    assert set(DEFAULTS) | set(REQUIRED) == {name for name, _ in OPTIONS.values()}


def _typer_parse(argv: list[str]) -> tuple[Any, ...]:
    from mesh.cli import app

    with pytest.raises(SystemExit) as exit_:
        app(args=argv, prog_name="mesh")
    assert exit_.value.code in (0, None)
    return _seen.pop()


def _fast_parse(argv: list[str]) -> tuple[Any, ...]:
    parsed = parse_proxy_argv(argv)
    assert parsed is not None, argv
    with pytest.raises(SystemExit) as exit_:
        parsed.run()
    assert exit_.value.code == 0
    return _seen.pop()


_seen: list[tuple[Any, ...]] = []


@pytest.fixture
def no_sidecar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """start_proxy records what it was given instead of running a proxy."""

    def record(home: Any, debug: bool, **values: Any) -> None:
        _seen.append((home, debug, values, os.environ.get("MESH_HOME"), os.environ.get("MESH_LOG_FORMAT")))
        os.environ.pop("MESH_LOG_FORMAT", None)  # each parse sets it afresh (monkeypatch restores it)

    monkeypatch.setattr(_proxy_fast, "start_proxy", record)
    monkeypatch.setenv("MESH_HOME", str(tmp_path / "env-home"))
    monkeypatch.delenv("MESH_LOG_FORMAT", raising=False)
    monkeypatch.delenv("_MESH_COMPLETE", raising=False)


SAME = [
    ["proxy", "--service", "web", "--app", "127.0.0.1:8080"],
    ["proxy", "--app=127.0.0.1:8080", "--service=web"],
    ["--debug", "proxy", "--service", "web", "--app", "127.0.0.1:8080", "--no-zeroconf"],
    ["--home", "/tmp/h", "--debug", "proxy", "--service", "web", "--app", "127.0.0.1:1", "--zeroconf"],
    ["--home=~/mesh-home", "proxy", "--service", "web", "--app", "127.0.0.1:1", "--lan"],
    ["--home", "proxy", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["--log-format", "json", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["--debug", "--log-format=text", "--home", "/tmp/h", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["proxy", "--service", "bad name!", "--app", "nope"],  # values are checked later, the same way
    [
        "proxy", "--service", "client", "--app", "127.0.0.1:1", "--inbound", "0.0.0.0:4143", "--outbound",
        "127.0.0.1:4140", "--admin", "127.0.0.1:9901", "--endpoints", "rel/endpoints.toml", "--upstream", "db=5432",
        "--upstream=cache=6379", "--label", "version=v1", "--label", "zone=a=b", "--cert", "c.pem", "--key",
        "/abs/k.pem", "--bundle", "b.pem", "--request-timeout", "2s", "--idle-timeout", "1m", "--head-timeout",
        "3s", "--drain-timeout", "1s", "--controller", "10.0.0.1:4190", "--token", "tok", "--cert-ttl", "20s",
        "--interface", "10.0.0.2", "--interface", "127.0.0.1", "--advertise", "host.example", "--log-level",
        "debug", "--no-zeroconf",
    ],
    ["proxy", "--service", "wéb", "--app", "[::1]:80", "--label", "k=v w", "--endpoints", "./a b.toml"],
]


@pytest.mark.parametrize("argv", SAME, ids=lambda a: " ".join(a)[:60])
def test_fast_path_hands_the_sidecar_what_typer_would(no_sidecar: None, argv: list[str]) -> None:
    assert _fast_parse(argv) == _typer_parse(argv)


LEFT_TO_TYPER = [
    [],
    ["proxy"],
    ["proxy", "--help"],
    ["proxy", "-h", "--service", "web", "--app", "127.0.0.1:1"],
    ["--help", "proxy"],
    ["version"],
    ["proxyy", "--service", "web", "--app", "127.0.0.1:1"],
    ["proxy", "--service", "web"],  # missing --app: typer's usage error
    ["proxy", "--service", "web", "--app"],
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "--bogus"],
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "extra"],
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "--", "x"],
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "--debug"],  # a root option after the command
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "--lan=yes"],
    ["proxy", "--service", "web", "--service", "api", "--app", "127.0.0.1:1"],
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "--zeroconf", "--no-zeroconf"],
    ["proxy", "--service", "web", "--app", "-1"],
    ["proxy", "--service", "", "--app", "127.0.0.1:1"],
    ["proxy", "--service=", "--app", "127.0.0.1:1"],
    ["proxy", "--service", "web\udcff", "--app", "127.0.0.1:1"],
    ["proxy", "--serv", "web", "--app", "127.0.0.1:1"],
    ["--home", "proxy", "--service", "web", "--app", "127.0.0.1:1"],  # --home took "proxy"
    ["--home", "a", "--home", "b", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["--debug", "--debug", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["--debug=1", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["--home", "-x", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["--log-format", "yaml", "proxy", "--service", "web", "--app", "127.0.0.1:1"],  # typer says what is wrong
    ["--log-format", "JSON", "proxy", "--service", "web", "--app", "127.0.0.1:1"],
    ["proxy", "--service", "web", "--app", "127.0.0.1:1", "--log-format", "json"],
]


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=lambda a: " ".join(a)[:60])
def test_anything_unusual_is_left_to_typer(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.delenv("_MESH_COMPLETE", raising=False)
    assert parse_proxy_argv(argv) is None


def test_shell_completion_is_left_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_MESH_COMPLETE", "bash_complete")
    assert parse_proxy_argv(["proxy", "--service", "web", "--app", "127.0.0.1:1"]) is None


SIDECAR = """
import json, sys
import mesh.proxy._server

async def stop(self):  # built (identity, registries) but not serving: report what is loaded
    print(json.dumps(sorted(sys.modules)))

mesh.proxy._server.Proxy.run = stop
from mesh.cli import main
main(sys.argv[1:])
"""


@pytest.mark.process
def test_a_running_sidecar_loads_no_cli_framework(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "_MESH_COMPLETE"}
    home = tmp_path / "home"
    init = subprocess.run(
        [sys.executable, "-m", "mesh", "--home", str(home), "ca", "init", "--trust-domain", "fast.test"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert init.returncode == 0, init.stderr
    result = subprocess.run(
        [sys.executable, "-c", SIDECAR, "--home", str(home), "proxy", "--service", "web", "--app", "127.0.0.1:1",
         "--no-zeroconf", "--log-level", "warning"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "mesh.proxy._server" in loaded and "mesh.identity._tls" in loaded  # it did build a proxy
    unwanted = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY + ZEROCONF))
    assert unwanted == []
