"""The proxy's telemetry beyond metrics: spans to an OTLP/HTTP collector, access log lines to a
file or stdout. Each is off unless configured, and then a background task fed by a
``BoundedQueue`` that the request path only appends to (``mesh.proxy._observe``).

Never blocking a request: the queues are bounded (spans 2048, encoded: ~1.2 MB at most;
lines 4096: ~2.2 MB) and drop what
does not fit, counted (``trace_spans_dropped_total``, ``access_log_dropped_lines_total``);
spans leave in batches of up to 512 at least once a second, lines in batches every 200 ms
or 512 lines. A collector that refuses or does not answer costs a batch after a few
tries (OTLP/HTTP: 429, 502, 503, 504 and connection failures are retried with backoff),
never the proxy's memory. Access log writes run in a worker thread, so a slow disk or a
stdout pipe nobody reads fills the queue (and drops lines), never stalls the event loop.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from mesh import __version__
from mesh.errors import ProxyError
from mesh.net import HttpConnection, HttpFailure
from mesh.telemetry import (
    OTLP_CONTENT_TYPE,
    BoundedQueue,
    Tracer,
    encode_request,
    encode_resource,
    encode_scope,
    resource_attributes,
)

if TYPE_CHECKING:
    from mesh.config import OtlpEndpoint

log = logging.getLogger("mesh.proxy")

SPAN_QUEUE, SPAN_BATCH, SPAN_DELAY = 2048, 512, 1.0  # OpenTelemetry's BatchSpanProcessor sizes; 1 s, not 5
LINE_QUEUE, LINE_BATCH, LINE_DELAY = 4096, 512, 0.2
CONNECT_TIMEOUT, EXPORT_TIMEOUT = 5.0, 10.0
RETRY_DELAYS = (0.5, 1.0, 2.0)  # then the batch is dropped
RETRYABLE = frozenset({429, 502, 503, 504})  # the OTLP/HTTP spec's retryable answers
FLUSH_TIMEOUT = 2.0  # at shutdown, for what is still queued
REPORT_EVERY = 60.0  # seconds between warnings while an exporter keeps failing
STDOUT = "-"


@dataclass(frozen=True)
class TelemetrySettings:
    """What a proxy exports beyond metrics (``--otlp-endpoint``, ``--trace-sample``, ``--access-log``)."""

    otlp_endpoint: OtlpEndpoint | None = None  # None: no tracing at all
    trace_sample: float = 1.0
    access_log: str | None = None  # a path, or "-" for stdout; None: no access log

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None or self.access_log is not None


class _Failing:
    """Warn when an exporter starts failing, then at most once a minute; say when it recovers."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.reported = 0.0
        self.lost = 0

    def failed(self, reason: str, lost: int) -> None:
        now = time.monotonic()
        self.lost += lost
        if self.since is None:
            self.since = now
        if now - self.reported >= REPORT_EVERY:
            log.warning("%s: %s (%d dropped so far)", self.what, reason, self.lost)
            self.reported = now

    def succeeded(self) -> None:
        if self.since is not None:
            log.info("%s works again after %.0fs", self.what, time.monotonic() - self.since)
            self.since, self.reported = None, 0.0


async def _next_batch(queue: BoundedQueue[Any], delay: float) -> list[Any]:
    """Wait for a first item, then up to ``delay`` for a whole batch; take up to a batch."""
    while not queue.items:
        first = trio.Event()
        queue.on_first = first.set
        await first.wait()
    queue.on_first = None
    if len(queue) < queue.batch:
        full = trio.Event()
        queue.on_full = full.set
        with trio.move_on_after(delay):
            await full.wait()
        queue.on_full = None
    return queue.take(queue.batch)


