"""What an exchange's outcome means, for HTTP/1 and HTTP/2 alike (sans-IO, no trio).

One classification serves the balancer and outlier detection (``endpoint_verdict``)
and the metrics (``classify``, from mesh.telemetry): a client that goes away is
``client-reset``, which is never the endpoint's failure and never lowers a
service's success rate.
"""

from __future__ import annotations

from mesh.telemetry import CLIENT_RESET, GRPC_SERVER_FAULTS, classify, server_failed

__all__ = ["CLIENT_RESET", "GRPC_SERVER_FAULTS", "classify", "endpoint_verdict"]


def endpoint_verdict(status: int, mesh_error: str | None, grpc_status: int | None = None) -> bool | None:
    """What an exchange says of the endpoint that served it: True (healthy), False (failed),
    None (nothing: the client went away before the endpoint was done)."""
    if mesh_error == CLIENT_RESET:
        return False if server_failed(status, grpc_status) else None
    return mesh_error is None and not server_failed(status, grpc_status)
