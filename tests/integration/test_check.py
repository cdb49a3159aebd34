"""`mesh check` against real processes: a controller from `mesh up --detach`, real proxies,
a controller killed with SIGKILL, and `--pre` on a fresh MESH_HOME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cluster

pytestmark = pytest.mark.timeout(90)

BIN = str(Path(sys.executable).parent)


def check(cluster: Cluster, *args: str, encoding: str = "utf-8") -> subprocess.CompletedProcess[str]:
    """`mesh check ARGS` with MESH_HOME set, this venv's bin first on PATH, and a known output encoding."""
    env = dict(cluster._env, PYTHONIOENCODING=encoding, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [sys.executable, "-m", "mesh", "check", *args],
        env=env,
        capture_output=True,
        text=True,
        encoding=encoding,
        timeout=60,
    )


def check_json(cluster: Cluster, *args: str) -> tuple[int, dict[str, Any]]:
    result = check(cluster, *args, "-o", "json")
    return result.returncode, json.loads(result.stdout)


def section(text: str, name: str) -> list[str]:
    """The lines of one category in the text output."""
    lines = text.splitlines()
    start = lines.index(name) + 2  # the title, then its underline
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def statuses(data: dict[str, Any], category: str) -> list[str]:
    return [c["status"] for c in next(c for c in data["categories"] if c["name"] == category)["checks"]]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


