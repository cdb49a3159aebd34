"""Access log lines and the bounded queue between the request path and its writers."""

from __future__ import annotations

import json
import time

import pytest

from mesh.telemetry import BoundedQueue, TapEvent, access_line, rfc3339


def event(**changes: object) -> TapEvent:
    values: dict[str, object] = dict(
        timestamp=1_700_000_000.25, proxy="client", direction="outbound", request_id="rid", src_service="client",
        src_identity="spiffe://td/svc/client", dst_service="web", dst_identity="spiffe://td/svc/web",
        dst_address="127.0.0.1:4143", method="POST", authority="web", path="/login?user=bob&token=s3cret&flag",
        status=201, latency_ms=3.14159, mesh_error=None, tls=True, grpc_status=None, response_bytes=120,
    )
    values.update(changes)
    return TapEvent(**values)  # type: ignore[arg-type]


def test_a_line_has_every_field_and_no_query_value() -> None:
    line = access_line(event(), route="login", bytes_in=310, retries=1, trace_id="ab" * 16, span_id="cd" * 8)
    assert "\n" not in line and "s3cret" not in line and "bob" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250Z",
        "proxy": "client",
        "direction": "outbound",
        "src_service": "client",
        "src_identity": "spiffe://td/svc/client",
        "dst_service": "web",
        "dst_identity": "spiffe://td/svc/web",
        "dst_address": "127.0.0.1:4143",
        "method": "POST",
        "authority": "web",
        "path": "/login?user=REDACTED&token=REDACTED&flag",
        "route": "login",
        "status": 201,
        "grpc_status": None,
        "duration_ms": 3.142,
        "bytes_in": 310,
        "bytes_out": 120,
        "retries": 1,
        "mesh_error": None,
        "request_id": "rid",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "tls": True,
    }


def test_odd_bytes_stay_one_valid_line() -> None:
    line = access_line(event(path="/a\nb\"c\u2028\udcff", authority="x\ty"), route=None, bytes_in=0, retries=0,
                       trace_id=None, span_id=None)
    assert "\n" not in line
    assert json.loads(line)["path"] == "/a\nb\"c\u2028\udcff"


def test_rfc3339() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    now = time.time()
    assert rfc3339(now).startswith(time.strftime("%Y-%m-%dT", time.gmtime(now)))


def test_the_queue_is_bounded_drops_are_counted_and_writers_woken() -> None:
    dropped: list[int] = []
    queue: BoundedQueue[int] = BoundedQueue(limit=5, batch=3, on_drop=dropped.append)
    woken: list[str] = []
    queue.on_first = lambda: woken.append("first")
    queue.on_full = lambda: woken.append("full")
    assert all(queue.put(i) for i in range(5))
    assert woken == ["first", "full"]  # once each: at the first item, at a whole batch
    assert not queue.put(5) and not queue.put(6)
    assert queue.dropped == 2 and dropped == [1, 1] and len(queue) == 5
    assert queue.take(3) == [0, 1, 2] and queue.take() == [3, 4] and len(queue) == 0
    queue.drop_batch(4)
    assert queue.dropped == 6 and dropped[-1] == 4
    with pytest.raises(ValueError):
        BoundedQueue(limit=2, batch=3)
