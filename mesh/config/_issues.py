"""What is wrong in a config: one ``ConfigIssue`` per problem, all of them in ``ConfigInvalid``."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mesh.errors import ConfigError

VALIDATE_HINT = "fix the keys above; `mesh config validate FILE` checks a file without applying it"

# Strings and lists longer than this are cut in messages: one error stays one readable line.
_MAX_RENDERED = 80


class _Missing:
    """The value of a required key that is not there (rendered as ``nothing``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in one config: where (``source``, key ``path``) and what (``message``).

    ``str(issue)`` is the line a user sees, e.g.
    ``mesh.toml: route[1].split[0].weight: expected an integer 0–100, found "ten"``.
    """

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        if not self.path:
            return f"{self.source}: {self.message}"
        return f"{self.source}: {self.path}: {self.message}"


class ConfigInvalid(ConfigError):
    """A config with one or more problems; ``issues`` lists every one of them."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        if not self.issues:
            raise ValueError("ConfigInvalid needs at least one issue")
        super().__init__("\n".join(str(issue) for issue in self.issues), hint=VALIDATE_HINT)


def render_value(value: object) -> str:
    """Render a config value the way it would be written in TOML, for the ``found`` part."""
    if value is MISSING:
        return "nothing"
    if value is None:  # only JSON can say null; TOML has no such value
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _render_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return _render_list(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return repr(value)


def _render_string(value: str) -> str:
    if len(value) > _MAX_RENDERED:
        value = value[: _MAX_RENDERED - 1] + "…"
    return json.dumps(value, ensure_ascii=False)


def _render_list(values: list[object] | tuple[object, ...]) -> str:
    parts: list[str] = []
    length = 0
    for item in values:
        part = "{...}" if isinstance(item, Mapping) else render_value(item)
        if parts and length + len(part) > _MAX_RENDERED:
            parts.append("...")
            break
        parts.append(part)
        length += len(part) + 2
    return "[" + ", ".join(parts) + "]"
