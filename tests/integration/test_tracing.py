"""Tracing through real proxies: trace context propagated (W3C, B3), a span per request and hop
exported over OTLP/HTTP, decoded by a test collector with the official opentelemetry-proto
messages; a collector that is down or slow costs spans (counted), never requests."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, ProxyInfo, free_port
from tests.integration.otlp import OtlpReceiver, ReceivedSpan
from tests.integration.test_access_log import read_lines
from tests.integration.test_control_plane import admin_config, up, wait_for
from tests.integration.test_grpc import NO_PROXY, Greeter, greeter_server, grpc, stubs  # noqa: F401 - a fixture
from tests.integration.test_traffic import apply, metric, synced

pytestmark = pytest.mark.timeout(120)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
CLIENT_KIND, SERVER_KIND = 3, 2


@dataclass
class Traced:
    cluster: Cluster
    web: ProxyInfo
    client: ProxyInfo

    def get(self, path: str, headers: dict[str, str] | None = None, host: str = "web") -> requests.Response:
        return requests.get(f"http://{host}{path}", proxies={"http": self.client.proxy_url}, headers=headers, timeout=10)


def traced_pair(cluster: Cluster, endpoint: str, *extra: str, web_env: dict[str, str] | None = None) -> Traced:
    cluster.init_ca()
    flags = ["--otlp-endpoint", endpoint, *extra]
    web = cluster.proxy("web", cluster.app("http", "web", env=web_env), extra=flags)
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=flags)
    return Traced(cluster, web, client)


def by_service(spans: list[ReceivedSpan], trace_id: str) -> dict[str, ReceivedSpan]:
    return {s.service: s for s in spans if s.trace_id == trace_id}


def test_w3c_context_goes_through_both_proxies_each_adding_its_span(cluster: Cluster, collector: OtlpReceiver) -> None:
    mesh = traced_pair(cluster, collector.url)
    answer = mesh.get("/headers?token=abc", {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=x1"})
    assert answer.status_code == 200
    seen_by_app = answer.json()
    spans = collector.wait_for(lambda s: len(s) >= 2 and s)
    hop = by_service(spans, TRACE)
    client, web = hop["client"], hop["web"]
    # client span (outbound) ← the caller's span; server span (inbound) ← the client span.
    assert (client.kind, client.parent_id) == (CLIENT_KIND, PARENT)
    assert (web.kind, web.parent_id) == (SERVER_KIND, client.span_id)
    # The app sees the server span as its parent, and the trace state unchanged.
    assert seen_by_app["traceparent"] == f"00-{TRACE}-{web.span_id}-01"
    assert seen_by_app["tracestate"] == "vendor=x1" and client.trace_state == "vendor=x1"
    assert client.name == web.name == "GET web"
    assert client.attributes["mesh.peer.service"] == "web"
    assert client.attributes["mesh.peer.identity"] == cluster.spiffe("web")
    assert web.attributes["mesh.peer.service"] == "client"
    assert web.attributes["mesh.peer.identity"] == cluster.spiffe("client")
    for span in (client, web):
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["url.path"] == "/headers" and span.attributes["url.query"] == "token=REDACTED"
        assert span.attributes["mesh.retries"] == 0 and "mesh.error" not in span.attributes
        assert span.attributes["mesh.request_id"] == seen_by_app["x-request-id"]
        assert span.status_code == 0 and span.end_ns > span.start_ns
    assert web.start_ns >= client.start_ns and web.end_ns <= client.end_ns + 5_000_000  # clocks of one host
    assert client.resource["service.name"] == "client" and client.resource["mesh.identity"] == cluster.spiffe("client")


def test_new_traces_b3_forms_and_sampling_decisions(cluster: Cluster, collector: OtlpReceiver) -> None:
    mesh = traced_pair(cluster, collector.url)
    # No context: the client proxy starts the trace.
    fresh = mesh.get("/headers").json()
    trace_id = fresh["traceparent"].split("-")[1]
    spans = collector.wait_for(lambda s: len(by_service(s, trace_id)) == 2 and s)
    assert by_service(spans, trace_id)["client"].parent_id is None
    # B3, single header: it goes on as a single header, with the server span's id.
    b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
    single = mesh.get("/headers", {"b3": b3}).json()
    spans = collector.wait_for(lambda s: len(by_service(s, "80f198ee56343ba864fe8b2a57d3eff7")) == 2 and s)
    hop = by_service(spans, "80f198ee56343ba864fe8b2a57d3eff7")
    assert hop["client"].parent_id == "e457b5a2e4d86bd1" and hop["web"].parent_id == hop["client"].span_id
    assert single["b3"] == f"80f198ee56343ba864fe8b2a57d3eff7-{hop['web'].span_id}-1"
    # B3, multi headers, a 64-bit trace id: it stays 64-bit, in the same headers.
    multi = mesh.get("/headers", {"X-B3-TraceId": "463ac35c9f6413ad", "X-B3-SpanId": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"}).json()
    spans = collector.wait_for(lambda s: len(by_service(s, "0000000000000000463ac35c9f6413ad")) == 2 and s)
    web_span = by_service(spans, "0000000000000000463ac35c9f6413ad")["web"]
    assert (multi["x-b3-traceid"], multi["x-b3-spanid"], multi["x-b3-sampled"]) == ("463ac35c9f6413ad", web_span.span_id, "1")
    # A caller that decided not to sample: no span anywhere, and the decision travels on.
    before = len(collector.spans)
    unsampled = mesh.get("/headers", {"traceparent": f"00-{TRACE}-{PARENT}-00"}).json()
    assert unsampled["traceparent"].startswith(f"00-{TRACE}-") and unsampled["traceparent"].endswith("-00")
    time.sleep(1.5)  # longer than a batch's wait
    assert len(collector.spans) == before


def test_sample_rate_zero_makes_no_new_traces(cluster: Cluster, collector: OtlpReceiver) -> None:
    mesh = traced_pair(cluster, collector.url, "--trace-sample", "0")
    for _ in range(5):
        assert mesh.get("/headers").json()["traceparent"].endswith("-00")
    assert mesh.get("/headers", {"traceparent": f"00-{TRACE}-{PARENT}-01"}).status_code == 200  # parent decides
    collector.wait_for(lambda s: len(s) >= 2 and s)
    time.sleep(1.2)
    assert {s.trace_id for s in collector.spans} == {TRACE} and len(collector.spans) == 2


def test_a_sample_rate_samples_that_share_of_new_traces_on_every_hop(cluster: Cluster, collector: OtlpReceiver) -> None:
    mesh = traced_pair(cluster, collector.url, "--trace-sample", "0.5")
    decided: dict[str, bool] = {}
    with requests.Session() as session:
        session.proxies = {"http": mesh.client.proxy_url}
        for _ in range(40):
            _, trace_id, _, flags = session.get("http://web/headers", timeout=10).json()["traceparent"].split("-")
            decided[trace_id] = flags == "01"
    sampled = {trace_id for trace_id, yes in decided.items() if yes}
    assert 5 <= len(sampled) <= 35, len(sampled)  # binomial(40, 0.5): outside this once in ~10**5 runs
    spans = collector.wait_for(lambda s: len(s) >= 2 * len(sampled) and s)
    time.sleep(1.2)  # longer than a batch's wait: nothing else comes
    # The client proxy decided; the web proxy followed its decision: both hops of every sampled
    # trace, nothing of the others.
    assert len(collector.spans) == 2 * len(sampled)
    assert {s.trace_id for s in spans} == sampled
    for trace_id in sampled:
        assert set(by_service(spans, trace_id)) == {"client", "web"}


def test_a_stuck_collector_fills_a_bounded_queue_and_the_drops_are_counted(cluster: Cluster, collector: OtlpReceiver) -> None:
    collector.hold = 60.0  # takes the first batch and never answers within the test
    mesh = traced_pair(cluster, collector.url)
    requests_sent = 3000  # more than a batch in flight (512) plus a full queue (2048)
    started = time.monotonic()
    done = subprocess.run(  # curl, 32 requests at a time (the test app answers one in ~40 ms)
        ["curl", "-s", "-Z", "--parallel-max", "32", "--max-time", "60", "-x", mesh.client.proxy_url,
         "-w", "\n%{http_code}\n", f"http://web/?n=[1-{requests_sent}]"],
        capture_output=True, text=True, timeout=90,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines().count("200") == requests_sent
    for proxy in (mesh.client, mesh.web):
        queued = admin_config(proxy)["telemetry"]["spans_queued"]
        dropped = metric(proxy, "trace_spans_dropped_total", reason="queue-full")
        assert queued == 2048  # the bound
        # Every span is queued, on its way in the one batch the collector holds, or dropped.
        assert requests_sent - 2048 - 512 <= dropped <= requests_sent - 2048, (proxy, dropped)
        assert metric(proxy, "trace_spans_exported_total") == 0
    # Requests went on at full speed meanwhile (a generous bound for a busy 2-CPU machine).
    assert elapsed < 45, elapsed
    assert len(collector.posts) >= 2  # each proxy sent its first batch, and holds the rest


def test_retries_routes_and_mesh_errors_are_span_attributes(cluster: Cluster, collector: OtlpReceiver, tmp_path: Path) -> None:
    up(cluster)
    fail = tmp_path / "fail"
    fail.touch()
    flags = ["--otlp-endpoint", collector.url]
    web = cluster.proxy("web", cluster.app("http", "web", env={"APP_FAIL_FILE": str(fail)}), extra=flags)
    client = cluster.proxy("client", cluster.app("http", "client"), extra=flags)
    wait_for(lambda: admin_config(client)["endpoints"].get("web"), 10, "client sees web")
    synced(cluster, apply(cluster, '[[route]]\nservice = "web"\nname = "retry-web"\nretries = { attempts = 2, on = ["5xx"] }\n'), client)
    answer = requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=10)
    assert answer.status_code == 503
    trace_id = answer.request.headers.get("traceparent") or None
    assert trace_id is None  # the client sent none: the trace starts at its proxy
    spans = collector.wait_for(lambda s: [x for x in s if x.service == "client"] and len(s) >= 4 and s)
    (client_span,) = [s for s in spans if s.service == "client"]
    assert client_span.attributes["mesh.route"] == "retry-web"
    assert client_span.attributes["mesh.retries"] == 2
    assert client_span.attributes["http.response.status_code"] == 503
    assert client_span.status_code == 2  # ERROR
    # Every attempt reached web's proxy as a child of the one client span.
    attempts = [s for s in spans if s.service == "web"]
    assert len(attempts) == 3 and {s.parent_id for s in attempts} == {client_span.span_id}
    assert {s.trace_id for s in attempts} == {client_span.trace_id}
    # The mesh's own answers: the reason is the span's error.
    refused = requests.get("http://nothere/", proxies={"http": client.proxy_url}, timeout=10)
    assert refused.headers["x-mesh-error"] == "no-endpoints"
    span = collector.wait_for(lambda s: next((x for x in s if x.attributes.get("mesh.error") == "no-endpoints"), None))
    assert span.status_code == 2 and span.status_message == "no-endpoints" and span.name == "GET nothere"
    assert span.attributes["http.response.status_code"] == 503
    assert web.process.popen.poll() is None


def test_grpc_status_and_context_over_http2_in_spans_and_access_logs(
    cluster: Cluster, collector: OtlpReceiver, greeter_server: tuple[Greeter, int]
) -> None:
    greeter, port = greeter_server
    cluster.init_ca()
    log = cluster.tmp / "access.log"
    flags = ["--otlp-endpoint", collector.url, "--access-log", str(log)]
    greeter_proxy = cluster.proxy("greeter", port, extra=flags)
    endpoints = cluster.write_endpoints([("greeter", greeter_proxy.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=[*flags, "--upstream", "greeter=0"])
    with grpc.insecure_channel(f"127.0.0.1:{client.upstreams['greeter']}", options=NO_PROXY) as channel:
        rpc = stubs(channel)
        metadata = (("traceparent", f"00-{TRACE}-{PARENT}-01"),)
        assert rpc["Hello"](b"mesh", timeout=10, metadata=metadata) == b"hello mesh"
        seen = greeter.metadata["traceparent"]
        missing = channel.unary_unary("/mesh.test.Greeter/Missing", request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as failed:
            missing(b"x", timeout=10, metadata=metadata)
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    spans = collector.wait_for(lambda s: len(s) >= 4 and s)
    hello = [s for s in spans if s.attributes["url.path"].endswith("/Hello")]
    missing_spans = [s for s in spans if s.attributes["url.path"].endswith("/Missing")]
    assert {s.attributes["rpc.grpc.status_code"] for s in hello} == {0}
    assert {s.attributes["rpc.grpc.status_code"] for s in missing_spans} == {12}
    assert all(s.status_code == 2 for s in missing_spans) and all(s.status_code == 0 for s in hello)
    server_span = next(s for s in hello if s.kind == SERVER_KIND)
    client_span = next(s for s in hello if s.kind == CLIENT_KIND)
    assert seen == f"00-{TRACE}-{server_span.span_id}-01"
    assert client_span.parent_id == PARENT and server_span.parent_id == client_span.span_id
    lines = wait_for(lambda: len(read_lines(log)) >= 4 and read_lines(log), 10, "access log lines")
    assert sorted((line["path"].rsplit("/", 1)[1], line["direction"], line["grpc_status"]) for line in lines) == [
        ("Hello", "inbound", 0), ("Hello", "outbound", 0), ("Missing", "inbound", 12), ("Missing", "outbound", 12)
    ]
    for line in lines:
        assert line["method"] == "POST" and line["status"] == 200 and line["trace_id"] == TRACE
        assert line["bytes_in"] == 5 + len(b"mesh" if line["path"].endswith("Hello") else b"x")  # gRPC frame: 5 + message


def test_the_https_edge_starts_traces_and_carries_them_over_http2_and_http1(cluster: Cluster, collector: OtlpReceiver) -> None:
    from tests.edge_certs import ThrowawayCA
    from tests.integration.test_gateway_edge import curl, start_gateway

    cluster.init_ca()
    log = cluster.tmp / "access.log"
    flags = ["--otlp-endpoint", collector.url, "--access-log", str(log)]
    web = cluster.proxy("web", cluster.app("http", "web"), extra=flags)
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    ca = ThrowawayCA.create()
    cert, key = ca.issue(cluster.tmp / "certs", "shop", ["shop.example"])
    bundle = ca.write_bundle(cluster.tmp / "ca.pem")
    gateway = start_gateway(
        cluster, "gateway", "--route", "shop.example=web", "--tls-cert", str(cert), "--tls-key", str(key), *flags, endpoints=endpoints
    )
    where = ["--cacert", str(bundle), "--resolve", f"shop.example:{gateway.listen}:127.0.0.1"]
    url = f"https://shop.example:{gateway.listen}/headers"
    # HTTP/2 from outside, HTTP/1.1 to the app; no context: the trace starts at the gateway.
    fresh = curl(*where, "--http2", "-H", "x-request-id: edge-h2", url)
    assert fresh.returncode == 0, fresh.stderr
    trace_id = json.loads(fresh.stdout)["traceparent"].split("-")[1]
    # HTTP/1.1 with the caller's context: the gateway's span is its child.
    given = curl(*where, "--http1.1", "-H", f"traceparent: 00-{TRACE}-{PARENT}-01", "-H", "x-request-id: edge-h1", url)
    assert given.returncode == 0, given.stderr
    seen = json.loads(given.stdout)
    spans = collector.wait_for(lambda s: len(by_service(s, trace_id)) == 2 and len(by_service(s, TRACE)) == 2 and s)
    for trace, parent, app_saw in ((trace_id, None, json.loads(fresh.stdout)), (TRACE, PARENT, seen)):
        hop = by_service(spans, trace)
        edge, inbound = hop["gateway"], hop["web"]
        assert (edge.kind, edge.parent_id) == (CLIENT_KIND, parent)
        assert (inbound.kind, inbound.parent_id) == (SERVER_KIND, edge.span_id)
        assert app_saw["traceparent"] == f"00-{trace}-{inbound.span_id}-01"
        assert edge.attributes["mesh.peer.service"] == "web" and edge.attributes["http.response.status_code"] == 200
    lines = wait_for(lambda: len(read_lines(log)) >= 4 and read_lines(log), 10, "access log lines")
    found = {(line["proxy"], line["request_id"]): line["trace_id"] for line in lines}
    assert found == {
        ("gateway", "edge-h2"): trace_id, ("web", "edge-h2"): trace_id, ("gateway", "edge-h1"): TRACE, ("web", "edge-h1"): TRACE,
    }


def test_a_collector_that_is_down_or_slow_costs_spans_not_requests(cluster: Cluster, collector: OtlpReceiver) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    mesh = traced_pair(cluster, nowhere)
    started = time.monotonic()
    for _ in range(20):
        assert mesh.get("/").status_code == 200
    assert time.monotonic() - started < 5
    wait_for(lambda: metric(mesh.client, "trace_spans_dropped_total", reason="export-failed") >= 20, 20, "spans dropped")
    assert metric(mesh.client, "trace_spans_exported_total") == 0
    # A collector that takes 30 s to answer: requests do not wait for it.
    collector.hold = 30.0
    slow = cluster.proxy("slow", cluster.app("http", "slow"), endpoints=cluster.write_endpoints([("web", mesh.web.inbound)], "slow.toml"),
                         extra=["--otlp-endpoint", collector.url])
    with requests.Session() as session:
        session.proxies = {"http": slow.proxy_url}
        started = time.monotonic()
        for _ in range(20):
            assert session.get("http://web/", timeout=10).status_code == 200
        time.sleep(1.5)  # a batch is on its way to the collector, which holds it
        for _ in range(20):
            assert session.get("http://web/", timeout=10).status_code == 200
        assert time.monotonic() - started < 8
    assert admin_config(slow)["telemetry"]["otlp_endpoint"] == collector.url + "/v1/traces"
    collector.hold = 0.0


def test_bad_telemetry_flags_are_refused_at_start(cluster: Cluster) -> None:
    cluster.init_ca()
    for flags, message in (
        (["--otlp-endpoint", "ftp://collector"], "--otlp-endpoint: expected an http:// or https:// URL"),
        (["--otlp-endpoint", "http://user:pw@collector:4318"], "without credentials"),
        (["--trace-sample", "2"], "--trace-sample: expected a sampling rate from 0.0"),
        (["--access-log", str(cluster.tmp / "missing" / "access.log")], "cannot open it for appending"),
    ):
        result = cluster.mesh("proxy", "--service", "web", "--app", "127.0.0.1:1", "--no-zeroconf", *flags, timeout=30)
        assert result.returncode != 0 and message in result.stderr, (flags, result.stderr)
