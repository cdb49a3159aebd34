"""MESH_HOME is made owner-only, and so are the logs under it (mesh/home.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mesh.home import MeshHome, open_log


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_mesh_home_is_made_0700_whatever_makes_it(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        home = MeshHome(tmp_path / "deep" / "home")
        home.ensure_dir(home.run_dir)
        assert mode(home.root) == 0o700 and mode(home.run_dir) == 0o700
        assert mode(tmp_path / "deep") == 0o755  # the parents are the user's business
        home.ensure_dir(home.ca_dir)
        assert mode(home.root) == 0o700
    finally:
        os.umask(old)


def test_an_existing_mesh_home_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir(mode=0o750)
    os.chmod(tmp_path / "home", 0o750)
    home = MeshHome(tmp_path / "home")
    home.ensure_dir(home.operator_dir)
    assert mode(home.root) == 0o750 and mode(home.operator_dir) == 0o700


def test_logs_are_owner_only_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    with open_log(path) as log:
        log.write(b"one\n")
    os.chmod(path, 0o644)  # made by an older mesh
    with open_log(path) as log:
        log.write(b"two\n")
    assert path.read_bytes() == b"one\ntwo\n" and mode(path) == 0o600
