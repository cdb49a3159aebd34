from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from mesh import __version__

pytestmark = pytest.mark.process


def run_mesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", *args], capture_output=True, text=True, timeout=30)


def test_version_text_and_json() -> None:
    text = run_mesh("version")
    assert text.returncode == 0
    assert text.stdout.startswith(f"mesh {__version__}")
    data = json.loads(run_mesh("version", "-o", "json").stdout)
    assert data["version"] == __version__


def test_plain_version_loads_no_cli_framework() -> None:
    # Issue 16: `mesh version` within 0.15 s; typer, rich and pydantic alone take longer to import.
    code = "import sys; from mesh.cli import main; main(['version']); print(sorted({'typer', 'rich', 'pydantic'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines() == [run_mesh("version", "-o", "table").stdout.strip(), "[]"]


@pytest.mark.parametrize("args", [("--help",), ("version",)])
def test_fast_start(args: tuple[str, ...]) -> None:
    # DESIGN.md: `mesh --help` and `mesh version` start in under 0.3 s. Take the best of 3
    # so a noisy machine does not fail us, but a heavy import at start-up does.
    best = min(_timed(args) for _ in range(3))
    assert best < 0.3, f"mesh {' '.join(args)} took {best:.3f}s"


def _timed(args: tuple[str, ...]) -> float:
    start = time.perf_counter()
    assert run_mesh(*args).returncode == 0
    return time.perf_counter() - start


def test_unknown_command_is_a_clear_error() -> None:
    result = run_mesh("frobnicate")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr
