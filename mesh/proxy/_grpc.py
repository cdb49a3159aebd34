"""gRPC over the mesh (sans-IO): status codes, deadlines, and how a mesh-made failure is
answered on HTTP/2 — a trailers-only ``grpc-status`` for gRPC calls, the HTTP status
with a one-line body for everything else, ``x-mesh-error`` on both."""

from __future__ import annotations

from urllib.parse import quote

from mesh.proxy._exchange import MESH_ERROR, Failure, Outcome

GRPC_OK = 0
GRPC_UNKNOWN = 2
GRPC_INVALID_ARGUMENT = 3
GRPC_DEADLINE_EXCEEDED = 4
GRPC_PERMISSION_DENIED = 7
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNIMPLEMENTED = 12
GRPC_INTERNAL = 13
GRPC_UNAVAILABLE = 14
GRPC_DATA_LOSS = 15
GRPC_UNAUTHENTICATED = 16

_HTTP_TO_GRPC = {
    400: GRPC_INTERNAL,
    401: GRPC_UNAUTHENTICATED,
    403: GRPC_PERMISSION_DENIED,
    404: GRPC_UNIMPLEMENTED,
    429: GRPC_RESOURCE_EXHAUSTED,
    502: GRPC_UNAVAILABLE,
    503: GRPC_UNAVAILABLE,
    504: GRPC_DEADLINE_EXCEEDED,
}

# For retry conditions only: gRPC statuses that mean the server side failed, as their HTTP twins.
_GRPC_TO_HTTP = {
    GRPC_UNAVAILABLE: 503,
    GRPC_DEADLINE_EXCEEDED: 504,
    GRPC_INTERNAL: 500,
    GRPC_UNKNOWN: 500,
    GRPC_DATA_LOSS: 500,
}

_GRPC_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}

Headers = list[tuple[bytes, bytes]]


def grpc_status_for(status: int) -> int:
    """The gRPC status a caller sees for an HTTP status the mesh answers with."""
    return _HTTP_TO_GRPC.get(status, GRPC_UNAVAILABLE if status >= 500 else GRPC_UNKNOWN)


def parse_grpc_timeout(value: bytes | None) -> float | None:
    """``grpc-timeout`` (e.g. ``100m``) in seconds; None when absent or malformed."""
    if not value or len(value) < 2 or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or unit not in _GRPC_UNITS:
        return None
    return int(digits) * _GRPC_UNITS[unit]


def status_for_retry(status: int, grpc_status: int | None) -> int:
    """The HTTP status a route's retry conditions see: a gRPC failure counts as its HTTP twin."""
    if status == 200 and grpc_status is not None:
        return _GRPC_TO_HTTP.get(grpc_status, 200)
    return status


def grpc_status_of(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() else None
    return None


def failure_response(failure: Failure, grpc: bool, outcome: Outcome) -> tuple[Headers, bytes | None]:
    """The HTTP/2 answer to ``failure`` (headers, then a body or None for trailers-only), recorded
    in ``outcome`` as the client sees it."""
    outcome.mesh_error = failure.reason
    reason = failure.reason.value.encode()
    if grpc:
        code = grpc_status_for(failure.status)
        outcome.status, outcome.grpc_status = 200, code
        return [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"%d" % code),
            (b"grpc-message", quote(f"mesh: {failure.message}", safe=" ").encode()),
            (MESH_ERROR, reason),
            *failure.headers,
        ], None
    outcome.status = failure.status
    body = f"mesh: {failure.message}\n".encode()
    return [
        (b":status", b"%d" % failure.status),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (MESH_ERROR, reason),
        *failure.headers,
    ], body