class _ExportFailed(Exception):
    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class SpanExporter:
    """Batches of spans, POSTed as OTLP/HTTP protobuf over one keep-alive connection."""

    def __init__(self, endpoint: OtlpEndpoint, queue: BoundedQueue[bytes], resource: bytes, metrics: Any) -> None:
        self.endpoint = endpoint
        self.queue = queue
        self.resource = resource
        self.scope = encode_scope("mesh", __version__)
        self.exported = metrics.spans_exported
        self.failed_export = metrics.spans_dropped.labels("export-failed")
        self._tls: ssl.SSLContext | None = ssl.create_default_context() if endpoint.tls else None
        self._connection: HttpConnection | None = None
        self._failing = _Failing(f"exporting spans to {endpoint.url}")

    async def run(self) -> None:
        try:
            while True:
                await self._deliver(await _next_batch(self.queue, SPAN_DELAY), RETRY_DELAYS)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                while self.queue.items:  # shutting down: what is left, one try each
                    await self._deliver(self.queue.take(self.queue.batch), ())
            self._close()

    async def _deliver(self, spans: list[bytes], retry_delays: tuple[float, ...]) -> None:
        body = encode_request(self.resource, self.scope, spans)
        for attempt in range(len(retry_delays) + 1):
            try:
                await self._post(body)
            except _ExportFailed as exc:
                if not exc.retryable or attempt == len(retry_delays):
                    self.failed_export.inc(len(spans))
                    self._failing.failed(exc.reason, len(spans))
                    return
                await trio.sleep(retry_delays[attempt])
            else:
                self.exported.inc(len(spans))
                self._failing.succeeded()
                return

    async def _post(self, body: bytes) -> None:
        endpoint = self.endpoint
        try:
            with trio.fail_after(EXPORT_TIMEOUT):
                if self._connection is None:
                    self._connection = await HttpConnection.open(
                        endpoint.host, endpoint.port, self._tls, CONNECT_TIMEOUT
                    )
                status, answer = await self._connection.post(endpoint.path, body, {"Content-Type": OTLP_CONTENT_TYPE})
        except HttpFailure as exc:
            self._close()
            raise _ExportFailed(str(exc), retryable=True) from None
        except trio.TooSlowError:
            self._close()
            raise _ExportFailed(f"no answer within {EXPORT_TIMEOUT:g}s", retryable=True) from None
        if not self._connection.reusable:
            self._close()
        if 200 <= status < 300:
            return
        text = answer[:200].decode("utf-8", "replace").strip()
        raise _ExportFailed(f"the collector answered {status}{': ' + text if text else ''}", status in RETRYABLE)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close_now()
            self._connection = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class AccessLogWriter:
    """Lines appended to a file (opened O_APPEND: several proxies may share one) or to stdout."""

    def __init__(self, target: str, queue: BoundedQueue[str], metrics: Any) -> None:
        self.target = target
        self.queue = queue
        self.written = metrics.log_lines
        self.failed_write = metrics.log_dropped.labels("write-failed")
        self._failing = _Failing(f"writing the access log {'to stdout' if target == STDOUT else target}")
        self.fd = 1 if target == STDOUT else open_access_log(target)
        self._writing = False  # a worker thread is in os.write: the fd must stay open

    async def run(self) -> None:
        try:
            while True:
                await self._write(await _next_batch(self.queue, LINE_DELAY))
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(FLUSH_TIMEOUT):
                while self.queue.items:
                    await self._write(self.queue.take())
            if self.fd != 1 and not self._writing:
                os.close(self.fd)  # else a stuck write still uses it: it closes when the process exits

    async def _write(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        self._writing = True
        try:
            # A worker thread: a full disk or a pipe nobody reads must not stall the event loop.
            # Abandoned on cancel (shutdown): the thread finishes or dies with the process.
            await trio.to_thread.run_sync(_write_all, self.fd, data, abandon_on_cancel=True)
            self._writing = False
        except OSError as exc:
            self._writing = False
            self.failed_write.inc(len(lines))
            self._failing.failed(exc.strerror or str(exc), len(lines))
            return
        self.written.inc(len(lines))
        self._failing.succeeded()


def open_access_log(path: str) -> int:
    """Open (create, owner-only) the access log for appending; a clear error when it cannot be."""
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ProxyError(
            f"--access-log {path}: cannot open it for appending: {exc.strerror or exc}",
            hint="give a file in a directory that exists and that this user may write, or - for stdout",
        ) from None


class Telemetry:
    """A proxy's tracer and exporters, as its settings ask; ``tasks`` run in the background."""

    def __init__(
        self, settings: TelemetrySettings, metrics: Any, service: str, identity: str, labels: dict[str, str]
    ) -> None:
        self.settings = settings
        self.tracer: Tracer | None = None
        self.spans: BoundedQueue[bytes] | None = None  # encoded spans
        self.lines: BoundedQueue[str] | None = None
        self.tasks: list[Callable[[], Awaitable[None]]] = []
        if settings.otlp_endpoint is not None:
            self.tracer = Tracer(settings.trace_sample)
            self.spans = BoundedQueue(SPAN_QUEUE, SPAN_BATCH, metrics.spans_dropped.labels("queue-full").inc)
            resource = encode_resource(resource_attributes(service, identity, labels, __version__))
            self.tasks.append(SpanExporter(settings.otlp_endpoint, self.spans, resource, metrics).run)
        if settings.access_log is not None:
            self.lines = BoundedQueue(LINE_QUEUE, LINE_BATCH, metrics.log_dropped.labels("queue-full").inc)
            self.tasks.append(AccessLogWriter(settings.access_log, self.lines, metrics).run)

    def describe(self) -> dict[str, Any]:
        """For ``/config``."""
        endpoint = self.settings.otlp_endpoint
        return {
            "otlp_endpoint": endpoint.url if endpoint is not None else None,
            "trace_sample": self.settings.trace_sample if endpoint is not None else None,
            "spans_queued": len(self.spans) if self.spans is not None else None,
            "access_log": self.settings.access_log,
            "lines_queued": len(self.lines) if self.lines is not None else None,
        }
