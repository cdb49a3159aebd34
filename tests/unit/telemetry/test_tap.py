"""TapHub: nothing built or queued while nobody listens; bounded queues with counted drops; filters; max_rps."""

from __future__ import annotations

import dataclasses

import pytest

from mesh.proxy._metrics import ProxyMetrics
from mesh.telemetry import TapEvent, TapFilter, TapHub, parse_prometheus_text, query_values_asked, redact_query


def event(**changes: object) -> TapEvent:
    base = TapEvent(
        timestamp=1700000000.0,
        proxy="client",
        direction="outbound",
        request_id="abc",
        src_service="client",
        src_identity="spiffe://mesh.local/svc/client",
        dst_service="web",
        dst_identity="spiffe://mesh.local/svc/web",
        dst_address="127.0.0.1:4143",
        method="GET",
        authority="web",
        path="/api/items",
        status=200,
        latency_ms=1.5,
        mesh_error=None,
        tls=True,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------ no listener: no cost


def test_an_idle_hub_is_inactive_and_publish_touches_nothing() -> None:
    hub = TapHub()
    assert hub.active is False
    assert hub.listeners == 0

    class Explosive:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"publish looked at the event ({name}) with nobody listening")

    hub.publish(Explosive())  # type: ignore[arg-type]


def test_active_follows_subscriptions() -> None:
    hub = TapHub()
    first = hub.subscribe()
    second = hub.subscribe(TapFilter(service="web"))
    assert hub.active and hub.listeners == 2
    hub.unsubscribe(first)
    assert hub.active and hub.listeners == 1
    hub.unsubscribe(second)
    assert not hub.active and hub.listeners == 0
    hub.unsubscribe(second)  # twice is harmless
    assert not hub.active


def test_every_subscription_gets_its_own_copy_of_the_stream() -> None:
    hub = TapHub()
    a, b = hub.subscribe(), hub.subscribe()
    hub.publish(event(request_id="1"))
    hub.publish(event(request_id="2"))
    assert [e.request_id for e in a.take()] == ["1", "2"]
    assert [e.request_id for e in b.take()] == ["1", "2"]
    assert a.take() == []


# ------------------------------------------------------------ bounded queues


def test_a_full_queue_drops_new_events_and_counts_them() -> None:
    drops: list[int] = []
    hub = TapHub(on_drop=drops.append)
    slow = hub.subscribe(max_queue=3)
    fast = hub.subscribe(max_queue=100)
    for i in range(5):
        hub.publish(event(request_id=str(i)))
    assert [e.request_id for e in slow.queue] == ["0", "1", "2"]  # the oldest are kept
    assert slow.dropped == 2 and sum(drops) == 2
    assert len(fast.queue) == 5 and fast.dropped == 0  # one slow listener costs the others nothing
    assert slow.pending
    assert slow.take_dropped() == 2
    assert slow.take_dropped() == 0  # told once
    assert slow.dropped == 2  # the total stays


def test_drops_feed_the_tap_dropped_events_total_metric() -> None:
    metrics = ProxyMetrics()
    hub = TapHub(on_drop=metrics.tap_dropped.inc)
    hub.subscribe(max_queue=1)
    for _ in range(4):
        hub.publish(event())
    samples = parse_prometheus_text(metrics.render())
    assert [s.value for s in samples if s.name == "tap_dropped_events_total"] == [3]


def test_take_with_a_limit_leaves_the_rest() -> None:
    hub = TapHub()
    sub = hub.subscribe()
    for i in range(5):
        hub.publish(event(request_id=str(i)))
    assert [e.request_id for e in sub.take(2)] == ["0", "1"]
    assert [e.request_id for e in sub.take()] == ["2", "3", "4"]


def test_notify_fires_when_an_empty_queue_gets_an_event() -> None:
    hub = TapHub()
    sub = hub.subscribe()
    calls: list[int] = []
    sub.set_notify(lambda: calls.append(1))
    hub.publish(event())
    hub.publish(event())
    assert len(calls) == 1  # the reader is awake already
    sub.take()
    hub.publish(event())
    assert len(calls) == 2


def test_bad_limits_are_refused() -> None:
    hub = TapHub()
    with pytest.raises(ValueError):
        hub.subscribe(max_queue=0)
    with pytest.raises(ValueError):
        hub.subscribe(max_rps=0)


# ------------------------------------------------------------ filters


@pytest.mark.parametrize(
    ("tap_filter", "matches"),
    [
        (TapFilter(), True),
        (TapFilter(service="web"), True),  # the destination
        (TapFilter(service="client"), True),  # the source
        (TapFilter(service="db"), False),
        (TapFilter(direction="outbound"), True),
        (TapFilter(direction="inbound"), False),
        (TapFilter(path_prefix="/api"), True),
        (TapFilter(path_prefix="/api/items/7"), False),
        (TapFilter(path_prefix="/"), True),
        (TapFilter(method="GET"), True),
        (TapFilter(method="POST"), False),
        (TapFilter(authority="web"), True),
        (TapFilter(authority="db"), False),
        (TapFilter(service="web", method="GET", path_prefix="/api", direction="outbound"), True),
        (TapFilter(service="web", method="POST", path_prefix="/api"), False),
    ],
)
def test_filters(tap_filter: TapFilter, matches: bool) -> None:
    assert tap_filter.matches(event()) is matches


