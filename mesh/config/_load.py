"""Reading a mesh.toml from disk: file errors, TOML syntax errors, then ``parse_config``."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path

from mesh.config._issues import ConfigInvalid, ConfigIssue
from mesh.config._model import MeshConfig
from mesh.config._telemetry import STDOUT
from mesh.config._validate import parse_config
from mesh.errors import ConfigError

# tomllib (Python 3.11–3.13) puts the position at the end of its message only.
_POSITION = re.compile(r"^(?P<reason>.*) \(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$")


def load_config(path: str | os.PathLike[str]) -> MeshConfig:
    """Read, parse and validate the mesh.toml at ``path``.

    Error messages name the file as ``path`` was given. A relative
    ``discovery.endpoints_file`` or ``telemetry.access_log`` is taken relative to the config
    file's directory, and so are a gateway's ``tls`` files (made absolute: the gateways may run
    from elsewhere).
    Raises ``ConfigInvalid`` (every problem in the file) or ``ConfigError`` (no file).
    """
    source = os.fspath(path)
    text = _read_text(Path(source), source)
    config = load_config_text(text, source)
    endpoints_file = config.discovery.endpoints_file
    if endpoints_file is not None and not os.path.isabs(endpoints_file):
        resolved = str(Path(source).parent / endpoints_file)
        config = dataclasses.replace(config, discovery=dataclasses.replace(config.discovery, endpoints_file=resolved))
    access_log = config.telemetry.access_log
    if access_log is not None and access_log != STDOUT and not os.path.isabs(access_log):
        resolved = str(Path(source).parent / access_log)
        config = dataclasses.replace(config, telemetry=dataclasses.replace(config.telemetry, access_log=resolved))
    base = Path(source).parent
    gateways = tuple(
        dataclasses.replace(
            gateway,
            tls=tuple(
                dataclasses.replace(pair, cert=_absolute(base, pair.cert), key=_absolute(base, pair.key))
                for pair in gateway.tls
            ),
        )
        for gateway in config.gateways
    )
    return dataclasses.replace(config, gateways=gateways)


def _absolute(base: Path, path: str) -> str:
    return os.path.abspath(base / path)


def load_config_text(text: str, source: str = "<config>") -> MeshConfig:
    """Parse and validate mesh.toml content that is already in memory."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid([_syntax_issue(exc, text, source)]) from None
    return parse_config(data, source)


def _read_text(path: Path, source: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no such file",
            hint="check the path; a minimal mesh.toml is described in docs/config.md",
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, expected a mesh.toml file") from None
    except PermissionError:
        raise ConfigError(f"{source}: permission denied", hint="make the file readable by this user") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # TOML files are UTF-8 by definition; say where the first bad byte is.
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigInvalid(
            [ConfigIssue(source, f"line {line}, column {column}", "invalid TOML (not UTF-8 text)")]
        ) from None


def _syntax_issue(exc: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigIssue:
    message = str(exc)
    match = _POSITION.match(message)
    reason = match.group("reason") if match else message
    line = getattr(exc, "lineno", None)  # Python ≥ 3.14 has the position as attributes
    column = getattr(exc, "colno", None)
    if line is None and match and match.group("line"):
        line, column = int(match.group("line")), int(match.group("column"))
    if line is None or column is None:
        # "at end of document": point just past the last character.
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    return ConfigIssue(source, f"line {line}, column {column}", f"invalid TOML ({_lower_first(reason)})")


def _lower_first(text: str) -> str:
    # "Invalid value" → "invalid value", but leave "TOML ..." or "URL ..." alone.
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text
