"""Background processes of `mesh up --detach`: pid files and logs under MESH_HOME/run/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import ControllerError
from mesh.home import MeshHome, atomic_write, open_log
from mesh.self_command import child_env, mesh_command


@dataclass(frozen=True)
class Daemon:
    name: str
    pid: int
    log: Path


def _pid_path(home: MeshHome, name: str) -> Path:
    return home.run_dir / f"{name}.pid"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); check /proc where there is one.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def spawn(home: MeshHome, name: str, argv: list[str]) -> Daemon:
    """Start ``mesh ARGV`` detached (own session), logging to run/NAME.log."""
    run_dir = home.ensure_dir(home.run_dir)
    log_path = run_dir / f"{name}.log"
    with open_log(log_path) as log:
        process = subprocess.Popen(
            [*mesh_command(), "--home", str(home.root), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**child_env(), "PYTHONUNBUFFERED": "1"},
        )
    atomic_write(_pid_path(home, name), json.dumps({"pid": process.pid, "argv": argv}) + "\n", mode=0o600)
    return Daemon(name, process.pid, log_path)


def running(home: MeshHome) -> list[Daemon]:
    daemons: list[Daemon] = []
    if not home.run_dir.is_dir():
        return daemons
    for path in sorted(home.run_dir.glob("*.pid")):
        try:
            pid = int(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
        name = path.stem
        if alive(pid):
            daemons.append(Daemon(name, pid, home.run_dir / f"{name}.log"))
        else:
            path.unlink(missing_ok=True)
    return daemons


def stop(home: MeshHome, timeout: float = 15.0) -> list[Daemon]:
    """SIGTERM every daemon (services first, the controller last), wait, SIGKILL stragglers."""
    daemons = sorted(running(home), key=lambda d: d.name == "controller")
    for group in ([d for d in daemons if d.name != "controller"], [d for d in daemons if d.name == "controller"]):
        for daemon in group:
            try:
                os.killpg(daemon.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for daemon in group:
            while alive(daemon.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(daemon.pid):
                try:
                    os.killpg(daemon.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _pid_path(home, daemon.name).unlink(missing_ok=True)
    return daemons


def wait_until_listening(home: MeshHome, daemon: Daemon, timeout: float = 15.0) -> dict:
    """Wait for the controller to write controller.json with its pid; fail with its log if it dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = json.loads(home.controller_json.read_text())
            if record.get("pid") == daemon.pid:
                return record
        except (OSError, ValueError):
            pass
        if not alive(daemon.pid):
            tail = daemon.log.read_text(errors="replace").strip().splitlines()[-5:] if daemon.log.exists() else []
            raise ControllerError(
                "the controller exited during start-up:\n" + "\n".join(tail),
                hint=f"the whole log is in {daemon.log}",
            )
        time.sleep(0.05)
    raise ControllerError(f"the controller did not start within {timeout:g}s", hint=f"see {daemon.log}")
