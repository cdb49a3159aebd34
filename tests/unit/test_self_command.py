"""mesh.self_command: how every mesh process starts another one (mesh up's services, the daemon,
the lean sidecar's re-exec, the demo apps, systemd units)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mesh import self_command

ROOT = Path(self_command.__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(self_command, "_archive", None)


def test_installed_package_keeps_the_working_directory_off_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", ["/somewhere/else", *sys.path[1:]])
    command = self_command.mesh_command()
    assert command[0] == sys.executable and command[-2:] == ["-m", "mesh"]
    assert "-P" in command


def test_a_checkout_run_with_python_m_mesh_finds_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m mesh` in a checkout that is not installed: mesh comes from sys.path[0]; -P would lose it."""
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path[1:]])
    assert "-P" not in self_command.mesh_command()


def test_single_file_runs_the_same_file_with_the_same_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    self_command.set_archive("mesh.pyz")  # relative, as `python3 mesh.pyz` gives it
    command = self_command.mesh_command()
    assert command[0] == sys.executable and command[-1] == str(tmp_path / "mesh.pyz")
    assert "-m" not in command
    assert self_command.executable() == str(tmp_path / "mesh.pyz")


def test_unit_files_do_not_inherit_this_interpreters_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(self_command, "_interpreter_flags", lambda: ["-X", "importtime"])
    assert "importtime" in self_command.mesh_command()
    assert "importtime" not in self_command.mesh_command(inherit_flags=False)


def test_children_do_not_get_systemds_notification_socket() -> None:
    env = self_command.child_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5", "KEEP": "1"})
    assert env == {"KEEP": "1"}


@pytest.mark.process
def test_a_mesh_folder_in_the_working_directory_does_not_shadow_the_package(tmp_path: Path) -> None:
    """The trap: `mesh up` started from the parent of a clone, where `mesh/` is a plain folder."""
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "notes.txt").write_text("not a package")
    code = "from mesh.self_command import mesh_command; print('\\0'.join(mesh_command()))"
    command = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                             cwd=tmp_path).stdout.strip().split("\0")
    result = subprocess.run([*command, "version"], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mesh ")
