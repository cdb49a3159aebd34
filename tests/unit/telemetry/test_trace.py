"""Trace context: W3C traceparent/tracestate and B3 read and written, parent-based sampling."""

from __future__ import annotations

import random

from hypothesis import given, strategies as st

from mesh.telemetry import TRACE_HEADERS, Tracer, extract, parse_traceparent, trace_id_of
from mesh.telemetry._trace import B3_MULTI_FORM, B3_SINGLE_FORM, parse_b3_single

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
VALID = f"00-{TRACE}-{SPAN}-01".encode()


def test_traceparent_read() -> None:
    assert parse_traceparent(VALID) == (int(TRACE, 16), int(SPAN, 16), True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00".encode()) == (int(TRACE, 16), int(SPAN, 16), False)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03".encode())[2] is True  # other flag bits: sampled is bit 0
    # A later version keeps version 00's layout and may add fields after a dash.
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds".encode()) == (int(TRACE, 16), int(SPAN, 16), True)


def test_invalid_traceparents_are_ignored() -> None:
    for bad in (
        b"",
        b"00",
        f"00-{TRACE.upper()}-{SPAN}-01".encode(),  # upper-case hex
        f"00-{'0' * 32}-{SPAN}-01".encode(),  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero span id
        f"ff-{TRACE}-{SPAN}-01".encode(),  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-extra".encode(),  # version 00 has nothing after the flags
        f"cc-{TRACE}-{SPAN}-01x".encode(),  # a later version: more only after a dash
        f"00-{TRACE}-{SPAN}-0g".encode(),
        f"00_{TRACE}-{SPAN}-01".encode(),
        f"00-{TRACE[:-1]}-{SPAN}-01".encode(),
        f"00-{TRACE}-{SPAN}".encode(),
        f"0g-{TRACE}-{SPAN}-01".encode(),
    ):
        assert parse_traceparent(bad) is None, bad


@given(st.binary(max_size=80))
def test_any_bytes_parse_or_are_refused(value: bytes) -> None:
    parse_traceparent(value)
    extract([(b"traceparent", value), (b"b3", value), (b"x-b3-traceid", value), (b"x-b3-spanid", value)])


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans())
def test_written_traceparent_reads_back(trace_id: int, span_id: int, sampled: bool) -> None:
    tracer = Tracer(1.0)
    child = tracer.start([(b"traceparent", b"00-%032x-%016x-0%d" % (trace_id, span_id, sampled))])
    assert (child.trace_id, child.parent_id, child.sampled) == (trace_id, span_id, sampled)
    header = dict(child.headers())[b"traceparent"]
    assert parse_traceparent(header) == (trace_id, child.span_id, sampled)