@contextmanager
def mesh_up(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """`mesh up --detach` on an ephemeral port; always stopped (and its pid killed) at the end."""
    cluster.init_ca()  # makes MESH_HOME, owner-only (else `mesh check` would warn)
    result = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0", "-o", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    pid = int(info["pid"])
    try:
        yield info
    finally:
        cluster.mesh("down", "--timeout", "10")
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_until_current(cluster: Cluster, instances: int, timeout: float = 20.0) -> None:
    """Until the controller sees ``instances`` proxies registered and acking its latest state."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = cluster.mesh("status", "-o", "json")
        if result.returncode == 0:
            data = json.loads(result.stdout)
            version = data["controller"]["state_version"]
            entries = [e for es in data["services"].values() for e in es]
            if len(entries) == instances and all(e["watching"] and e["acked_version"] == version for e in entries):
                return
            last = result.stdout
        time.sleep(0.3)
    raise AssertionError(f"proxies not registered and current within {timeout}s:\n{last}")


def test_check_passes_with_a_running_controller(cluster: Cluster) -> None:
    with mesh_up(cluster) as info:
        result = check(cluster)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert out.rstrip().splitlines()[-1].startswith("Status check results are \u2714 (")
        assert "\u00d7" not in out and "\u203c" not in out, out
        for category in ("environment", "ca", "control plane", "discovery", "policy"):
            lines = section(out, category)
            assert lines and all(line.startswith("\u2714 ") for line in lines), (category, lines)
        control = "\n".join(section(out, "control plane"))
        assert f"the controller accepts connections at {info['controller']}" in control
        assert "the controller runs mesh" in control and "clock skew" in control
        assert "the controller advertises itself over zeroconf" in "\n".join(section(out, "discovery"))
        assert "data plane" not in out.splitlines()  # only with --proxy

        code, data = check_json(cluster)
        assert code == 0
        assert data["success"] is True
        assert {s for c in data["categories"] for s in statuses(data, c["name"])} == {"ok"}

        ascii_only = check(cluster, encoding="ascii")
        assert ascii_only.returncode == 0
        assert "[ok] the controller accepts connections" in ascii_only.stdout
        assert ascii_only.stdout.rstrip().endswith(")") and "Status check results are [ok] (" in ascii_only.stdout


def test_check_proxy_lists_every_proxy(cluster: Cluster) -> None:
    with mesh_up(cluster):
        web = cluster.proxy("web", cluster.app("http", "web"))
        api = cluster.proxy("api", cluster.app("http", "api"))
        wait_until_current(cluster, 2)

        result = check(cluster, "--proxy")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = section(result.stdout, "data plane")
        assert len(lines) == 2, lines
        for service, proxy in (("web", web), ("api", api)):
            (line,) = [line for line in lines if f"{service} 127.0.0.1:{proxy.inbound} " in line]
            assert line.startswith("\u2714 "), line
            assert "ready, certificate 23h" in line and "config current" in line and "mesh " in line
        assert "\u00d7" not in result.stdout

        code, data = check_json(cluster, "--proxy")
        assert code == 0 and data["success"] is True
        assert statuses(data, "data plane") == ["ok", "ok"]

        # A proxy killed without a goodbye stays registered until its lease runs out (30 s):
        # its line fails, the other one stays fine.
        api.process.popen.kill()
        api.process.popen.wait(5)
        result = check(cluster, "--proxy")
        assert result.returncode == 1, result.stdout
        lines = section(result.stdout, "data plane")
        (api_line,) = [line for line in lines if f"api 127.0.0.1:{api.inbound} " in line]
        assert api_line.startswith("\u00d7 ") and api_line.endswith("the proxy is gone"), api_line
        assert [line for line in lines if f"web 127.0.0.1:{web.inbound} " in line][0].startswith("\u2714 ")
        assert "hint: " in "\n".join(lines)


def test_check_after_the_controller_is_killed(cluster: Cluster) -> None:
    with mesh_up(cluster) as info:
        pid = int(info["pid"])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

        result = check(cluster, "--proxy")
        assert result.returncode == 1, result.stdout
        out = result.stdout
        control = section(out, "control plane")
        (failed,) = [line for line in control if line.startswith("\u00d7 ")]
        assert f"cannot connect to the controller at {info['controller']}" in failed
        assert f"its process (pid {pid}) is gone" in failed
        hint = control[control.index(failed) + 1]
        assert hint.strip().startswith("hint: start it with `mesh up --detach`; if it was killed")
        assert "mesh status" in hint
        assert any(line.startswith("\u2013 skipped") for line in control)
        assert section(out, "data plane") == ["\u2013 skipped all data plane checks: the controller is not reachable"]
        assert out.rstrip().splitlines()[-1].startswith("Status check results are \u00d7 (1 failed")
        # what does not need the controller still ran
        assert all(line.startswith("\u2714 ") for line in section(out, "ca"))

        code, data = check_json(cluster)
        assert code == 1
        assert data["success"] is False
        control_checks = next(c for c in data["categories"] if c["name"] == "control plane")["checks"]
        (fail,) = [c for c in control_checks if c["status"] == "fail"]
        assert fail["hint"] and fail["hint"].startswith("start it with `mesh up --detach`")


def port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty"])
def test_pre_on_an_empty_home_passes(cluster: Cluster, exists: bool) -> None:
    if exists:
        cluster.home.mkdir(mode=0o700)
    result = check(cluster, "--pre")
    out = result.stdout
    assert [line for line in out.splitlines() if line and not line.startswith(("\u2714", "-", "\u2013", "Status"))] == [
        "environment"
    ], out
    environment = section(out, "environment")
    assert len(environment) == 5
    assert environment[0].startswith("\u2714 Python 3.")
    assert environment[1].startswith("\u2714 dependencies import (trio ")
    assert environment[2].startswith(f"\u2714 MESH_HOME {cluster.home}")
    assert environment[4] == f"\u2714 `mesh` is on PATH ({BIN}/mesh)"
    if port_taken("127.0.0.1", 4190):  # someone else's mesh on this machine: reported, not hidden
        assert environment[3] == "\u00d7 the controller's address 127.0.0.1:4190 is in use"
        assert result.returncode == 1
    else:
        assert environment[3] == "\u2714 the controller's address 127.0.0.1:4190 is free"
        assert result.returncode == 0, out
        code, data = check_json(cluster, "--pre")
        assert (code, data["success"]) == (0, True)
        assert [c["name"] for c in data["categories"]] == ["environment"]
    assert not (cluster.home / "ca").exists()  # --pre changes nothing
