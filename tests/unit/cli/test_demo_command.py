"""`mesh demo SERVICE`: the demo apps through the mesh executable (what `mesh up --demo` runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.process


def run_mesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("prefix", [(), ("--debug",)], ids=["plain", "after-root-options"])
def test_help_and_errors_are_the_demos_own(prefix: tuple[str, ...]) -> None:
    shown = run_mesh(*prefix, "demo", "-h")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: mesh demo")
    assert "productpage" in shown.stdout and "traffic" in shown.stdout
    bad = run_mesh(*prefix, "demo", "frontpage")
    assert bad.returncode == 2 and "invalid choice: 'frontpage'" in bad.stderr


def test_listed_in_mesh_help() -> None:
    assert "demo" in run_mesh("--help").stdout


def test_an_app_without_a_port_says_how_to_give_one() -> None:
    result = subprocess.run([sys.executable, "-m", "mesh", "demo", "ratings"], capture_output=True, text=True,
                            timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "PORT=9080 mesh demo ratings" in result.stdout + result.stderr
