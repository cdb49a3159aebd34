"""Rendering `mesh tap` lines and the `mesh top` table, at 80 columns and wider, without a terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest

from mesh.debug.render import (
    format_latency,
    format_rate,
    tap_line,
    top_layout,
    top_table,
    truncate,
    truncate_middle,
)
from mesh.debug.top import TopModel, TopRow
from mesh.telemetry import TapEvent


def printed(renderable: Any, width: int) -> list[str]:
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None).print(renderable)
    return buffer.getvalue().splitlines()


def busy_model() -> TopModel:
    model = TopModel()
    for i in range(12):
        model.add(
            {
                "src_service": "checkout-frontend",
                "dst_service": "inventory-service",
                "method": "GET",
                "path": f"/api/v2/warehouses/eu-central/items/{i % 3}",
                "status": 500 if i == 0 else 200,
                "latency_ms": 0.4 + i * 3.3,
            }
        )
    model.add({"src_service": "client", "dst_service": "web", "method": "DELETE", "path": "/", "latency_ms": 1500.0, "status": 204})
    return model


def test_values() -> None:
    assert format_latency(None) == "-"
    assert format_latency(0.25) == "250µs"
    assert format_latency(1.234) == "1.2ms"
    assert format_latency(42.4) == "42ms"
    assert format_latency(1500) == "1.50s"
    assert format_rate(None) == "-"
    assert format_rate(1.0) == "100.00%"
    assert format_rate(0.98765) == "98.77%"
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"
    cut = truncate_middle("/api/v2/items/7/availability", 16)
    assert len(cut) == 16 and cut.startswith("/api") and cut.endswith("availability"[-10:])


def test_top_at_80_columns_fits_and_keeps_the_important_columns() -> None:
    lines = printed(top_table(busy_model().rows(), width=80), 80)
    assert max(len(line) for line in lines) <= 80
    header = lines[0].split()
    for column in ("SOURCE", "DESTINATION", "PATH", "COUNT", "SUCCESS"):
        assert column in header
    assert "BEST" not in header  # dropped first
    body = "\n".join(lines)
    assert "…" in body  # long names and paths are cut, not wrapped
    assert len(lines) == 2 + 4  # header, rule, four rows: nothing wrapped onto a second line
    # The three paths stay distinguishable when cut: the middle goes, the end stays.
    paths = [line for line in lines if "checkout" in line]
    assert len({line.split()[3] for line in paths}) == 3


def test_top_wide_shows_every_column_uncut() -> None:
    lines = printed(top_table(busy_model().rows(), width=160), 160)
    assert lines[0].split() == ["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST", "LAST", "SUCCESS"]
    assert "/api/v2/warehouses/eu-central/items/0" in "\n".join(lines)
    first = lines[2].split()
    assert first[4] == "4" and first[-1] == "75.00%"


@pytest.mark.parametrize("width", [60, 70, 80, 100, 120])
def test_layout_never_exceeds_the_width(width: int) -> None:
    columns, widths, body = top_layout(busy_model().rows(), width)
    assert sum(widths) + 2 * (len(columns) - 1) <= width
    assert all(len(cell) <= w for row in body for cell, w in zip(row, widths, strict=True))
    lines = printed(top_table(busy_model().rows(), width=width), width)
    assert max(len(line) for line in lines) <= width


def test_empty_top_table() -> None:
    lines = printed(top_table([], width=80, title="mesh top: 0 requests"), 80)
    assert "COUNT" in "\n".join(lines)


def test_tap_line_reads_like_linkerd_tap() -> None:
    event = TapEvent.from_dict(
        {
            "direction": "outbound",
            "request_id": "b7ce2780c9cbaa4b000000003fc2fa6a",
            "src_service": "client",
            "dst_service": "web",
            "method": "GET",
            "authority": "web",
            "path": "/api",
            "status": 200,
            "latency_ms": 1.234,
            "tls": True,
        }
    )
    assert tap_line(event) == (
        "req id=…3fc2fa6a proxy=out src=client dst=web :method=GET :authority=web :path=/api "
        "→ :status=200 latency=1.2ms mtls=true"
    )
    failed = TapEvent.from_dict(
        {"direction": "inbound", "request_id": "x1", "src_service": "client", "dst_service": "web", "method": "POST",
         "authority": "web", "path": "/", "status": 504, "latency_ms": 2000, "mesh_error": "timeout", "tls": True}
    )
    assert tap_line(failed).startswith("req id=x1 proxy=in ")
    assert tap_line(failed).endswith(":status=504 latency=2.00s mtls=true error=timeout")
    egress = TapEvent.from_dict({"direction": "outbound", "src_service": "client", "authority": "example.com",
                                  "dst_address": "93.184.216.34:80", "method": "GET", "path": "/", "status": 200})
    assert "dst=93.184.216.34:80" in tap_line(egress) and "mtls=false" in tap_line(egress)
    edge = TapEvent.from_dict({"direction": "outbound", "src_service": "gateway", "src_address": "203.0.113.9",
                               "dst_service": "shop", "method": "GET", "path": "/", "status": 200})
    assert " src=gateway client=203.0.113.9 dst=shop " in tap_line(edge)


def test_top_row_dict_when_empty() -> None:
    assert TopRow("a", "b", "GET", "/").to_dict()["best_ms"] is None
