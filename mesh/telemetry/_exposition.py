"""Prometheus text exposition format 0.0.4: writing it, and reading it back.

The writer serves a proxy's ``/metrics``; the reader is what the controller and
the CLI use to scrape proxies. The reader is deliberately small: it reads what
any Prometheus client writes (comments skipped, escaped label values, ``+Inf``,
``NaN``, optional timestamps dropped) and raises ValueError naming the line on
anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Protocol

from mesh.telemetry._sample import Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricFamily(Protocol):
    """What the writer needs from a metric: the registry's Counter, Gauge and Histogram."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...

    @property
    def type_name(self) -> str: ...

    def samples(self) -> list[Sample]: ...


# ---------------------------------------------------------------- writing


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ``3``, ``0.25``, ``1e+16``, ``+Inf``, ``NaN``."""
    if isinstance(value, int):
        # int.__repr__ so that True renders as 1 and an IntEnum as its number.
        return int.__repr__(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # like the Go client: le="5", not le="5.0"
    return repr(value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_sample(sample: Sample) -> str:
    if not sample.labels:
        return f"{sample.name} {format_value(sample.value)}"
    pairs = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in sample.labels)
    return f"{sample.name}{{{pairs}}} {format_value(sample.value)}"


def render_text(families: Iterable[MetricFamily]) -> str:
    """HELP, TYPE, then the samples of each family, in the order given."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type_name}")
        lines.extend(format_sample(sample) for sample in family.samples())
    return "\n".join(lines) + "\n" if lines else ""


# ---------------------------------------------------------------- reading

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The body of a quoted label value up to its closing quote; escapes are undone afterwards.
_QUOTED_BODY = re.compile(r'((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_UNESCAPED = {"n": "\n", "\\": "\\", '"': '"'}
_BLANKS = " \t"


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    # An unknown escape is kept as written, as the Prometheus parsers do.
    return _UNESCAPED.get(char, "\\" + char)


class _LineError(ValueError):
    pass


def parse_prometheus_text(text: str) -> list[Sample]:
    """Read the samples of a Prometheus text exposition, in order.

    Raises ValueError (``line N: what is wrong: the line``) on a malformed line.
    """
    samples: list[Sample] = []
    # Split on "\n" only: str.splitlines would also split on \r, \x1c, \u2028… which
    # are legal, unescaped characters inside a label value.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip(_BLANKS + "\r")
        if not line or line.startswith("#"):
            continue
        try:
            samples.append(_parse_sample_line(line))
        except _LineError as exc:
            shown = line if len(line) <= 200 else line[:200] + "…"
            raise ValueError(f"line {number}: {exc}: {shown!r}") from None
    return samples


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in _BLANKS:
        pos += 1
    return pos


def _parse_sample_line(line: str) -> Sample:
    match = _METRIC_NAME.match(line)
    if match is None:
        raise _LineError("expected a metric name")
    name = match.group()
    pos = _skip_blanks(line, match.end())
    labels: tuple[tuple[str, str], ...] = ()
    if pos < len(line) and line[pos] == "{":
        labels, pos = _parse_label_set(line, pos + 1)
    elif pos == match.end() and pos < len(line):
        raise _LineError("expected a blank or '{' after the metric name")
    fields = line[pos:].split()
    if not fields or len(fields) > 2:
        raise _LineError("expected a value after the name and labels (and an optional timestamp)")
    value = _parse_value(fields[0])
    if len(fields) == 2 and not re.fullmatch(r"-?[0-9]+", fields[1]):
        raise _LineError(f"expected an integer timestamp, found {fields[1]!r}")
    return Sample(name, labels, value)


def _parse_label_set(line: str, pos: int) -> tuple[tuple[tuple[str, str], ...], int]:
    pairs: list[tuple[str, str]] = []
    while True:
        pos = _skip_blanks(line, pos)
        if pos < len(line) and line[pos] == "}":
            return tuple(pairs), pos + 1
        match = _LABEL_NAME.match(line, pos)
        if match is None:
            raise _LineError("expected a label name or '}'")
        label = match.group()
        pos = _skip_blanks(line, match.end())
        if pos >= len(line) or line[pos] != "=":
            raise _LineError(f"expected '=' after label {label}")
        pos = _skip_blanks(line, pos + 1)
        if pos >= len(line) or line[pos] != '"':
            raise _LineError(f"expected a quoted value for label {label}")
        pos += 1
        body = _QUOTED_BODY.match(line, pos)
        if body is None:
            raise _LineError(f"unterminated value of label {label}")
        pairs.append((label, _ESCAPE.sub(_unescape, body.group(1))))
        pos = _skip_blanks(line, body.end())
        if pos < len(line) and line[pos] == ",":
            pos += 1  # a trailing comma before '}' is allowed by the format
        elif pos >= len(line) or line[pos] != "}":
            raise _LineError("expected ',' or '}' after a label value")


def _parse_value(token: str) -> float:
    # float() alone would also take "1_000" and "infinity"; the format allows neither.
    lowered = token.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    if "_" in token or "n" in lowered:
        raise _LineError(f"expected a number, found {token!r}")
    try:
        return float(token)
    except ValueError:
        raise _LineError(f"expected a number, found {token!r}") from None
