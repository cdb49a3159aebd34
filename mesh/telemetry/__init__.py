"""Telemetry: the metrics registry, the Prometheus text format, and tap events.

Pure and synchronous (no trio): the proxy increments and publishes, the admin
server renders and streams, the controller and the CLI parse what other proxies expose.
"""

from __future__ import annotations

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
from mesh.telemetry._quantile import histogram_quantile
from mesh.telemetry._sample import Sample
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

__all__ = [
    "DEFAULT_MAX_QUEUE",
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
