"""Reading files: missing and unreadable files, TOML syntax errors with line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.config import ConfigInvalid, load_config, load_config_text
from mesh.errors import ConfigError

from .conftest import errors_of


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert not isinstance(info.value, ConfigInvalid)
    assert info.value.message == f"{path}: no such file"
    assert info.value.hint


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, expected a mesh.toml file"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PermissionError(13, "Permission denied"), "permission denied"),
        (OSError(5, "Input/output error"), "cannot read (Input/output error)"),
    ],
)
def test_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, message: str
) -> None:
    # Simulated: chmod 000 does not stop root, and CI runs as root.
    def refuse(self: Path) -> bytes:
        raise error

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "mesh.toml")
    assert info.value.message == f"{tmp_path / 'mesh.toml'}: {message}"


def test_file_name_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mesh.toml").write_text('[mesh]\nauthz_default = "nope"\n')
    with pytest.raises(ConfigInvalid) as info:
        load_config("mesh.toml")
    assert (
        str(info.value) == 'mesh.toml: mesh.authz_default: expected "allow" or "deny", found "nope"'
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[mesh]\ntrust_domain = \n", "line 2, column 16: invalid TOML (invalid value)"),
        (
            '[mesh]\n\ntrust_domain "x"\n',
            "line 3, column 14: invalid TOML (expected '=' after a key in a key/value pair)",
        ),
        ("[mesh]\n[mesh]\n", "line 2, column 6: invalid TOML (cannot declare ('mesh',) twice)"),
        (
            '[mesh]\ntrust_domain = "mesh.local',
            "line 2, column 27: invalid TOML (unterminated string)",
        ),
    ],
)
def test_toml_syntax_error_names_line_and_column(text: str, line: str) -> None:
    assert errors_of(text) == [f"mesh.toml: {line}"]


def test_syntax_error_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mesh.toml"
    path.write_text('[mesh]\ntrust_domain = "a"\nauthz_default = allow\n')
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    assert str(info.value) == f"{path}: line 3, column 17: invalid TOML (invalid value)"
    assert info.value.issues[0].path == "line 3, column 17"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "mesh.toml"
    path.write_bytes(b'[mesh]\ntrust_domain = "\xff"\n')
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    assert str(info.value) == f"{path}: line 2, column 17: invalid TOML (not UTF-8 text)"


def test_toml_dates_are_rendered_like_toml() -> None:
    assert errors_of("[mesh]\ntrust_domain = 1979-05-27\n") == [
        'mesh.toml: mesh.trust_domain: expected a trust domain like "mesh.local" '
        "(lowercase letters, digits, '.', '-' and '_', without a scheme or '/'), found 1979-05-27"
    ]


def test_load_config_text_default_source() -> None:
    with pytest.raises(ConfigInvalid, match=r"^<config>: bogus: unknown key"):
        load_config_text("bogus = 1")
