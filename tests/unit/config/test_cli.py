"""`mesh config validate FILE` as a user runs it: a real subprocess, files in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DESIGN_EXAMPLE, TESTDATA

pytestmark = pytest.mark.process


def validate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "config", "validate", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


def test_valid_file(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(DESIGN_EXAMPLE)
    result = validate("mesh.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "mesh.toml: OK (1 service, 1 gateway, 1 route, 1 policy)\n"
    assert result.stderr == ""


def test_valid_testdata_sample() -> None:
    result = validate(str(TESTDATA / "mesh.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("mesh.toml: OK (3 services, 1 gateway, 2 routes, 1 policy)\n")


def test_empty_file_is_valid(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text("")
    result = validate("mesh.toml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (
        0,
        "mesh.toml: OK (0 services, 0 gateways, 0 routes, 0 policies)\n",
    )


BAD = """\
[[route]]
service = "reviews"
timout = "2s"
split = [ { labels = { version = "v2" }, weight = "ten" }, { labels = { version = "v3" }, weight = 10 } ]
"""


def test_invalid_file_prints_every_error_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(BAD)
    result = validate("mesh.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        'mesh.toml: route[0].timout: unknown key (did you mean "timeout"?)',
        'mesh.toml: route[0].split[0].weight: expected an integer 0–100, found "ten"',
    ]


def test_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text("[mesh]\ntrust_domain = mesh.local\n")
    result = validate("mesh.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "mesh.toml: line 2, column 16: invalid TOML (invalid value)\n"


def test_missing_file(tmp_path: Path) -> None:
    result = validate("nope.toml", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: nope.toml: no such file"
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr


def test_json_valid(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(DESIGN_EXAMPLE)
    result = validate("mesh.toml", "-o", "json", cwd=tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "file": "mesh.toml",
        "valid": True,
        "errors": [],
        "summary": {"services": 1, "gateways": 1, "routes": 1, "policies": 1},
    }


def test_json_invalid(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(BAD)
    result = validate("mesh.toml", "--output", "json", cwd=tmp_path)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {
        "file": "mesh.toml",
        "valid": False,
        "errors": [
            'mesh.toml: route[0].timout: unknown key (did you mean "timeout"?)',
            'mesh.toml: route[0].split[0].weight: expected an integer 0–100, found "ten"',
        ],
        "summary": None,
    }


def test_json_missing_file(tmp_path: Path) -> None:
    result = validate("nope.toml", "-o", "json", cwd=tmp_path)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert (data["valid"], data["errors"]) == (False, ["nope.toml: no such file"])


def test_file_argument_is_required() -> None:
    result = validate()
    assert result.returncode != 0
    assert "FILE" in result.stderr or "FILE" in result.stdout


def test_config_help_lists_validate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "config", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "validate" in result.stdout
