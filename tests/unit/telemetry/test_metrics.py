from __future__ import annotations

import math

import pytest

from mesh.telemetry import (
    DEFAULT_LATENCY_BUCKETS_MS,
    CounterChild,
    MetricsRegistry,
    Sample,
    histogram_quantile,
)


def test_labels_returns_the_cached_child() -> None:
    registry = MetricsRegistry()
    requests = registry.counter("request_total", "Requests.", ("direction", "peer_service"))
    first = requests.labels("inbound", "web")
    assert isinstance(first, CounterChild)
    assert requests.labels("inbound", "web") is first
    assert requests.labels("outbound", "web") is not first
    latency = registry.histogram("response_latency_ms", "Latency.", ("direction",))
    assert latency.labels("inbound") is latency.labels("inbound")
    gauge = registry.gauge("tcp_open_connections", "Open.", ("direction",))
    assert gauge.labels("inbound") is gauge.labels("inbound")


def test_int_and_str_label_values_are_one_series() -> None:
    registry = MetricsRegistry()
    responses = registry.counter("response_total", "Responses.", ("status_code",))
    responses.labels(200).inc()
    responses.labels("200").inc(2)
    assert responses.labels(200) is responses.labels("200")
    assert registry.samples() == [Sample("response_total", (("status_code", "200"),), 3)]


@pytest.mark.parametrize("bad", [True, 1.5, None, b"x"])
def test_other_label_value_types_are_refused(bad: object) -> None:
    counter = MetricsRegistry().counter("x_total", "X.", ("a",))
    with pytest.raises(TypeError, match="label a takes a str or int value"):
        counter.labels(bad)  # type: ignore[arg-type]


def test_counter_inc_and_value() -> None:
    registry = MetricsRegistry()
    plain = registry.counter("tcp_read_bytes_total", "Bytes read.")
    plain.inc()
    plain.inc(41)
    assert plain.value == 42
    child = registry.counter("request_total", "Requests.", ("direction",)).labels("inbound")
    child.inc()
    child.inc(0.5)
    assert child.value == 1.5
    with pytest.raises(ValueError, match="only goes up"):
        child.inc(-1)


def test_wrong_label_arity() -> None:
    registry = MetricsRegistry()
    requests = registry.counter("request_total", "Requests.", ("direction", "peer_service"))
    with pytest.raises(
        ValueError, match=r"request_total takes 2 label values \(direction, peer_service\), got 1"
    ):
        requests.labels("inbound")
    with pytest.raises(ValueError, match="got 3"):
        requests.labels("inbound", "web", "extra")
    plain = registry.gauge("controller_connected", "Connected.")
    with pytest.raises(ValueError, match=r"takes 0 label values \(none\), got 1"):
        plain.labels("x")
    assert plain.labels() is plain.labels()


def test_labelled_metric_needs_labels_before_inc() -> None:
    registry = MetricsRegistry()
    requests = registry.counter("request_total", "Requests.", ("direction",))
    with pytest.raises(ValueError, match=r"request_total has labels \(direction\); pick a series"):
        requests.inc()
    latency = registry.histogram("response_latency_ms", "Latency.", ("direction",))
    with pytest.raises(ValueError, match="pick a series"):
        latency.observe(1)
    gauge = registry.gauge("g", "G.", ("a",))
    with pytest.raises(ValueError, match="pick a series"):
        gauge.set_function(lambda: 1.0)


def test_gauge_set_inc_dec() -> None:
    gauge = MetricsRegistry().gauge("tcp_open_connections", "Open.", ("direction",))
    child = gauge.labels("inbound")
    child.inc()
    child.inc(3)
    child.dec()
    assert child.value == 3
    child.set(-2.5)
    assert child.value == -2.5


def test_gauge_set_function_is_read_at_render_time() -> None:
    registry = MetricsRegistry()
    expiry = registry.gauge("identity_cert_expiry_timestamp_seconds", "Expiry.")
    now = {"value": 100.0}
    expiry.set_function(lambda: now["value"])
    assert "identity_cert_expiry_timestamp_seconds 100\n" in registry.render()
    now["value"] = 250.5
    assert expiry.value == 250.5
    assert "identity_cert_expiry_timestamp_seconds 250.5\n" in registry.render()
    with pytest.raises(ValueError, match="computed by a function"):
        expiry.inc()
    expiry.set(7)  # a stored value replaces the function
    assert expiry.value == 7
    expiry.inc()
    assert expiry.value == 8


def test_labelled_gauge_set_function_and_failing_function() -> None:
    registry = MetricsRegistry()
    gauge = registry.gauge("pool_size", "Pool.", ("peer_service",))
    gauge.labels("web").set_function(lambda: 4)

    def broken() -> float:
        raise RuntimeError("boom")

    gauge.labels("api").set_function(broken)
    samples = {sample.label("peer_service"): sample.value for sample in registry.samples()}
    assert samples["web"] == 4
    assert math.isnan(samples["api"])  # a broken function does not break /metrics
    assert 'pool_size{peer_service="api"} NaN\n' in registry.render()


