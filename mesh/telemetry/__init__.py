"""Telemetry: the metrics registry, the Prometheus text format, tap events, trace context,
spans and their OTLP encoding, and access log lines.

Pure and synchronous (no trio): the proxy increments and publishes, the admin
server renders and streams, the controller and the CLI parse what other proxies expose;
the proxy's exporters (mesh.proxy._export) do the I/O for spans and access logs.
"""

from __future__ import annotations

from mesh.telemetry._access_log import access_line, rfc3339
from mesh.telemetry._buffer import BoundedQueue
from mesh.telemetry._classify import CLIENT_RESET, GRPC_SERVER_FAULTS, classify, server_failed
from mesh.telemetry._exposition import CONTENT_TYPE, parse_prometheus_text
from mesh.telemetry._metrics import (
    DEFAULT_LATENCY_BUCKETS_MS,
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    Histogram,
    HistogramChild,
    LabelValue,
    MetricsRegistry,
)
from mesh.telemetry._otlp import (
    CONTENT_TYPE as OTLP_CONTENT_TYPE,
    encode_request,
    encode_resource,
    encode_scope,
    encode_span,
)
from mesh.telemetry._quantile import histogram_quantile
from mesh.telemetry._sample import Sample
from mesh.telemetry._spans import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, Span, resource_attributes, span_from
from mesh.telemetry._tap import (
    DEFAULT_MAX_QUEUE,
    REDACTED,
    SHOW_QUERY,
    Subscription,
    TapEvent,
    TapFilter,
    TapHub,
    query_values_asked,
    redact_query,
)
from mesh.telemetry._trace import (
    TRACE_HEADERS,
    Propagated,
    SpanContext,
    Tracer,
    extract,
    parse_traceparent,
    trace_id_of,
)

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "OTLP_CONTENT_TYPE",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_SERVER",
    "TRACE_HEADERS",
    "BoundedQueue",
    "Propagated",
    "Span",
    "SpanContext",
    "Tracer",
    "access_line",
    "encode_request",
    "encode_resource",
    "encode_scope",
    "encode_span",
    "extract",
    "parse_traceparent",
    "resource_attributes",
    "rfc3339",
    "span_from",
    "trace_id_of",
    "CLIENT_RESET",
    "GRPC_SERVER_FAULTS",
    "classify",
    "server_failed",
    "CONTENT_TYPE",
    "DEFAULT_LATENCY_BUCKETS_MS",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "LabelValue",
    "MetricsRegistry",
    "REDACTED",
    "SHOW_QUERY",
    "Sample",
    "Subscription",
    "TapEvent",
    "TapFilter",
    "TapHub",
    "histogram_quantile",
    "parse_prometheus_text",
    "query_values_asked",
    "redact_query",
]
