"""`mesh edges`: who calls whom, with both identities and mTLS, from the controller's stats."""

from __future__ import annotations

import io
from typing import Any

from mesh.debug.edges import edge_rows
from mesh.debug.render import edges_table

STATS: dict[str, Any] = {
    "edges": [
        {
            "src": "web",
            "dst": "db",
            "src_identities": ["spiffe://mesh.local/svc/web"],
            "dst_identities": ["spiffe://mesh.local/svc/db"],
            "mtls": True,
            "seen_by": ["destination"],
            "total_requests": 7,
            "requests": 2,
            "success_rate": 1.0,
        },
        {
            "src": "client",
            "dst": "web",
            "src_identities": ["spiffe://mesh.local/svc/client"],
            "dst_identities": ["spiffe://mesh.local/svc/web", "spiffe://mesh.local/svc/web-canary"],
            "mtls": True,
            "seen_by": ["source", "destination"],
            "total_requests": 100,
            "requests": 40,
            "success_rate": 0.975,
        },
        {
            "src": "client",
            "dst": "egress",
            "src_identities": ["spiffe://mesh.local/svc/client"],
            "dst_identities": [],
            "mtls": False,
            "seen_by": ["source"],
            "total_requests": 3,
            "requests": 0,
            "success_rate": None,
        },
    ]
}


def test_rows_sorted_with_identities_and_mtls() -> None:
    rows = edge_rows(STATS)
    assert [(r.src, r.dst) for r in rows] == [("client", "egress"), ("client", "web"), ("web", "db")]
    egress, web, db = rows
    assert egress.mtls is False and egress.dst_identity is None
    assert web.src_identity == "spiffe://mesh.local/svc/client"
    assert web.dst_identity == "spiffe://mesh.local/svc/web, spiffe://mesh.local/svc/web-canary"
    assert web.mtls and web.total_requests == 100 and web.seen_by == ("source", "destination")
    assert db.to_dict()["seen_by"] == ["destination"]


def test_filter_by_service() -> None:
    assert [(r.src, r.dst) for r in edge_rows(STATS, "db")] == [("web", "db")]
    assert [(r.src, r.dst) for r in edge_rows(STATS, "web")] == [("client", "web"), ("web", "db")]
    assert edge_rows({}, None) == []


def test_table() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=120, force_terminal=False, color_system=None).print(edges_table(edge_rows(STATS)))
    text = buffer.getvalue()
    assert "SRC IDENTITY" in text and "spiffe://mesh.local/svc/client" in text
    lines = text.splitlines()
    assert next(line for line in lines if "egress" in line).split()[-2:] == ["no", "3"]
