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

import time
from json.encoder import encode_basestring_ascii

from mesh.telemetry._tap import TapEvent, redact_query

# The line is formatted by hand with json's own C string encoder: 2-3 times faster than
# json.dumps of a dict (measured: docs/performance.md, "Access logs"), and the same JSON.
_LINE = (
    '{"time":"%s","proxy":%s,"direction":%s,"src_service":%s,"src_identity":%s,"dst_service":%s,'
    '"dst_identity":%s,"dst_address":%s,"method":%s,"authority":%s,"path":%s,"route":%s,"status":%d,'
    '"grpc_status":%s,"duration_ms":%r,"bytes_in":%d,"bytes_out":%d,"retries":%d,"mesh_error":%s,'
    '"request_id":%s,"trace_id":%s,"span_id":%s,"tls":%s}'
)
_second = -1
_second_text = ""


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def rfc3339(timestamp: float) -> str:
    """``2025-01-31T12:00:00.123Z``"""
    global _second, _second_text
    seconds = int(timestamp)
    if seconds != _second:  # strftime once a second, not once a line
        _second, _second_text = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_second_text}.{int((timestamp - seconds) * 1000):03d}Z"


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
    return _LINE % (
        rfc3339(event.timestamp),
        _text(event.proxy),
        _text(event.direction),
        _text(event.src_service),
        _text(event.src_identity),
        _text(event.dst_service),
        _text(event.dst_identity),
        _text(event.dst_address),
        _text(event.method),
        _text(event.authority),
        _text(redact_query(event.path)),
        _text(route),
        event.status,
        "null" if event.grpc_status is None else str(event.grpc_status),
        round(event.latency_ms, 3),
        bytes_in,
        event.response_bytes or 0,
        retries,
        _text(event.mesh_error),
        _text(event.request_id),
        _text(trace_id),
        _text(span_id),
        "true" if event.tls else "false",
    )
