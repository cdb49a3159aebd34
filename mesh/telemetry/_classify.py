"""How an exchange's outcome is classified for metrics and tap (Linkerd's ``classification``).

A client that goes away is ``client-reset``: never a failure of the service it called,
unless the answer it left behind was one (a 5xx, a gRPC server fault).
"""

from __future__ import annotations

CLIENT_RESET = "client-reset"

# grpc-status values that say the server side failed (as 5xx do): outlier detection counts them.
GRPC_SERVER_FAULTS = frozenset({2, 4, 13, 14, 15})


def server_failed(status: int, grpc_status: int | None) -> bool:
    return status >= 500 or grpc_status in GRPC_SERVER_FAULTS


def classify(status: int, mesh_error: str | None, grpc_status: int | None = None) -> str:
    """``success`` or ``failure``. gRPC calls answer HTTP 200 either way: their grpc-status decides."""
    if mesh_error == CLIENT_RESET:
        return "failure" if server_failed(status, grpc_status) else "success"
    if mesh_error is not None or status >= 500 or status == 0 or grpc_status not in (None, 0):
        return "failure"
    return "success"
