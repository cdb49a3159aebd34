"""Routes, splits, timeouts, retries, ejection, faults, rate limits and authorization, with real proxies."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, ProxyInfo
from tests.integration.test_control_plane import admin_config, up, wait_for

pytestmark = pytest.mark.timeout(150)


def apply(cluster: Cluster, body: str) -> int:
    path = cluster.tmp / f"mesh-{time.monotonic_ns()}.toml"
    path.write_text(f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n\n' + body)
    result = cluster.mesh("apply", str(path), "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["version"]


def synced(cluster: Cluster, version: int, *proxies: ProxyInfo) -> None:
    for proxy in proxies:
        wait_for(lambda p=proxy: admin_config(p)["controller"]["config_version"] >= version, 5, f"{proxy.process.name} synced")


def metric(proxy: ProxyInfo, name: str, **labels: str) -> float:
    from mesh.telemetry import parse_prometheus_text

    text = requests.get(proxy.admin_url + "/metrics", timeout=5).text
    return sum(
        s.value for s in parse_prometheus_text(text) if s.name == name and all(s.labels_dict.get(k) == v for k, v in labels.items())
    )


def two_versions(cluster: Cluster, fail_file: Path | None = None) -> tuple[ProxyInfo, ProxyInfo, ProxyInfo]:
    up(cluster)
    env = {"APP_FAIL_FILE": str(fail_file)} if fail_file else None
    one = cluster.proxy("web", cluster.app("http", "one"), extra=["--label", "version=v1"], name="proxy-v1")
    two = cluster.proxy("web", cluster.app("http", "two", env=env), extra=["--label", "version=v2"], name="proxy-v2")
    client = cluster.proxy("client", cluster.app("http", "client"), env={"MESH_OUTLIER_EJECTION_SECONDS": "5"})
    wait_for(lambda: len(admin_config(client)["endpoints"].get("web", [])) == 2, 10, "client sees both")
    return one, two, client


def fetch_many(client: ProxyInfo, count: int, headers: dict[str, str] | None = None, path: str = "/") -> list[requests.Response]:
    def one(_: int) -> requests.Response:
        return requests.get(f"http://web{path}", proxies={"http": client.proxy_url}, headers=headers, timeout=10)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def test_split_header_override_and_timeout(cluster: Cluster) -> None:
    one, two, client = two_versions(cluster)
    version = apply(
        cluster,
        """
        [[route]]
        service = "web"
        name = "jason"
        match = { headers = { "end-user" = "jason" } }
        split = [ { labels = { version = "v2" }, weight = 100 } ]

        [[route]]
        service = "web"
        name = "slow"
        match = { path_prefix = "/slow" }
        timeout = "500ms"
        retries = { attempts = 0 }

        [[route]]
        service = "web"
        name = "canary"
        split = [ { labels = { version = "v1" }, weight = 90 }, { labels = { version = "v2" }, weight = 10 } ]
        """.replace("\n        ", "\n"),
    )
    synced(cluster, version, client)
    answers = Counter(r.headers["x-app"] for r in fetch_many(client, 1000))
    assert answers["one"] + answers["two"] == 1000
    assert abs(answers["two"] / 10 - 10) < 3, answers  # 10 % ± 3 points over 1000 (σ ≈ 0.95)
    assert {r.headers["x-app"] for r in fetch_many(client, 30, headers={"end-user": "jason"})} == {"two"}
    started = time.monotonic()
    slow = requests.get("http://web/slow?seconds=3", proxies={"http": client.proxy_url}, timeout=10)
    assert slow.status_code == 504 and slow.headers["x-mesh-error"] == "timeout"
    assert time.monotonic() - started < 2
    assert metric(client, "route_response_total", route="canary") >= 1000
    routes = json.loads(cluster.mesh("routes", "web", "-o", "json").stdout)
    canary = next(r for r in routes["routes"] if r["name"] == "canary")
    assert canary["requests"] >= 1000 and canary["success_rate"] == 1.0
    text = cluster.mesh("routes", "web").stdout
    assert "canary" in text and "version=v1 90%" in text


def test_retries_recover_within_budget_and_failing_endpoint_is_ejected(cluster: Cluster, tmp_path: Path) -> None:
    fail = tmp_path / "fail"
    fail.touch()
    one, two, client = two_versions(cluster, fail_file=fail)
    version = apply(cluster, '[[route]]\nservice = "web"\nretries = { attempts = 2, on = ["5xx"] }\n')
    synced(cluster, version, client)
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        statuses = [session.get("http://web/", timeout=10).status_code for _ in range(40)]
    assert statuses == [200] * 40  # every failure of "two" was retried on "one"
    effective = metric(client, "request_total", peer_service="web")
    retries = metric(client, "retry_total", peer_service="web")
    assert effective == 40 and 1 <= retries <= 0.2 * effective + 10 * 10
    # Five consecutive failures ejected "two": it gets no traffic now.
    client.process.wait_for("ejected .* of web after consecutive failures")
    before = metric(two, "request_total", direction="inbound")
    for _ in range(20):
        assert requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=10).status_code == 200
    assert metric(two, "request_total", direction="inbound") == before
    # Recovery: "two" heals; after its ejection (5 s here) it is used again.
    fail.unlink()
    time.sleep(5.5)
    seen = {r.headers["x-app"] for r in fetch_many(client, 60)}
    assert seen == {"one", "two"}


def test_faults_rate_limits_and_authorization(cluster: Cluster) -> None:
    one, two, client = two_versions(cluster)
    other = cluster.proxy("other", cluster.app("http", "other"))
    faults = """
        [[route]]
        service = "web"
        match = { path_prefix = "/status" }
        fault = { abort_status = 503, abort_percent = 50 }
        retries = { attempts = 0 }

        [[route]]
        service = "web"
        match = { path_prefix = "/headers" }
        fault = { delay = "150ms", delay_percent = 100 }
        """.replace("\n        ", "\n")
    synced(cluster, apply(cluster, faults), client)
    aborted = Counter(r.status_code for r in fetch_many(client, 400, path="/status?code=200"))
    assert aborted[503] + aborted[200] == 400
    assert 0.40 < aborted[503] / 400 < 0.60, aborted  # 50 % ± 10 points (σ = 2.5 points)
    assert metric(client, "response_total", mesh_error="fault-injected") == aborted[503]
    started = time.monotonic()
    assert requests.get("http://web/headers", proxies={"http": client.proxy_url}, timeout=10).status_code == 200
    assert time.monotonic() - started >= 0.15

    policy = """
        [[policy]]
        service = "web"
        allow = ["client"]
        rate_limit = { requests_per_second = 5, burst = 5 }
        """.replace("\n        ", "\n")
    synced(cluster, apply(cluster, policy), client, one, two, other)
    burst = Counter()
    for _ in range(30):
        response = requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=10)
        burst[response.status_code] += 1
        if response.status_code == 429:
            assert response.headers["x-mesh-error"] == "rate-limited"
    # Per instance, burst 5 then 5/s: at least one burst passes, the rest is limited
    # (how the 30 spread over the two instances is the balancer's choice).
    assert burst[429] > 0 and burst[200] >= 5 and burst[200] + burst[429] == 30
    # Authorization by identity: "other" may not call web.
    time.sleep(1.2)
    denied = requests.get("http://web/", proxies={"http": other.proxy_url}, timeout=10)
    assert denied.status_code == 403 and denied.headers["x-mesh-error"] == "forbidden"
    assert f"{cluster.spiffe('other')} may not call web" in denied.text
    assert metric(one, "response_total", mesh_error="forbidden") + metric(two, "response_total", mesh_error="forbidden") == 1
    # `mesh fault` applies for a while, then removes itself.
    result = cluster.mesh("fault", "web", "--abort", "502", "--for", "2s")
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=5).headers.get("x-mesh-error")
        == "fault-injected",
        5,
        "temporary fault active",
    )
    wait_for(lambda: admin_config(client)["faults"] == [], 6, "temporary fault gone")


def test_config_change_during_request_loop_loses_nothing(cluster: Cluster) -> None:
    one, two, client = two_versions(cluster)
    failures: list[str] = []
    done = threading.Event()
    count = 0

    def loop() -> None:
        nonlocal count
        with requests.Session() as session:
            session.proxies = {"http": client.proxy_url}
            deadline = time.monotonic() + 8
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    response = session.get("http://web/", timeout=5)
                    if response.status_code != 200:
                        failures.append(str(response.status_code))
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                count += 1

    worker = threading.Thread(target=loop)
    worker.start()
    for weight in (90, 50, 10, 100):
        apply(
            cluster,
            f'[[route]]\nservice = "web"\nsplit = [ {{ labels = {{ version = "v1" }}, weight = {weight} }}, '
            f'{{ labels = {{ version = "v2" }}, weight = {100 - weight} }} ]\n'.replace(", weight = 0 }", ", weight = 0 }"),
        )
        time.sleep(0.8)
    done.set()
    worker.join(15)
    assert failures == [] and count > 50
