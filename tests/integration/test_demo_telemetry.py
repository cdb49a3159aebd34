"""`mesh up --demo --otlp-endpoint URL --access-log PATH`: the bookinfo demo traced and logged.

A test collector decodes the proxies' OTLP/HTTP requests with the official opentelemetry-proto
messages. Every productpage request is one trace: the gateway starts it, each proxy adds
its span (client on the caller's side, server on the callee's), and the demo apps forward
the trace headers from their incoming request to their calls (as Istio's bookinfo does),
so the spans of every hop across productpage, details, reviews and ratings link up. The
access log (one file for all the demo's proxies) holds every request of the run.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import requests

from tests.integration.conftest import Cluster
from tests.integration.otlp import OtlpReceiver, ReceivedSpan
from tests.integration.test_access_log import read_lines
from tests.integration.test_control_plane import wait_for
from tests.integration.test_traffic import apply
from tests.integration.test_up_config import processes_of, up_detached, wait_until_free

pytestmark = pytest.mark.timeout(300)

PAGE = "http://127.0.0.1:9080/productpage"
CLIENT_KIND, SERVER_KIND = 3, 2
REQUESTS = 12


def traces(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        found[span.trace_id].append(span)
    return found


def trace_of(spans: list[ReceivedSpan], request_id: str) -> list[ReceivedSpan]:
    """The spans of the trace the gateway started for ``request_id``."""
    roots = [s for s in spans if s.service == "gateway" and s.attributes.get("mesh.request_id") == request_id]
    if len(roots) != 1:
        return []
    return traces(spans)[roots[0].trace_id]


def complete(trace: list[ReceivedSpan]) -> bool:
    """Every hop of one page: gateway → productpage → details and reviews (→ ratings for v2, v3)."""
    hops = {(s.service, s.kind) for s in trace}
    needed = {("gateway", CLIENT_KIND), ("productpage", SERVER_KIND), ("productpage", CLIENT_KIND), ("details", SERVER_KIND),
              ("reviews", SERVER_KIND)}
    if not needed <= hops:
        return False
    reviews = next(s for s in trace if s.service == "reviews" and s.kind == SERVER_KIND)
    if reviews.resource.get("service.version") in ("v2", "v3"):
        return {("reviews", CLIENT_KIND), ("ratings", SERVER_KIND)} <= hops
    return True


def check_tree(trace: list[ReceivedSpan], cluster: Cluster) -> None:
    """One root (the gateway's span); every other span's parent in the trace, on the hop before it."""
    by_id = {s.span_id: s for s in trace}
    assert len(by_id) == len(trace)  # span ids unique
    roots = [s for s in trace if s.parent_id is None]
    assert [(r.service, r.kind) for r in roots] == [("gateway", CLIENT_KIND)]
    for span in trace:
        if span.parent_id is None:
            continue
        parent = by_id[span.parent_id]
        if span.kind == SERVER_KIND:
            # The callee's server span is the child of its caller's client span, across the hop.
            assert parent.kind == CLIENT_KIND and parent.attributes["mesh.peer.service"] == span.service
            assert span.attributes["mesh.peer.service"] == parent.service
            assert span.attributes["mesh.peer.identity"] == cluster.spiffe(parent.service)
            assert parent.attributes["mesh.peer.identity"] == cluster.spiffe(span.service)
        else:
            # A call the app makes is the child of the server span of the request it is serving.
            assert parent.kind == SERVER_KIND and parent.service == span.service
        assert span.start_ns >= parent.start_ns - 5_000_000 and span.end_ns <= parent.end_ns + 5_000_000
    for span in trace:
        assert span.attributes["http.response.status_code"] == 200 and span.status_code == 0
        assert span.attributes["mesh.retries"] == 0 and "mesh.error" not in span.attributes
        assert span.attributes["http.request.method"] == "GET"
        assert span.resource["mesh.identity"] == cluster.spiffe(span.service)


def test_the_demo_traced_and_logged(cluster: Cluster, collector: OtlpReceiver) -> None:
    if not wait_until_free(9080, 120):
        pytest.fail("127.0.0.1:9080 (the demo's gateway) stayed in use on this machine: stop what holds it (a demo of your own?)")
    cluster.init_ca()
    log = cluster.tmp / "access.log"
    up_detached(cluster, "--demo", "--no-traffic", "--otlp-endpoint", collector.url, "--access-log", str(log))
    try:
        wait_for(lambda: requests.get(PAGE, timeout=3).status_code == 200, 90, "the demo's page")
        # Every instance serves (reviews has three): pages with each version's stars come back.
        seen: set[str] = set()
        wait_for(lambda: seen.update(s.resource.get("service.version") for s in collector.spans if s.service == "reviews")
                 or (requests.get(PAGE, timeout=5) and {"v1", "v2", "v3"} <= seen), 60, "the three reviews versions")

        with requests.Session() as session:
            for n in range(REQUESTS):
                answer = session.get(PAGE, headers={"x-request-id": f"page-{n}"}, timeout=10)
                assert answer.status_code == 200
        spans = collector.wait_for(
            lambda s: all(complete(trace_of(s, f"page-{n}")) for n in range(REQUESTS)) and s, 20, "every page's trace"
        )
        trace_ids = set()
        for n in range(REQUESTS):
            trace = trace_of(spans, f"page-{n}")
            trace_ids.add(trace[0].trace_id)
            check_tree(trace, cluster)
            # The apps forwarded x-request-id too: every span of the page names it.
            assert {s.attributes["mesh.request_id"] for s in trace} == {f"page-{n}"}
            assert {s.service for s in trace} >= {"gateway", "productpage", "details", "reviews"}
        assert len(trace_ids) == REQUESTS  # one trace per productpage request

        # Access log: every request of the run, at every proxy it passed, in one file.
        def logged() -> dict[str, list[dict]]:
            lines: dict[str, list[dict]] = defaultdict(list)
            for line in read_lines(log):
                lines[line["request_id"]].append(line)
            return lines

        def all_logged() -> dict[str, list[dict]] | None:
            lines = logged()
            return lines if all(len(lines[f"page-{n}"]) == len(trace_of(spans, f"page-{n}")) for n in range(REQUESTS)) else None

        lines = wait_for(all_logged, 10, "every request in the access log")
        for n in range(REQUESTS):
            page = lines[f"page-{n}"]
            trace = trace_of(spans, f"page-{n}")
            # One line per proxy and direction, as one span: the same trace and span ids.
            assert sorted((line["proxy"], line["direction"], line["span_id"]) for line in page) == sorted(
                (s.service, "outbound" if s.kind == CLIENT_KIND else "inbound", s.span_id) for s in trace
            )
            assert {line["trace_id"] for line in page} == {trace[0].trace_id}
            for line in page:
                assert line["status"] == 200 and line["method"] == "GET" and line["mesh_error"] is None
                assert line["duration_ms"] > 0 and line["bytes_out"] > 0 and line["retries"] == 0
                assert line["src_identity"] and line["dst_service"] and line["dst_address"]
                assert line["tls"] is True  # every hop of the demo is mTLS (the gateway has no inbound side)

        # A route and a mesh-made error show in the spans: reviews by a named route, ratings aborted.
        body = (
            '[[gateway]]\nlisten = "127.0.0.1:9080"\nto = "productpage"\n\n'
            '[[route]]\nservice = "reviews"\nname = "all-reviews"\n\n'
            '[[route]]\nservice = "ratings"\nname = "broken-ratings"\nfault = { abort_status = 503, abort_percent = 100 }\n'
        )
        apply(cluster, body)

        def faulted() -> list[ReceivedSpan] | None:
            requests.get(PAGE, headers={"x-request-id": "after-apply"}, timeout=10)
            spans = collector.spans
            routed = [s for s in spans if s.attributes.get("mesh.route") == "all-reviews"]
            aborted = [s for s in spans if s.attributes.get("mesh.error") == "fault-injected"]
            return aborted if routed and aborted else None

        aborted = wait_for(faulted, 30, "spans of the route and the fault", interval=0.5)
        span = aborted[0]
        assert (span.service, span.kind, span.attributes["mesh.peer.service"]) == ("reviews", CLIENT_KIND, "ratings")
        assert span.attributes["http.response.status_code"] == 503
        assert span.status_code == 2 and span.status_message == "fault-injected"
        assert any(json.dumps(line).count("fault-injected") for line in read_lines(log))
    finally:
        assert cluster.mesh("down", timeout=60).returncode == 0
    wait_for(lambda: processes_of(cluster.home) == [], 15, "no process left")
