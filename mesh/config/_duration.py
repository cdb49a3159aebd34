"""Durations in config: strings with a unit (``250ms``, ``2s``, ``1m``, ``1h``, ``1m30s``).

A bare number is refused on purpose: ``timeout = 2`` could mean seconds or
milliseconds, and the reader of a mesh.toml should not have to guess.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from mesh.config._issues import render_value

DURATION_EXPECTED = "a duration like 250ms, 2s, 1m"

# ASCII digits only: Python's \d would also accept "٣s".
_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_WHOLE = re.compile(rf"(?:{_NUMBER}(?:ms|h|m|s))+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"250ms"`` → 0.25, ``"1.5s"`` → 1.5, ``"1m30s"`` → 90.0.

    Units: ``ms``, ``s``, ``m``, ``h``. Raises ``ValueError`` for anything else,
    including bare numbers and negative durations.
    """
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"expected {DURATION_EXPECTED}, found {render_value(text)}")
    total = 0.0
    for number, unit in _PART.findall(text):
        total += _in_seconds(float(number), unit)
    if not math.isfinite(total):
        raise ValueError(f"expected {DURATION_EXPECTED}, found {render_value(text)} (too large)")
    return total


def _in_seconds(number: float, unit: str) -> float:
    # Divide rather than multiply by 0.001: "250ms" must give exactly 0.25.
    if unit == "ms":
        return number / 1000
    if unit == "s":
        return number
    if unit == "m":
        return number * 60
    return number * 3600


def format_duration(seconds: float) -> str:
    """The shortest readable duration string that ``parse_duration`` turns back into ``seconds``.

    ``0.25`` → ``"250ms"``, ``2`` → ``"2s"``, ``90`` → ``"90s"``, ``120`` → ``"2m"``,
    ``86400`` → ``"24h"``, ``1.5`` → ``"1.5s"``.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"format_duration needs a number of seconds, got {type(seconds).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration: need a finite number ≥ 0")
    if seconds == 0:
        return "0s"
    candidates: list[str] = []
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            candidates.append(_number(seconds / size) + unit)
    if seconds < 1:
        candidates.append(_number(seconds * 1000) + "ms")
    # Every candidate is checked: float arithmetic must not change the value on the way back.
    for candidate in candidates:
        if parse_duration(candidate) == seconds:
            return candidate
    return _number(seconds) + "s"


def _number(value: float) -> str:
    """Positional decimal (never ``1e-05``), shortest form that reads back as the same float."""
    if float(value).is_integer():
        return str(int(value))
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