def test_authority_matches_with_or_without_the_port() -> None:
    assert TapFilter(authority="web").matches(event(authority="web:8080"))
    assert TapFilter(authority="web:8080").matches(event(authority="Web:8080"))
    assert not TapFilter(authority="web:9090").matches(event(authority="web:8080"))


def test_egress_events_match_neither_service() -> None:
    egress = event(dst_service=None, authority="example.com")
    assert TapFilter(service="client").matches(egress)
    assert not TapFilter(service="example.com").matches(egress)


def test_only_matching_events_are_queued() -> None:
    hub = TapHub()
    sub = hub.subscribe(TapFilter(path_prefix="/admin"))
    hub.publish(event(path="/api"))
    hub.publish(event(path="/admin/users"))
    assert [e.path for e in sub.take()] == ["/admin/users"]


def test_filter_from_query_and_back() -> None:
    query = {"service": "web", "path": "/api", "method": "get", "direction": "inbound", "authority": "Web", "max_rps": "50"}
    tap_filter, max_rps = TapFilter.from_query(query)
    assert tap_filter == TapFilter(service="web", direction="inbound", path_prefix="/api", method="GET", authority="web")
    assert max_rps == 50.0
    assert TapFilter.from_query(tap_filter.to_query()) == (tap_filter, None)
    assert TapFilter.from_query({}) == (TapFilter(), None)
    assert TapFilter.from_query({"service": ""}) == (TapFilter(), None)  # empty means unset


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"direction": "sideways"}, "direction"),
        ({"path": "api"}, "path"),
        ({"max_rps": "lots"}, "max_rps"),
        ({"max_rps": "-1"}, "max_rps"),
        ({"max_rps": "nan"}, "max_rps"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_queries_say_which_parameter(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TapFilter.from_query(query)


# ------------------------------------------------------------ max_rps


def test_max_rps_samples_with_a_one_second_burst() -> None:
    clock = FakeClock()
    hub = TapHub(clock=clock)
    sub = hub.subscribe(max_rps=2)
    unlimited = hub.subscribe()
    for _ in range(5):
        hub.publish(event())
    assert len(sub.queue) == 2 and sub.rate_limited == 3
    assert sub.dropped == 0  # sampling is not dropping
    assert len(unlimited.queue) == 5  # the limit is per listener
    clock.now += 0.5  # one more token
    for _ in range(3):
        hub.publish(event())
    assert len(sub.queue) == 3
    clock.now += 10  # tokens never pile up beyond the burst
    for _ in range(5):
        hub.publish(event())
    assert len(sub.queue) == 5


def test_fractional_max_rps() -> None:
    clock = FakeClock()
    hub = TapHub(clock=clock)
    sub = hub.subscribe(max_rps=0.5)
    hub.publish(event())
    hub.publish(event())
    assert len(sub.queue) == 1
    clock.now += 2
    hub.publish(event())
    assert len(sub.queue) == 2


# ------------------------------------------------------------ events


def test_event_dict_round_trip_and_classification() -> None:
    original = event(grpc_status=None, response_bytes=42)
    data = original.to_dict()
    assert data["type"] == "request"
    assert TapEvent.from_dict(data) == original
    assert original.success
    assert not event(status=503).success
    assert not event(status=200, mesh_error="timeout").success
    assert not event(status=0).success
    assert event(status=404).success  # Linkerd counts 4xx as success: the service answered
    assert not event(grpc_status=14).success


def test_from_dict_tolerates_missing_and_extra_keys() -> None:
    parsed = TapEvent.from_dict({"type": "request", "instance": "web-1", "method": "GET", "status": 200})
    assert parsed.method == "GET" and parsed.status == 200
    assert parsed.src_service is None and parsed.tls is False


@pytest.mark.parametrize(
    ("path", "redacted"),
    [
        ("/", "/"),
        ("/search?q=cats", "/search?q=REDACTED"),
        ("/a?token=s3cr%20t&user=ada&flag&empty=", "/a?token=REDACTED&user=REDACTED&flag&empty="),
        ("/a?=v", "/a?=REDACTED"),
        ("/a?", "/a?"),
        ("/a?x=1=2&&y", "/a?x=REDACTED&&y"),
    ],
)
def test_query_values_are_redacted_keys_kept(path: str, redacted: str) -> None:
    assert redact_query(path) == redacted
    data = event(path=path).to_dict()
    assert data["path"] == redacted
    assert event(path=path).to_dict(query_values=True)["path"] == path


def test_show_query_is_one_or_zero() -> None:
    assert query_values_asked({}) is False
    assert query_values_asked({"show_query": "0"}) is False
    assert query_values_asked({"show_query": "1"}) is True
    with pytest.raises(ValueError, match="show_query must be 1 or 0"):
        query_values_asked({"show_query": "yes"})
    assert TapFilter.from_query({"show_query": "1", "service": "web"})[0] == TapFilter(service="web")
