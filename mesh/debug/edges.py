"""`mesh edges`: who calls whom, from the controller's ``/v1/stats`` answer (pure).

An edge is a (source service → destination service) pair that some proxy has
carried traffic for since it started: the source's outbound metrics, the
destination's inbound ones, or both (``seen_by``). Each side's SPIFFE identity
comes from the registry (registrations are authenticated by the proxy's own
certificate). ``mtls`` is true between meshed services: a proxy dials another
only over mTLS with the peer's identity checked, and an inbound proxy takes
nothing else. Calls that leave the mesh go to ``egress``, without mTLS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EdgeRow:
    src: str
    dst: str
    src_identity: str  # several instances with their own identities: comma-separated
    dst_identity: str | None  # None for egress
    mtls: bool
    total_requests: int
    requests: int  # within the stats window
    success_rate: float | None
    seen_by: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seen_by"] = list(self.seen_by)
        return data


def edge_rows(stats: Mapping[str, Any], service: str | None = None) -> list[EdgeRow]:
    """Edges sorted by source then destination; only those touching ``service`` when given."""
    rows = []
    for edge in stats.get("edges") or []:
        src, dst = str(edge.get("src", "")), str(edge.get("dst", ""))
        if service is not None and service not in (src, dst):
            continue
        dst_ids = edge.get("dst_identities") or []
        rows.append(
            EdgeRow(
                src=src,
                dst=dst,
                src_identity=", ".join(edge.get("src_identities") or []) or "-",
                dst_identity=", ".join(dst_ids) if dst_ids else None,
                mtls=bool(edge.get("mtls")),
                total_requests=int(edge.get("total_requests") or 0),
                requests=int(edge.get("requests") or 0),
                success_rate=edge.get("success_rate"),
                seen_by=tuple(edge.get("seen_by") or ()),
            )
        )
    return sorted(rows, key=lambda r: (r.src, r.dst))
