from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from mesh.telemetry import MetricsRegistry, Sample, parse_prometheus_text


def small_registry() -> MetricsRegistry:
    registry = MetricsRegistry()
    # Registered out of order on purpose: render sorts families by name.
    latency = registry.histogram(
        "response_latency_ms",
        "Response latency in milliseconds.",
        ("direction",),
        buckets=(1, 5, 10),
    )
    requests = registry.counter("request_total", "Requests.", ("direction", "peer_service"))
    registry.gauge("controller_connected", "1 while connected to the controller.").set(1)
    requests.labels("outbound", "web").inc(2)
    requests.labels("inbound", "web").inc()
    latency.labels("inbound").observe(0.5)
    latency.labels("inbound").observe(7.25)
    return registry


GOLDEN = """\
# HELP controller_connected 1 while connected to the controller.
# TYPE controller_connected gauge
controller_connected 1
# HELP request_total Requests.
# TYPE request_total counter
request_total{direction="inbound",peer_service="web"} 1
request_total{direction="outbound",peer_service="web"} 2
# HELP response_latency_ms Response latency in milliseconds.
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="1"} 1
response_latency_ms_bucket{direction="inbound",le="5"} 1
response_latency_ms_bucket{direction="inbound",le="10"} 2
response_latency_ms_bucket{direction="inbound",le="+Inf"} 2
response_latency_ms_sum{direction="inbound"} 7.75
response_latency_ms_count{direction="inbound"} 2
"""


def test_golden_exposition() -> None:
    assert small_registry().render() == GOLDEN


def test_empty_registry_and_unused_labelled_metric() -> None:
    registry = MetricsRegistry()
    assert registry.render() == ""
    registry.counter("request_total", "Requests.", ("direction",))
    registry.counter("tcp_read_bytes_total", "Bytes.")
    assert registry.render() == (
        "# HELP request_total Requests.\n"
        "# TYPE request_total counter\n"
        "# HELP tcp_read_bytes_total Bytes.\n"
        "# TYPE tcp_read_bytes_total counter\n"
        "tcp_read_bytes_total 0\n"
    )


def test_escaping_of_label_values_and_help() -> None:
    registry = MetricsRegistry()
    counter = registry.counter(
        "request_total", 'Help with \\ and "quotes"\nand a newline.', ("path",)
    )
    counter.labels('a\\b"c\nd').inc()
    assert registry.render() == (
        '# HELP request_total Help with \\\\ and "quotes"\\nand a newline.\n'
        "# TYPE request_total counter\n"
        'request_total{path="a\\\\b\\"c\\nd"} 1\n'
    )


def test_values_render_like_the_go_client() -> None:
    registry = MetricsRegistry()
    gauge = registry.gauge("g", "G.", ("case",))
    for case, value in [
        ("int", 3),
        ("float_int", 3.0),
        ("frac", 0.25),
        ("big", 1e16),
        ("inf", math.inf),
        ("ninf", -math.inf),
        ("nan", math.nan),
        ("neg", -2),
    ]:
        gauge.labels(case).set(value)
    lines = dict(
        line.rsplit(" ", 1) for line in registry.render().splitlines() if not line.startswith("#")
    )
    assert lines == {
        'g{case="big"}': "1e+16",
        'g{case="float_int"}': "3",
        'g{case="frac"}': "0.25",
        'g{case="inf"}': "+Inf",
        'g{case="int"}': "3",
        'g{case="nan"}': "NaN",
        'g{case="neg"}': "-2",
        'g{case="ninf"}': "-Inf",
    }


def test_samples_are_sorted_by_label_values_not_by_insertion() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c_total", "C.", ("a", "b"))
    for a, b in [("z", "1"), ("a", "2"), ("a", "1"), ("m", "0")]:
        counter.labels(a, b).inc()
    assert [sample.labels for sample in registry.samples()] == [
        (("a", "a"), ("b", "1")),
        (("a", "a"), ("b", "2")),
        (("a", "m"), ("b", "0")),
        (("a", "z"), ("b", "1")),
    ]


