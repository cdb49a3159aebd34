"""The proxy's metric set (Linkerd's names, DESIGN.md section 5)."""

from __future__ import annotations

import time
from typing import Any

from mesh.proxy._exchange import RequestRecord, classify
from mesh.telemetry import MetricsRegistry


class ProxyMetrics:
    def __init__(self, registry: MetricsRegistry | None = None) -> None:
        self.registry = registry = registry or MetricsRegistry()
        self._series: dict[tuple[str, str, int, str | None, int | None], tuple[Any, ...]] = {}
        self.requests = registry.counter(
            "request_total", "Requests received by the proxy.", ("direction", "peer_service")
        )
        self.responses = registry.counter(
            "response_total",
            "Responses sent by the proxy, including the errors the mesh made itself.",
            ("direction", "peer_service", "status_code", "classification", "mesh_error"),
        )
        self.latency = registry.histogram(
            "response_latency_ms",
            "Time from the request head to the end of the response, in milliseconds.",
            ("direction", "peer_service", "status_class"),
        )
        self.retries = registry.counter(
            "retry_total",
            "Extra attempts made by retry policies (actual requests = request_total + retry_total).",
            ("direction", "peer_service"),
        )
        self.route_responses = registry.counter(
            "route_response_total",
            "Responses per route of the caller's route table.",
            ("peer_service", "route", "classification"),
        )
        self.route_latency = registry.histogram(
            "route_response_latency_ms", "Latency per route, in milliseconds.", ("peer_service", "route")
        )
        self.tcp_open = registry.gauge("tcp_open_connections", "Connections accepted and still open.", ("direction",))
        self.tcp_read = registry.counter(
            "tcp_read_bytes_total", "Bytes read from accepted connections.", ("direction",)
        )
        self.tcp_write = registry.counter(
            "tcp_write_bytes_total", "Bytes written to accepted connections.", ("direction",)
        )
        self.tcp_denied = registry.counter(
            "tcp_authz_deny_total",
            "Opaque TCP streams refused by policy before a byte reached the app.",
            ("direction", "peer_service"),
        )
        self.tls_failures = registry.counter(
            "tls_handshake_failures_total",
            "mTLS handshakes refused (inbound: a caller; outbound: a peer), or the identity check after them.",
            ("direction", "reason"),
        )
        self.revoked_closed = registry.counter(
            "revoked_connections_closed_total",
            "Open mTLS connections closed because the peer's certificate (or this proxy's) was revoked.",
        )
        self.controller_connected = registry.gauge(
            "controller_connected", "1 while the proxy holds a watch on the controller."
        )
        self.cert_expiry = registry.gauge(
            "identity_cert_expiry_timestamp_seconds", "Expiry of the proxy's workload certificate (Unix time)."
        )
        self.tap_dropped = registry.counter(
            "tap_dropped_events_total", "Tap events dropped because a listener did not keep up."
        )
        self.tap_listeners = registry.gauge("tap_listeners", "Open /tap streams (0: no tap events are built).")
        # Spans and access logs (each off unless configured; mesh.proxy._export).
        self.spans_exported = registry.counter("trace_spans_exported_total", "Spans the OTLP collector accepted.")
        self.spans_dropped = registry.counter(
            "trace_spans_dropped_total",
            "Spans dropped: the queue was full (queue-full) or the collector did not take them (export-failed).",
            ("reason",),
        )
        self.log_lines = registry.counter("access_log_lines_total", "Access log lines written.")
        self.log_dropped = registry.counter(
            "access_log_dropped_lines_total",
            "Access log lines dropped: the queue was full (queue-full) or the write failed (write-failed).",
            ("reason",),
        )
        # Counters start at zero then: the controller's rates use it as a baseline.
        self.start_time = registry.gauge("process_start_time_seconds", "When the proxy started (Unix time).")
        self.start_time.set(round(time.time(), 3))

    def record(self, rec: RequestRecord) -> None:
        # One dict lookup per request finds the three series this outcome updates.
        key = (rec.direction, rec.peer_service, rec.status, rec.mesh_error, rec.grpc_status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new_series(*key)
        requests, responses, latency = series
        requests.inc()
        responses.inc()
        latency.observe(rec.latency_ms)
        if rec.retries:
            self.retries.labels(rec.direction, rec.peer_service).inc(rec.retries)
        forward = rec.forward
        if forward is not None and forward.route is not None:
            classification = classify(rec.status, rec.mesh_error, rec.grpc_status)
            self.route_responses.labels(rec.peer_service, forward.route, classification).inc()
            self.route_latency.labels(rec.peer_service, forward.route).observe(rec.latency_ms)

    def _new_series(
        self, direction: str, peer: str, status: int, mesh_error: str | None, grpc_status: int | None = None
    ) -> tuple[Any, ...]:
        return (
            self.requests.labels(direction, peer),
            self.responses.labels(direction, peer, status, classify(status, mesh_error, grpc_status), mesh_error or ""),
            self.latency.labels(direction, peer, f"{status // 100}xx"),
        )

    def render(self) -> str:
        return self.registry.render()
