"""Rendering of tap, top, stat and edges for people (rich tables, one-line events).

Pure functions of the models in this package: no I/O, no terminal. Tables are
built to a width: at 80 columns `top` drops its less important columns first
(best, then worst latency), narrows the service names, then drops the last
latency and the method; long names are cut at the end and paths in the middle,
with "…".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mesh.debug.edges import EdgeRow
from mesh.debug.stat import StatRow
from mesh.debug.top import TopRow
from mesh.telemetry import TapEvent

ELLIPSIS = "…"


# ------------------------------------------------------------------ values


def truncate(text: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + ELLIPSIS if width > 1 else ELLIPSIS


def truncate_middle(text: str, width: int) -> str:
    """Cut in the middle: the end of a path tells rows apart better than its start."""
    if len(text) <= width or width < 5:
        return truncate(text, width)
    head = (width - 1) // 3
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + text[len(text) - tail :]


def format_latency(ms: float | None) -> str:
    if ms is None or ms != ms or ms == float("inf"):
        return "-"
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.2f}s"


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def format_rps(rps: float | None) -> str:
    if rps is None:
        return "-"
    return f"{rps:.1f}rps" if rps < 100 else f"{rps:.0f}rps"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# ------------------------------------------------------------------ tap


def short_id(request_id: str | None) -> str:
    """The tail of a long id (mesh ids are a per-process prefix and a counter: the tail differs)."""
    if not request_id:
        return "-"
    return request_id if len(request_id) <= 12 else ELLIPSIS + request_id[-8:]


def tap_line(event: TapEvent) -> str:
    """One request on one line, in the manner of `linkerd viz tap`."""
    direction = {"inbound": "in", "outbound": "out"}.get(event.direction, event.direction or "-")
    dst = event.dst_service or event.dst_address or event.authority or "-"
    parts = [
        f"req id={short_id(event.request_id)}",
        f"proxy={direction}",
        f"src={event.src_service or '-'}",
        f"dst={dst}",
        f":method={event.method or '-'}",
        f":authority={event.authority or '-'}",
        f":path={event.path or '-'}",
        "→",
        f":status={event.status or '-'}",
        f"latency={format_latency(event.latency_ms)}",
        f"mtls={'true' if event.tls else 'false'}",
    ]
    if event.src_address:
        parts.insert(3, f"client={event.src_address}")
    if event.grpc_status is not None:
        parts.insert(-2, f"grpc-status={event.grpc_status}")
    if event.mesh_error:
        parts.append(f"error={event.mesh_error}")
    return " ".join(parts)


# ------------------------------------------------------------------ top


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    header: str
    justify: str = "left"
    max_width: int = 0  # 0: as wide as its widest cell


TOP_COLUMNS = (
    _Column("source", "SOURCE", max_width=18),
    _Column("destination", "DESTINATION", max_width=18),
    _Column("method", "METHOD", max_width=7),
    _Column("path", "PATH"),
    _Column("count", "COUNT", "right"),
    _Column("best", "BEST", "right"),
    _Column("worst", "WORST", "right"),
    _Column("last", "LAST", "right"),
    _Column("success", "SUCCESS", "right"),
)
# Squeezing steps, in order, until the table fits: drop a column, or narrow the
# service names to a width. The path keeps at least PATH_MIN (or its natural width).
TOP_SQUEEZE: tuple[tuple[str, int], ...] = (
    ("best", 0),
    ("worst", 0),
    ("names", 12),
    ("last", 0),
    ("method", 0),
    ("names", 6),
)
PATH_MIN = 20
COLUMN_GAP = 2


def _top_cells(row: TopRow) -> dict[str, str]:
    return {
        "source": row.source,
        "destination": row.destination,
        "method": row.method,
        "path": row.path,
        "count": str(row.count),
        "best": format_latency(row.best_ms if row.count else None),
        "worst": format_latency(row.worst_ms if row.count else None),
        "last": format_latency(row.last_ms if row.count else None),
        "success": format_rate(row.success_rate),
    }


def top_layout(rows: Sequence[TopRow], width: int) -> tuple[list[_Column], list[int], list[list[str]]]:
    """Which columns fit in ``width`` and how wide each is; cells already cut to fit."""
    cells = [_top_cells(r) for r in rows]

    def natural(column: _Column) -> int:
        widest = max([len(column.header)] + [len(c[column.name]) for c in cells])
        return min(widest, column.max_width) if column.max_width else widest

    columns = list(TOP_COLUMNS)
    widths = {c.name: natural(c) for c in columns}
    path_min = max(min(PATH_MIN, widths["path"]), len("PATH"))

    def excess() -> int:
        fixed = sum(widths[c.name] for c in columns if c.name != "path")
        return fixed + path_min + COLUMN_GAP * (len(columns) - 1) - width

    for step, narrow_to in TOP_SQUEEZE:
        if excess() <= 0:
            break
        if step == "names":
            for name in ("source", "destination"):
                over = excess()
                if over > 0:
                    widths[name] = max(narrow_to, widths[name] - over)
        else:
            columns = [c for c in columns if c.name != step]
    fixed = sum(widths[c.name] for c in columns if c.name != "path") + COLUMN_GAP * (len(columns) - 1)
    widths["path"] = max(len("PATH"), min(widths["path"], width - fixed))
    final = [widths[c.name] for c in columns]
    body = [
        [
            (truncate_middle if col.name == "path" else truncate)(c[col.name], w)
            for col, w in zip(columns, final, strict=True)
        ]
        for c in cells
    ]
    return columns, final, body


def top_table(rows: Sequence[TopRow], width: int = 80, title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    columns, widths, body = top_layout(rows, width)
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, COLUMN_GAP // 2),
        collapse_padding=True,
    )
    for column, column_width in zip(columns, widths, strict=True):
        table.add_column(
            column.header,
            justify=column.justify,  # type: ignore[arg-type]
            width=column_width,
            no_wrap=True,
            overflow="ellipsis",
        )
    for cells in body:
        table.add_row(*cells)
    return table


# ------------------------------------------------------------------ stat and edges


def stat_cells(row: StatRow) -> tuple[str, ...]:
    return (
        row.service if row.version is None else f"  {row.service}",
        row.version or "-",
        row.meshed,
        format_rate(row.success_rate),
        format_rps(row.rps),
        format_latency(row.p50_ms),
        format_latency(row.p95_ms),
        format_latency(row.p99_ms),
        "-" if row.tcp_connections is None else str(row.tcp_connections),
    )


STAT_HEADERS = ("SERVICE", "VERSION", "MESHED", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP")


def stat_table(rows: Sequence[StatRow], title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for index, header in enumerate(STAT_HEADERS):
        table.add_column(header, justify="left" if index < 2 else "right", no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*stat_cells(row))
    return table


EDGE_HEADERS = ("SRC", "DST", "SRC IDENTITY", "DST IDENTITY", "MTLS", "REQUESTS")


def edge_cells(row: EdgeRow) -> tuple[str, ...]:
    return (
        row.src,
        row.dst,
        row.src_identity,
        row.dst_identity or "-",
        "yes" if row.mtls else "no",
        str(row.total_requests),
    )


def edges_table(rows: Sequence[EdgeRow], title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for index, header in enumerate(EDGE_HEADERS):
        table.add_column(header, justify="right" if index == 5 else "left", overflow="fold")
    for row in rows:
        table.add_row(*edge_cells(row))
    return table
