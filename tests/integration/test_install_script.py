"""install.sh tells a newcomer how to put its bin directory on PATH, for the shell they use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.timeout(300)  # a stale venv makes install.sh run pip first


@pytest.mark.parametrize(
    ("shell", "advice"),
    [
        ("/bin/bash", ">> ~/.bashrc"),
        ("/usr/bin/zsh", ">> ~/.zshrc"),
        ("/usr/bin/fish", "fish_add_path "),
        ("/bin/sh", ">> ~/.profile"),
    ],
)
def test_path_advice_for_each_shell(tmp_path: Path, shell: str, advice: str) -> None:
    bin_dir = tmp_path / "bin"
    env = {**os.environ, "MESH_BIN_DIR": str(bin_dir), "SHELL": shell, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(ROOT / "install.sh")], env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr
    assert f"{bin_dir} is not on your PATH" in result.stdout
    advice_line = next(line for line in result.stdout.splitlines() if advice in line)
    assert str(bin_dir) in advice_line
    assert (bin_dir / "mesh").is_symlink()
    on_path = subprocess.run([str(ROOT / "install.sh")], env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=280)
    assert on_path.returncode == 0 and "not on your PATH" not in on_path.stdout