def test_duplicate_and_clashing_names() -> None:
    registry = MetricsRegistry()
    registry.counter("request_total", "Requests.")
    with pytest.raises(ValueError, match="metric request_total is already registered"):
        registry.gauge("request_total", "Again.")
    registry.histogram("response_latency_ms", "Latency.")
    with pytest.raises(ValueError, match="would write response_latency_ms_count lines"):
        registry.counter("response_latency_ms_count", "Clash.")
    registry.counter("foo_sum", "Sum.")
    with pytest.raises(ValueError, match="would write foo_sum lines"):
        registry.histogram("foo", "Clash.")
    assert registry.get("foo") is None  # a refused metric is not half registered


@pytest.mark.parametrize(
    ("name", "labelnames", "message"),
    [
        ("bad-name", (), "invalid metric name"),
        ("1x", (), "invalid metric name"),
        ("x", ("bad-label",), "invalid label name"),
        ("x", ("__reserved",), "invalid label name"),
        ("x", ("a", "a"), "duplicate label names"),
    ],
)
def test_invalid_names(name: str, labelnames: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricsRegistry().counter(name, "Help.", labelnames)


def test_labelnames_as_a_plain_string_is_a_mistake() -> None:
    with pytest.raises(TypeError, match="sequence of names"):
        MetricsRegistry().counter("x_total", "X.", "direction")


def test_histogram_le_label_and_bucket_validation() -> None:
    registry = MetricsRegistry()
    with pytest.raises(ValueError, match="'le' is the bucket label"):
        registry.histogram("h", "H.", ("le",))
    with pytest.raises(ValueError, match="strictly increasing"):
        registry.histogram("h", "H.", buckets=(1, 1, 2))
    with pytest.raises(ValueError, match="finite numbers"):
        registry.histogram("h", "H.", buckets=(1, math.nan))
    histogram = registry.histogram("h", "H.", buckets=(1, 2, math.inf))
    assert histogram.buckets == (1, 2)  # +Inf is implicit


def test_default_buckets_are_linkerds() -> None:
    histogram = MetricsRegistry().histogram("response_latency_ms", "Latency.")
    assert histogram.buckets == DEFAULT_LATENCY_BUCKETS_MS
    assert DEFAULT_LATENCY_BUCKETS_MS[:6] == (1, 2, 3, 4, 5, 10)
    assert DEFAULT_LATENCY_BUCKETS_MS[-1] == 50000
    assert len(DEFAULT_LATENCY_BUCKETS_MS) == 25


def test_histogram_buckets_are_cumulative_and_le_inclusive() -> None:
    registry = MetricsRegistry()
    latency = registry.histogram("lat_ms", "Latency.", buckets=(1, 5, 10))
    for value in (0.5, 1, 3, 5, 7, 10, 11, 1000):
        latency.observe(value)
    assert latency.count == 8
    assert latency.sum == 1037.5
    assert latency.labels().cumulative_buckets() == [(1, 2), (5, 4), (10, 6), (math.inf, 8)]


def test_histogram_quantile_interpolates_inside_a_bucket() -> None:
    latency = MetricsRegistry().histogram("response_latency_ms", "Latency.", ("direction",))
    child = latency.labels("inbound")
    assert child.quantile(0.5) is None  # nothing observed yet
    for _ in range(50):
        child.observe(3)  # bucket (2, 3]
    for _ in range(50):
        child.observe(150)  # bucket (100, 200]
    assert child.quantile(0.5) == pytest.approx(3.0)
    assert child.quantile(0.25) == pytest.approx(2.5)
    assert child.quantile(0.99) == pytest.approx(198.0)
    assert child.quantile(1.0) == pytest.approx(200.0)
    assert child.quantile(0.0) == pytest.approx(2.0)  # lower edge of the first non-empty bucket
    with pytest.raises(ValueError, match="between 0 and 1"):
        child.quantile(1.5)


def test_histogram_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    histogram = MetricsRegistry().histogram("h", "H.", buckets=(1, 10))
    histogram.observe(5)
    histogram.observe(500)
    assert histogram.quantile(0.99) == 10
    assert histogram.quantile(0.5) == pytest.approx(10.0)


def test_histogram_quantile_on_scraped_buckets() -> None:
    # As the CLI would call it on buckets parsed from a proxy: unordered, skewed.
    buckets = [(math.inf, 10.0), (10.0, 10.0), (5.0, 4.0), (1.0, 5.0)]
    # Skew repair: the 5 bucket cannot be below the 1 bucket, so it counts 5.
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.75, buckets) == pytest.approx(5 + 5 * (2.5 / 5))
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(math.inf, 3.0)]) is None
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
