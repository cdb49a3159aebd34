"""Access log lines: one JSON object per request, per proxy that saw it (pure).

A meshed call is logged twice, as the tap shows it twice: by the caller's proxy
(``direction`` outbound) and by the callee's (inbound), with the same ``request_id``
and ``trace_id``. The line is built from the request's ``TapEvent`` (the same source
and destination the tap and ``mesh top`` show) and redacts query-string values the
way the tap does (``?token=REDACTED``).

Fields: ``time`` (the request's start, RFC 3339 UTC, milliseconds), ``proxy``,
``direction``, ``src_service``, ``src_identity``, ``dst_service``, ``dst_identity``,
``dst_address`` (outbound: the endpoint chosen; inbound: the app), ``method``,
``authority``, ``path``, ``route``, ``status`` (0: no response), ``grpc_status``,
``duration_ms``, ``bytes_in``, ``bytes_out``, ``retries``, ``mesh_error``,
``request_id``, ``trace_id``, ``span_id`` (the proxy's span, when tracing is on), ``tls``.
"""

from __future__ import annotations

import json
import time

from mesh.telemetry._tap import TapEvent, redact_query

_encode = json.JSONEncoder(separators=(",", ":")).encode


def rfc3339(timestamp: float) -> str:
    """``2025-01-31T12:00:00.123Z``"""
    seconds = int(timestamp)
    millis = int((timestamp - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % millis


def access_line(
    event: TapEvent,
    *,
    route: str | None,
    bytes_in: int,
    retries: int,
    trace_id: str | None,
    span_id: str | None,
) -> str:
    """One request's line (no newline)."""
    return _encode(
        {
            "time": rfc3339(event.timestamp),
            "proxy": event.proxy,
            "direction": event.direction,
            "src_service": event.src_service,
            "src_identity": event.src_identity,
            "dst_service": event.dst_service,
            "dst_identity": event.dst_identity,
            "dst_address": event.dst_address,
            "method": event.method,
            "authority": event.authority,
            "path": redact_query(event.path),
            "route": route,
            "status": event.status,
            "grpc_status": event.grpc_status,
            "duration_ms": round(event.latency_ms, 3),
            "bytes_in": bytes_in,
            "bytes_out": event.response_bytes or 0,
            "retries": retries,
            "mesh_error": event.mesh_error,
            "request_id": event.request_id,
            "trace_id": trace_id,
            "span_id": span_id,
            "tls": event.tls,
        }
    )
