"""`mesh check`: categories of checkers, run in order, results kept as data.

Modelled on linkerd's healthcheck package:

- ``_model``: ``Checker`` (category, description, a callable returning a
  ``CheckResult(status, message, hint)``, ``retry_for``, ``fatal``),
  ``Category``, and ``run_checks`` which goes through them (sans-IO: the clock
  and the sleep between retries are parameters);
- ``_rules``: the verdicts, pure functions from facts to a ``CheckResult``;
- ``_render``: text (Unicode or ASCII symbols) and JSON, separate from checking;
- ``_checks`` and ``_probes``: the real checkers (files, sockets, the
  controller's API, zeroconf, proxies' admin servers).
"""

from __future__ import annotations

from mesh.debug.check._checks import CheckContext, build_categories
from mesh.debug.check._model import (
    Category,
    CategoryReport,
    Checker,
    CheckOutcome,
    CheckResult,
    Report,
    Status,
    run_checks,
)
from mesh.debug.check._render import (
    ASCII,
    UNICODE,
    Symbols,
    category_lines,
    line_text,
    render_text,
    report_lines,
    report_to_json,
    summary_lines,
    symbols_for,
)

__all__ = [
    "ASCII",
    "UNICODE",
    "Category",
    "CategoryReport",
    "CheckContext",
    "CheckOutcome",
    "CheckResult",
    "Checker",
    "Report",
    "Status",
    "Symbols",
    "build_categories",
    "category_lines",
    "line_text",
    "render_text",
    "report_lines",
    "report_to_json",
    "run_checks",
    "summary_lines",
    "symbols_for",
]
