"""`mesh inject` and `mesh gateway` re-exec into a lean sidecar (mesh/cli/_sidecar.py).

Real processes: typer parses the command line, then the same PID runs the sidecar
without typer or pydantic, and the app's exit status and parent PID are unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(90), pytest.mark.process]

# What the lean process must not carry (typer's stack and the typer commands).
CLI_FRAMEWORK = (
    "typer", "pydantic", "pydantic_core", "annotated_types", "typing_inspection", "shellingham", "click",
    "mesh.cli._app", "mesh.cli._state", "mesh.cli.inject", "mesh.cli.gateway", "mesh.cli.proxy",
)  # fmt: skip

# Loaded at interpreter start through PYTHONPATH: each process writes its modules when it exits.
# A process replaced by exec never exits, so only the lean sidecar (same PID) writes.
SITECUSTOMIZE = """
import atexit, os, sys
def _dump():
    with open(os.path.join(os.environ["MODULES_DIR"], str(os.getpid())), "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(_dump)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    modules = tmp_path / "modules"
    modules.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("_MESH_COMPLETE", "HTTP_PROXY", "http_proxy")}
    env.update(MESH_HOME=str(tmp_path / "home"), MODULES_DIR=str(modules), PYTHONPATH=str(hook))
    init = subprocess.run(
        [sys.executable, "-m", "mesh", "ca", "init", "--trust-domain", "lean.test"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    return env


def loaded(env: dict[str, str], pid: int) -> set[str]:
    return set((Path(env["MODULES_DIR"]) / str(pid)).read_text().split())


def framework(modules: set[str]) -> list[str]:
    """The CLI framework's modules, and cryptography's (a sidecar's keys come from a helper process)."""
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in (*CLI_FRAMEWORK, "cryptography")))


def test_inject_runs_its_sidecar_without_typer(env: dict[str, str], tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text("")
    app = 'echo "parent=$PPID sidecar=${_MESH_SIDECAR-unset} home=$MESH_HOME"; exit 7'
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", "inject", "--name", "web", "--no-zeroconf", "--interface", "127.0.0.1",
         "--endpoints", str(endpoints), "--", "sh", "-c", app],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    out, err = process.communicate(timeout=60)
    assert process.returncode == 7, err  # the app's status
    # The app's parent is the process the user started, and it does not see the hand-over.
    assert out.strip() == f"parent={process.pid} sidecar=unset home={env['MESH_HOME']}", err
    modules = loaded(env, process.pid)
    assert "mesh.inject._run" in modules and "mesh.proxy._server" in modules  # it did run a sidecar
    assert framework(modules) == []
    assert "zeroconf" not in modules


def test_gateway_runs_without_typer_and_stops_on_sigterm(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", "gateway", "--to", "web", "--listen", "127.0.0.1:0", "--no-zeroconf"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "ready" in line:
                break
        else:
            raise AssertionError(f"gateway exited with {process.wait()}")
        time.sleep(0.5)  # "ready" is logged just before the proxy opens its signal receiver
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    modules = loaded(env, process.pid)
    assert "mesh.proxy._server" in modules and framework(modules) == []


def test_errors_of_the_lean_side_read_as_before(env: dict[str, str]) -> None:
    # Found after the hand-over (--listen is checked when the gateway is built): same message, status 1.
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "gateway", "--to", "web", "--listen", "nowhere", "--no-zeroconf"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1 and "--listen" in result.stderr and "Traceback" not in result.stderr
    # Found by typer: usage error, status 2, no sidecar.
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "inject", "--port", "x", "--", "true"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2 and "--port" in result.stderr


def test_in_process_commands_do_not_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    # CliRunner (and main(argv) from a script) must never replace the calling process.
    from mesh.cli import _sidecar

    assert _sidecar._entry_args is None
    monkeypatch.setattr(os, "execv", lambda *a: pytest.fail("exec'd in-process"))
    seen: list[object] = []
    monkeypatch.setitem(_sidecar.BODIES, "gateway", lambda home, debug, **values: seen.append(values) or 0)
    assert _sidecar.hand_over("gateway", _sidecar.MeshHome.resolve("/x"), False, {"to": "web"}) == 0
    assert seen == [{"to": "web"}]