def test_parse_reads_back_what_render_writes() -> None:
    registry = small_registry()
    samples = parse_prometheus_text(registry.render())
    assert samples == registry.samples()
    assert samples[0] == Sample("controller_connected", (), 1.0)
    bucket = samples[3]
    assert bucket.name == "response_latency_ms_bucket"
    assert bucket.labels_dict == {"direction": "inbound", "le": "1"}
    assert bucket.label("le") == "1"
    assert bucket.label("missing") is None


def test_parse_what_other_clients_write() -> None:
    text = (
        "# HELP x Some help\n"
        "# TYPE x counter\n"
        "\n"
        "x_total 1027 1395066363000\n"
        'http_requests_total{method="post",code="200",} 1027\n'
        'spaced { a = "1" , b="2" } 3.5\r\n'
        'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",'
        'error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n'
        'h_bucket{le="+Inf"} +Inf\n'
        "nan_metric NaN\n"
        "neg -Inf\n"
        'unknown_escape{a="x\\ty"} 1\n'
        "  indented 2\n"
    )
    samples = parse_prometheus_text(text)
    assert [s.name for s in samples] == [
        "x_total",
        "http_requests_total",
        "spaced",
        "msdos_file_access_time_seconds",
        "h_bucket",
        "nan_metric",
        "neg",
        "unknown_escape",
        "indented",
    ]
    assert samples[0] == Sample("x_total", (), 1027.0)  # the timestamp is dropped
    assert samples[1].labels == (("method", "post"), ("code", "200"))
    assert samples[2] == Sample("spaced", (("a", "1"), ("b", "2")), 3.5)
    assert samples[3].labels_dict == {
        "path": "C:\\DIR\\FILE.TXT",
        "error": 'Cannot find file:\n"FILE.TXT"',
    }
    assert samples[3].value == 1.458255915e9
    assert samples[4].value == math.inf
    assert math.isnan(samples[5].value)
    assert samples[6].value == -math.inf
    assert samples[7].label("a") == "x\\ty"
    assert samples[8] == Sample("indented", (), 2.0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{a="1"} 1', "expected a metric name"),
        ("x", "expected a value"),
        ("x 1 2 3", "expected a value"),
        ("x abc", "expected a number, found 'abc'"),
        ("x 1_000", "expected a number"),
        ("x Infinity", "expected a number"),
        ("x 1 12.5", "expected an integer timestamp"),
        ('x{a="1" 1', "expected ',' or '}'"),
        ('x{a="1} 1', "unterminated value of label a"),
        ("x{a=1} 1", "expected a quoted value for label a"),
        ('x{a "1"} 1', "expected '=' after label a"),
        ('x{1a="1"} 1', "expected a label name"),
        ("x-y 1", "expected a blank or '{'"),
    ],
)
def test_parse_errors_name_the_line(line: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_prometheus_text(f"# TYPE ok gauge\nok 1\n{line}\n")
    assert str(info.value).startswith(f"line 3: {message}")


label_text = st.text(
    alphabet=st.characters(codec="utf-8"),  # every code point a UTF-8 body can carry
    max_size=30,
) | st.sampled_from(['"', "\\", "\n", '\\"', "\\n", "\r\n", "\u2028", "}", ",", 'a="b"'])


@given(
    values=st.lists(st.tuples(label_text, label_text), min_size=1, max_size=5, unique=True),
    help_text=st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    amount=st.integers(min_value=0, max_value=10**12) | st.floats(min_value=0, max_value=1e300),
)
def test_round_trip_of_any_label_values(
    values: list[tuple[str, str]], help_text: str, amount: float
) -> None:
    registry = MetricsRegistry()
    counter = registry.counter("request_total", help_text, ("peer_service", "path"))
    latency = registry.histogram(
        "response_latency_ms", help_text, ("peer_service",), buckets=(1, 2.5)
    )
    for first, second in values:
        counter.labels(first, second).inc(amount)
        latency.labels(first).observe(2)
    assert parse_prometheus_text(registry.render()) == registry.samples()