def test_w3c_wins_and_tracestate_travels() -> None:
    found = extract(
        [
            (b"Traceparent", VALID),
            (b"tracestate", b"congo=t61rcWkgMzE"),
            (b"tracestate", b"rojo=00f067aa0ba902b7"),
            (b"b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]
    )
    assert found is not None and found.trace_id == int(TRACE, 16) and found.span_id == int(SPAN, 16)
    assert found.tracestate == b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    assert found.b3 == B3_SINGLE_FORM  # the request came with B3 too: it leaves with it, updated


def test_tracestate_without_a_valid_traceparent_or_unprintable_is_dropped() -> None:
    assert extract([(b"tracestate", b"a=b")]) is None
    found = extract([(b"traceparent", VALID), (b"tracestate", b"a=\xff\x01")])
    assert found is not None and found.tracestate is None
    found = extract([(b"traceparent", VALID), (b"tracestate", b"a=" + b"b" * 600)])
    assert found is not None and found.tracestate is None


def test_two_traceparents_restart_the_trace() -> None:
    assert extract([(b"traceparent", VALID), (b"traceparent", VALID)]) is None


def test_b3_single() -> None:
    found = parse_b3_single(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
    assert found is not None
    assert found.trace_id == 0x80F198EE56343BA864FE8B2A57D3EFF7 and found.span_id == 0xE457B5A2E4D86BD1
    assert found.sampled is True and not found.short_trace_id
    short = parse_b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1")
    assert short is not None and short.short_trace_id and short.sampled is None  # deferred
    assert parse_b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-d").sampled is True  # debug
    only = parse_b3_single(b"0")
    assert only is not None and only.trace_id is None and only.sampled is False
    for bad in (b"", b"x", b"64fe8b2a57d3eff7", b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-2", b"abc-e457b5a2e4d86bd1", b"a-b-1-c-d"):
        assert parse_b3_single(bad) is None, bad


def test_b3_multi() -> None:
    found = extract([(b"X-B3-TraceId", b"463ac35c9f6413ad48485a3953bb6124"), (b"X-B3-SpanId", b"a2fb4a1d1a96d312"), (b"X-B3-Sampled", b"1")])
    assert found is not None and found.b3 == B3_MULTI_FORM and found.sampled is True
    assert found.trace_id == 0x463AC35C9F6413AD48485A3953BB6124 and found.span_id == 0xA2FB4A1D1A96D312
    debug = extract([(b"x-b3-traceid", b"463ac35c9f6413ad"), (b"x-b3-spanid", b"a2fb4a1d1a96d312"), (b"x-b3-flags", b"1")])
    assert debug is not None and debug.sampled is True and debug.short_trace_id
    only = extract([(b"x-b3-sampled", b"0")])
    assert only is not None and only.trace_id is None and only.sampled is False
    assert extract([(b"x-b3-traceid", b"nothex"), (b"x-b3-spanid", b"a2fb4a1d1a96d312")]) is None


def test_a_new_trace_follows_the_rate() -> None:
    always, never = Tracer(1.0, random.Random(1)), Tracer(0.0, random.Random(1))
    root = always.start([(b"host", b"web")])
    assert root.parent_id is None and root.sampled and root.trace_id and root.span_id
    assert not never.start([]).sampled
    half = Tracer(0.5, random.Random(7))
    sampled = sum(half.start([]).sampled for _ in range(4000))
    assert 1800 < sampled < 2200


def test_the_parent_decides_and_deferred_decisions_agree_per_trace() -> None:
    never = Tracer(0.0)
    assert never.start([(b"traceparent", VALID)]).sampled  # a sampled parent wins over the rate
    assert not Tracer(1.0).start([(b"traceparent", VALID[:-1] + b"0")]).sampled
    # B3 without a decision: every proxy decides the same way for the same trace id.
    tracers = [Tracer(0.5, random.Random(seed)) for seed in range(5)]
    for trace in range(1, 200):
        b3 = [(b"b3", b"%032x-e457b5a2e4d86bd1" % (trace * 0x9E3779B97F4A7C15 % 2**128))]
        assert len({t.start(b3).sampled for t in tracers}) == 1


def test_the_request_leaves_with_this_hops_span_in_the_forms_it_came_with() -> None:
    tracer = Tracer(1.0)
    child = tracer.start([(b"traceparent", VALID), (b"tracestate", b"k=v"), (b"b3", b"1")])
    headers = dict(child.headers())
    assert headers[b"traceparent"] == f"00-{TRACE}-{child.span_id_hex}-01".encode()
    assert headers[b"tracestate"] == b"k=v"
    assert headers[b"b3"] == f"{TRACE}-{child.span_id_hex}-1".encode()
    multi = dict(tracer.start([(b"x-b3-traceid", b"463ac35c9f6413ad"), (b"x-b3-spanid", b"a2fb4a1d1a96d312")]).headers())
    assert multi[b"x-b3-traceid"] == b"463ac35c9f6413ad"  # a 64-bit id stays 64-bit
    assert multi[b"x-b3-parentspanid"] == b"a2fb4a1d1a96d312"
    assert multi[b"traceparent"].startswith(b"00-0000000000000000463ac35c9f6413ad-")
    plain = dict(tracer.start([]).headers())
    assert set(plain) == {b"traceparent"}


def test_trace_headers_are_dropped_once_per_set() -> None:
    tracer = Tracer(1.0)
    merged = tracer.dropping(frozenset({b"mesh-client-id"}))
    assert merged == TRACE_HEADERS | {b"mesh-client-id"}
    assert tracer.dropping(frozenset({b"mesh-client-id"})) is merged


def test_trace_id_of_for_logs() -> None:
    assert trace_id_of([(b"traceparent", VALID)]) == TRACE
    assert trace_id_of([(b"b3", b"463ac35c9f6413ad-a2fb4a1d1a96d312")]) == "0000000000000000463ac35c9f6413ad"
    assert trace_id_of([(b"b3", b"1")]) is None
    assert trace_id_of([]) is None
