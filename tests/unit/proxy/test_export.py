"""The exporters' I/O: spans to a real OTLP/HTTP collector on loopback (decoded with the official
messages), access log lines to real files and pipes; failures cost spans and lines, counted,
never the event loop."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from mesh.config import parse_otlp_endpoint
from mesh.errors import ProxyError
from mesh.proxy import _export
from mesh.proxy._export import AccessLogWriter, SpanExporter, open_access_log
from mesh.proxy._metrics import ProxyMetrics
from mesh.telemetry import BoundedQueue, Span, SpanContext, encode_resource, encode_span, parse_prometheus_text
from tests.integration.otlp import OtlpReceiver

pytestmark = pytest.mark.timeout(30)


def span(n: int) -> bytes:
    return encode_span(Span(SpanContext(n + 1, n + 1, None, True), 3, f"GET s{n}", 1, 2, [("n", n)]))


def counter(metrics: ProxyMetrics, name: str, **labels: str) -> float:
    return sum(
        s.value for s in parse_prometheus_text(metrics.render())
        if s.name == name and all(s.labels_dict.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def receiver() -> OtlpReceiver:
    r = OtlpReceiver()
    r.start()
    yield r
    r.close()


def exporter(url: str, metrics: ProxyMetrics, limit: int = _export.SPAN_QUEUE) -> SpanExporter:
    queue: BoundedQueue[bytes] = BoundedQueue(limit, min(_export.SPAN_BATCH, limit), metrics.spans_dropped.labels("queue-full").inc)
    return SpanExporter(parse_otlp_endpoint(url), queue, encode_resource([("service.name", "web")]), metrics)


async def wait_until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


async def test_spans_leave_in_batches_on_one_connection(receiver: OtlpReceiver) -> None:
    metrics = ProxyMetrics()
    spans = exporter(receiver.url, metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spans.run)
        for n in range(600):
            spans.queue.put(span(n))
        # The collector holds the spans before it answers: wait for the answer too.
        await wait_until(lambda: counter(metrics, "trace_spans_exported_total") == 600)
        nursery.cancel_scope.cancel()
    assert [s.name for s in receiver.spans] == [f"GET s{n}" for n in range(600)]
    assert receiver.spans[0].resource == {"service.name": "web"}
    assert len(receiver.posts) == 2  # 512, then the rest
    assert {p["path"] for p in receiver.posts} == {"/v1/traces"}
    assert {p["content-type"] for p in receiver.posts} == {"application/x-protobuf"}


async def test_retryable_refusals_are_retried_then_the_batch_is_dropped(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_export, "RETRY_DELAYS", (0.01, 0.01))
    monkeypatch.setattr(_export, "SPAN_DELAY", 0.05)
    metrics = ProxyMetrics()
    spans = exporter(receiver.url, metrics)
    receiver.status = 503
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spans.run)
        for n in range(3):
            spans.queue.put(span(n))
        await wait_until(lambda: counter(metrics, "trace_spans_dropped_total", reason="export-failed") == 3)
        assert len(receiver.posts) == 3  # the first try and two retries
        receiver.status = 400  # not retryable: one try
        spans.queue.put(span(3))
        await wait_until(lambda: counter(metrics, "trace_spans_dropped_total", reason="export-failed") == 4)
        assert len(receiver.posts) == 4
        receiver.status = 200  # the collector is back: spans flow again
        spans.queue.put(span(4))
        await wait_until(lambda: counter(metrics, "trace_spans_exported_total") == 1)
        nursery.cancel_scope.cancel()
    assert len(receiver.spans) == 1


async def test_no_collector_costs_spans_not_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_export, "RETRY_DELAYS", (0.01,))
    monkeypatch.setattr(_export, "SPAN_DELAY", 0.05)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    metrics = ProxyMetrics()
    spans = exporter(f"http://127.0.0.1:{port}", metrics, limit=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spans.run)
        for n in range(10):  # more than the queue holds: the rest are dropped at once
            spans.queue.put(span(n))
        assert counter(metrics, "trace_spans_dropped_total", reason="queue-full") == 6
        await wait_until(lambda: counter(metrics, "trace_spans_dropped_total", reason="export-failed") == 4)
        nursery.cancel_scope.cancel()


async def test_what_is_queued_is_sent_at_shutdown(receiver: OtlpReceiver) -> None:
    metrics = ProxyMetrics()
    spans = exporter(receiver.url, metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spans.run)
        await trio.sleep(0.05)
        for n in range(5):
            spans.queue.put(span(n))
        nursery.cancel_scope.cancel()  # well before the batch delay
    assert len(receiver.spans) == 5


def writer(target: str, metrics: ProxyMetrics, limit: int = _export.LINE_QUEUE) -> AccessLogWriter:
    queue: BoundedQueue[str] = BoundedQueue(limit, min(_export.LINE_BATCH, limit), metrics.log_dropped.labels("queue-full").inc)
    return AccessLogWriter(target, queue, metrics)


async def test_lines_are_appended_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text('{"earlier": true}\n')
    metrics = ProxyMetrics()
    lines = writer(str(path), metrics)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lines.run)
        for n in range(1000):
            lines.queue.put(f'{{"n": {n}}}')
        await wait_until(lambda: counter(metrics, "access_log_lines_total") == 1000)
        lines.queue.put('{"last": 1}')
        nursery.cancel_scope.cancel()
    text = path.read_text().splitlines()
    assert text[0] == '{"earlier": true}' and text[1:1001] == [f'{{"n": {n}}}' for n in range(1000)]
    assert text[-1] == '{"last": 1}'  # flushed at shutdown
    new = tmp_path / "new.log"
    os.close(open_access_log(str(new)))
    assert new.stat().st_mode & 0o777 == 0o600


async def test_a_failing_write_drops_lines_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_export, "LINE_DELAY", 0.01)
    metrics = ProxyMetrics()
    lines = writer("/dev/full", metrics)  # every write: ENOSPC
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lines.run)
        for _ in range(3):
            lines.queue.put("x")
        await wait_until(lambda: counter(metrics, "access_log_dropped_lines_total", reason="write-failed") == 3)
        nursery.cancel_scope.cancel()


async def test_a_pipe_nobody_reads_never_stalls_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_export, "LINE_DELAY", 0.01)
    monkeypatch.setattr(_export, "FLUSH_TIMEOUT", 0.2)
    read_end, write_end = os.pipe()
    try:
        metrics = ProxyMetrics()
        lines = writer(f"/proc/self/fd/{write_end}", metrics, limit=100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lines.run)
            line = "y" * 1000
            for _ in range(50):  # far more than a pipe holds (64 KiB)
                for _ in range(100):
                    lines.queue.put(line)
                with trio.fail_after(1):  # the event loop keeps running
                    await trio.sleep(0.01)
            assert counter(metrics, "access_log_dropped_lines_total", reason="queue-full") > 0
            nursery.cancel_scope.cancel()  # shutdown gives up on the stuck write after FLUSH_TIMEOUT
    finally:
        os.close(read_end)  # the stuck thread's write now fails (EPIPE) and it ends
        os.close(write_end)


def test_an_access_log_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProxyError) as raised:
        open_access_log(str(tmp_path / "missing" / "access.log"))
    assert "cannot open it for appending" in raised.value.message and "No such file" in raised.value.message
