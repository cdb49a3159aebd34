"""Rendering a report: text for people (Unicode or ASCII symbols), plain data for JSON.

Pure: the functions return strings and data. Text comes as lines of styled
segments (``(text, style)``) so the CLI can colour the symbols on a terminal
while ``render_text`` (and the golden files) stay plain.

    environment
    -----------
    ✔ Python 3.11.7 (mesh needs 3.11 or newer)
    ‼ MESH_HOME /x/.mesh is readable by group and others (mode 0755)
        hint: chmod 700 /x/.mesh

    Status check results are ‼ (1 warning, 1 passed)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.debug.check._model import CategoryReport, CheckOutcome, Report, Status

Segment = tuple[str, str | None]  # text, rich style (None: plain)
Line = tuple[Segment, ...]

HINT_INDENT = "    "


@dataclass(frozen=True, slots=True)
class Symbols:
    ok: str
    warn: str
    fail: str
    skipped: str
    ascii_only: bool

    def of(self, status: Status) -> str:
        return {
            Status.OK: self.ok,
            Status.WARN: self.warn,
            Status.FAIL: self.fail,
            Status.SKIPPED: self.skipped,
        }[status]


UNICODE = Symbols(ok="\u2714", warn="\u203c", fail="\u00d7", skipped="\u2013", ascii_only=False)
ASCII = Symbols(ok="[ok]", warn="[warn]", fail="[FAIL]", skipped="-", ascii_only=True)

STYLES = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIPPED: "dim"}


def symbols_for(encoding: str | None) -> Symbols:
    """Unicode symbols when the output encoding is UTF-8, ASCII ones otherwise."""
    normalised = (encoding or "").lower().replace("-", "").replace("_", "")
    return UNICODE if normalised in ("utf8", "utf8sig") else ASCII


def _text(value: str, symbols: Symbols) -> str:
    if symbols.ascii_only:
        return value.encode("ascii", "replace").decode("ascii")
    return value


def category_lines(category: CategoryReport, symbols: Symbols = UNICODE, *, first: bool = True) -> list[Line]:
    """The lines of one category: a blank line before it unless ``first``, a title, the checks."""
    lines: list[Line] = [] if first else [()]
    lines.append(((_text(category.name, symbols), "bold"),))
    lines.append((("-" * len(category.name), None),))
    for group in _groups(category.checks):
        lines.extend(_outcome_lines(group, symbols))
    return lines


def _groups(checks: Sequence[CheckOutcome]) -> Iterator[list[CheckOutcome]]:
    """Each outcome alone, except consecutive skipped ones with the same reason: one line for them."""
    group: list[CheckOutcome] = []
    for outcome in checks:
        if (
            group
            and outcome.status is Status.SKIPPED
            and group[-1].status is Status.SKIPPED
            and (outcome.message == group[-1].message)
        ):
            group.append(outcome)
            continue
        if group:
            yield group
        group = [outcome]
    if group:
        yield group


def _outcome_lines(group: list[CheckOutcome], symbols: Symbols) -> list[Line]:
    first = group[0]
    symbol = (symbols.of(first.status) + " ", STYLES[first.status])
    if first.status is Status.SKIPPED:
        what = f"{len(group)} checks" if len(group) > 1 else first.description
        text = f"skipped {what}: {first.message}"
        return [(symbol, (_text(text, symbols), "dim"))]
    message_lines = (first.message or first.description).splitlines() or [first.description]
    lines: list[Line] = [(symbol, (_text(message_lines[0], symbols), None))]
    lines.extend(((HINT_INDENT + _text(more, symbols), None),) for more in message_lines[1:])
    if first.hint:
        hint_lines = first.hint.splitlines()
        lines.append(((HINT_INDENT + "hint: ", "dim"), (_text(hint_lines[0], symbols), None)))
        lines.extend(((HINT_INDENT + "      " + _text(more, symbols), None),) for more in hint_lines[1:])
    return lines


def summary_lines(report: Report, symbols: Symbols = UNICODE) -> list[Line]:
    """A blank line, then ``Status check results are ✔ (12 passed, 1 warning)``."""
    worst = report.worst
    counts = []
    for status, one, many in (
        (Status.FAIL, "failed", "failed"),
        (Status.WARN, "warning", "warnings"),
        (Status.OK, "passed", "passed"),
        (Status.SKIPPED, "skipped", "skipped"),
    ):
        n = report.count(status)
        if n:
            counts.append(f"{n} {one if n == 1 else many}")
    detail = f" ({', '.join(counts)})" if counts else " (no checks ran)"
    return [
        (),
        (
            ("Status check results are ", None),
            (symbols.of(worst), STYLES[worst]),
            (detail, None),
        ),
    ]


def report_lines(report: Report, symbols: Symbols = UNICODE) -> list[Line]:
    lines: list[Line] = []
    for index, category in enumerate(report.categories):
        lines.extend(category_lines(category, symbols, first=index == 0))
    lines.extend(summary_lines(report, symbols))
    return lines


def line_text(line: Line) -> str:
    return "".join(text for text, _ in line)


def render_text(report: Report, symbols: Symbols = UNICODE) -> str:
    """The whole report as plain text (what `mesh check` prints, without colours)."""
    return "".join(line_text(line) + "\n" for line in report_lines(report, symbols))


def report_to_json(report: Report) -> dict[str, Any]:
    """``{"categories": [{"name", "checks": [{"description", "status", "message", "hint"}]}], "success"}``."""
    return {
        "categories": [
            {
                "name": category.name,
                "checks": [
                    {
                        "description": check.description,
                        "status": check.status.value,
                        "message": check.message,
                        "hint": check.hint,
                    }
                    for check in category.checks
                ],
            }
            for category in report.categories
        ],
        "success": report.success,
    }
