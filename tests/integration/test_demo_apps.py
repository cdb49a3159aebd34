"""The bookinfo demo apps (`python -m mesh.demo SERVICE`) as real processes, without a mesh.

A tiny forward proxy stands in for the sidecar: the apps get it as HTTP_PROXY and it
maps ``http://<service>/path`` to 127.0.0.1:<that app's port>, answering like the
mesh does when it cannot (503 ``x-mesh-error: no-endpoints``, 502 ``connect-failure``).
It records every request it forwards, which is how header propagation is checked.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mesh.demo import DEMO_GATEWAY, DEMO_SERVICES, demo_config_toml, instance_name
from mesh.self_command import mesh_command
from tests.integration.conftest import free_port

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
PROXY_VARS = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)
TRACE = {
    "x-request-id": "req-7f3a9c",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-sampled": "1",
    "end-user": "jason",
}


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith("MESH_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- processes -----------------------------------------------------------------------


@dataclass
class App:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int
    started_in: float = 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.log())
            if match:
                return match
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.log()}"
                )
            time.sleep(0.02)
        raise AssertionError(
            f"{self.name}: no {pattern!r} in its log after {timeout}s:\n{self.log()}"
        )

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


class Apps:
    """Processes of one test; every one is killed at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[App] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str], port: int = 0) -> App:
        log_path = self.tmp / f"{name}-{len(self.started)}.log"
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "mesh.demo", *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        app = App(name, popen, log_path, port)
        self.started.append(app)
        return app

    def start(
        self,
        service: str,
        *args: str,
        proxy: ForwardProxy | None = None,
        env: dict[str, str] | None = None,
    ) -> App:
        port = free_port()
        full_env = {**base_env(), "PORT": str(port), "MESH_SERVICE": service, **(env or {})}
        if proxy is not None:
            full_env.update(
                HTTP_PROXY=proxy.url,
                http_proxy=proxy.url,
                NO_PROXY="localhost,127.0.0.1",
                no_proxy="localhost,127.0.0.1",
            )
        began = time.monotonic()
        app = self.spawn(service, [service, *args], full_env, port)
        assert int(app.wait_log(LISTENING.pattern).group(1)) == port
        app.started_in = time.monotonic() - began
        return app

    def close(self) -> None:
        for app in self.started:
            if app.popen.poll() is None:
                try:
                    os.killpg(app.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            app.popen.wait(5)


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    started = Apps(tmp_path)
    try:
        yield started
    finally:
        started.close()


# -- in-test servers -----------------------------------------------------------------


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Threaded(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@dataclass
class Seen:
    service: str
    path: str
    headers: dict[str, str]


class ForwardProxy:
    """A stand-in sidecar: absolute-form requests for ``http://<service>/…`` → 127.0.0.1:<port>."""

    def __init__(self) -> None:
        self.routes: dict[str, int] = {}
        self.seen: list[Seen] = []
        proxy = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                target = urlsplit(self.path)
                if not target.scheme or not target.hostname:
                    self.reply(400, b"absolute-form requests only\n")
                    return
                service = target.hostname
                path = target.path + (f"?{target.query}" if target.query else "")
                proxy.seen.append(
                    Seen(service, path, {k.lower(): v for k, v in self.headers.items()})
                )
                port = proxy.routes.get(service)
                if port is None:
                    self.reply(503, b"no endpoints\n", {"x-mesh-error": "no-endpoints"})
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "proxy-connection")
                }
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    conn.close()
                except ConnectionRefusedError:
                    self.reply(502, b"connect failure\n", {"x-mesh-error": "connect-failure"})
                    return
                except TimeoutError:
                    self.reply(504, b"timeout\n", {"x-mesh-error": "timeout"})
                    return
                self.reply(
                    response.status, body, {"Content-Type": response.getheader("Content-Type", "")}
                )

        self.server = _Threaded(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def requests_to(self, service: str) -> list[Seen]:
        return [s for s in self.seen if s.service == service]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Recorder:
    """A test server that answers every GET with ``status`` (after ``delay``) and records when."""

    def __init__(
        self, status: int = 200, delay: float = 0.0, headers: dict[str, str] | None = None
    ) -> None:
        self.times: list[float] = []
        recorder = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                recorder.times.append(time.monotonic())
                if delay:
                    time.sleep(delay)
                try:
                    self.reply(
                        status, b"{}", {"Content-Type": "application/json", **(headers or {})}
                    )
                except OSError:
                    pass

        self.server = _Threaded(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    forward = ForwardProxy()
    try:
        yield forward
    finally:
        forward.close()


@pytest.fixture
def servers() -> Iterator[list[Recorder]]:
    made: list[Recorder] = []
    try:
        yield made
    finally:
        for server in made:
            server.close()


# -- client helpers ------------------------------------------------------------------


@dataclass
class Got:
    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> object:
        return json.loads(self.body)


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> Got:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return Got(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


@pytest.fixture
def bookinfo(apps: Apps, proxy: ForwardProxy) -> dict[str, App]:
    """details, ratings, reviews v1/v2/v3 and productpage, all wired through the proxy."""
    started = {
        "details": apps.start("details"),
        "ratings": apps.start("ratings"),
        "v1": apps.start("reviews", "--version", "v1", proxy=proxy),
        "v2": apps.start("reviews", "--version", "v2", proxy=proxy),
        "v3": apps.start("reviews", "--version", "v3", proxy=proxy),
        "productpage": apps.start("productpage", proxy=proxy),
    }
    proxy.routes.update(details=started["details"].port, ratings=started["ratings"].port)
    return started


# -- the JSON services ---------------------------------------------------------------


def test_details_and_ratings_json(apps: Apps) -> None:
    details = apps.start("details")
    ratings = apps.start("ratings")

    got = get(details.port, "/details/0")
    assert got.status == 200 and got.headers["content-type"] == "application/json"
    assert got.json() == {
        "id": 0,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
    assert get(ratings.port, "/ratings/0").json() == {
        "id": 0,
        "ratings": {"Reviewer1": 5, "Reviewer2": 4},
    }
    assert get(details.port, "/details/x").status == 400
    assert get(ratings.port, "/nope").status == 404
    for app in (details, ratings):
        assert get(app.port, "/health").status == 200
    details.wait_log(r"(?m)^details GET /details/0 200 \d+ms$")
    ratings.wait_log(r"(?m)^ratings GET /ratings/0 200 \d+ms$")


def test_keep_alive(apps: Apps) -> None:
    details = apps.start("details")
    conn = http.client.HTTPConnection("127.0.0.1", details.port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/details/0")
            response = conn.getresponse()
            assert response.status == 200 and response.version == 11
            assert json.loads(response.read())["id"] == 0
        first_socket = conn.sock
        conn.request("GET", "/health")
        conn.getresponse().read()
        assert conn.sock is first_socket  # one connection for all four requests
    finally:
        conn.close()


def test_reviews_versions(apps: Apps, proxy: ForwardProxy) -> None:
    ratings = apps.start("ratings")
    proxy.routes["ratings"] = ratings.port
    v1 = apps.start("reviews", "--version", "v1", proxy=proxy)
    v2 = apps.start("reviews", "--version", "v2", proxy=proxy)
    v3 = apps.start(
        "reviews", proxy=proxy, env={"MESH_LABEL_VERSION": "v3"}
    )  # version from the env

    one = get(v1.port, "/reviews/0").json()
    assert one["version"] == "v1" and one["podname"].startswith("reviews-v1-")
    assert [r["reviewer"] for r in one["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert all("rating" not in r for r in one["reviews"])
    assert proxy.requests_to("ratings") == []  # v1 never calls ratings

    two = get(v2.port, "/reviews/0").json()
    assert two["version"] == "v2"
    assert [r["rating"] for r in two["reviews"]] == [
        {"stars": 5, "color": "black"},
        {"stars": 4, "color": "black"},
    ]
    three = get(v3.port, "/reviews/0").json()
    assert three["version"] == "v3"
    assert [r["rating"] for r in three["reviews"]] == [
        {"stars": 5, "color": "red"},
        {"stars": 4, "color": "red"},
    ]
    assert [s.path for s in proxy.requests_to("ratings")] == ["/ratings/0", "/ratings/0"]
    v3.wait_log(r"(?m)^reviews-v3 GET /reviews/0 200 \d+ms$")

    # ratings gone: the reviews still come, each with bookinfo's error instead of stars
    del proxy.routes["ratings"]
    broken = get(v2.port, "/reviews/0")
    assert broken.status == 200
    assert [r["rating"] for r in broken.json()["reviews"]] == [
        {"error": "Ratings service is currently unavailable"}
    ] * 2
    v2.wait_log(r"reviews-v2 GET /reviews/0 200 \d+ms \(ratings: 503 no-endpoints\)")


def test_reviews_rejects_unknown_version(apps: Apps) -> None:
    app = apps.spawn(
        "reviews", ["reviews", "--version", "v9"], {**base_env(), "PORT": str(free_port())}
    )
    assert app.popen.wait(10) != 0
    assert "unknown version 'v9'" in app.log()


# -- productpage ---------------------------------------------------------------------


def test_productpage_shows_each_reviews_version(
    bookinfo: dict[str, App], proxy: ForwardProxy
) -> None:
    page_port = bookinfo["productpage"].port
    expected = {"v1": None, "v2": "black", "v3": "red"}
    for version, color in expected.items():
        proxy.routes["reviews"] = bookinfo[version].port
        for path in ("/", "/productpage"):
            page = get(page_port, path)
            assert page.status == 200 and page.headers["content-type"].startswith("text/html")
            html = page.text
            assert "The Comedy of Errors" in html and "Summary:" in html
            assert (
                "William Shakespeare" in html and "123-1234567890" in html and "PublisherA" in html
            )
            assert "An extremely entertaining play by Shakespeare" in html and "Reviewer2" in html
            assert f">reviews-{version}<" in html
            assert (
                "<link" not in html and "<script" not in html and "src=" not in html
            )  # self-contained
            if color is None:
                assert "★" not in html and 'class="stars"' not in html
            else:
                assert html.count("★") == 9  # 5 + 4
                assert html.count(f'style="color: {color}"') == 2
                other = "red" if color == "black" else "black"
                assert f'style="color: {other}"' not in html
    bookinfo["productpage"].wait_log(r"(?m)^productpage GET / 200 \d+ms$")


def test_productpage_api(bookinfo: dict[str, App], proxy: ForwardProxy) -> None:
    port = bookinfo["productpage"].port
    proxy.routes["reviews"] = bookinfo["v3"].port
    products = get(port, "/api/v1/products").json()
    assert isinstance(products, list) and products[0]["id"] == 0
    assert products[0]["title"] == "The Comedy of Errors"
    assert get(port, "/api/v1/products/0").json()["ISBN-10"] == "1234567890"
    reviews = get(port, "/api/v1/products/0/reviews").json()
    assert reviews["version"] == "v3" and reviews["reviews"][0]["rating"] == {
        "stars": 5,
        "color": "red",
    }
    assert get(port, "/api/v1/products/0/ratings").json() == {
        "id": 0,
        "ratings": {"Reviewer1": 5, "Reviewer2": 4},
    }
    assert get(port, "/health").status == 200
    assert get(port, "/nowhere").status == 404

    del proxy.routes["reviews"]
    failed = get(port, "/api/v1/products/0/reviews")
    assert failed.status == 503
    assert failed.json() == {"error": "Error fetching product reviews: 503 no-endpoints"}


def test_headers_propagate_to_every_hop(bookinfo: dict[str, App], proxy: ForwardProxy) -> None:
    proxy.routes["reviews"] = bookinfo["v2"].port
    assert get(bookinfo["productpage"].port, "/productpage", headers=TRACE).status == 200
    for service in ("details", "reviews", "ratings"):  # ratings: productpage → reviews v2 → ratings
        [seen] = proxy.requests_to(service)
        for name, value in TRACE.items():
            assert seen.headers.get(name) == value, (service, name, seen.headers)

    # a signed-in user (cookie) becomes end-user on the calls, for header-based routing
    proxy.seen.clear()
    login = get(bookinfo["productpage"].port, "/login?user=alice")
    assert login.status == 303 and login.headers["set-cookie"].startswith("user=alice")
    page = get(bookinfo["productpage"].port, "/productpage", headers={"Cookie": "user=alice"})
    assert "signed in as <b>alice</b>" in page.text
    assert [s.headers.get("end-user") for s in proxy.requests_to("reviews")] == ["alice"]
    assert [s.headers.get("end-user") for s in proxy.requests_to("ratings")] == ["alice"]


def test_productpage_renders_upstream_failures(
    bookinfo: dict[str, App], proxy: ForwardProxy
) -> None:
    port = bookinfo["productpage"].port
    # reviews unknown to the mesh: 503 no-endpoints
    page = get(port, "/productpage")
    assert page.status == 200
    assert "Error fetching product reviews: 503 no-endpoints" in page.text
    assert "123-1234567890" in page.text  # details still shown

    # reviews down (nothing listens): 502 connect-failure; details down as well
    proxy.routes["reviews"] = free_port()
    proxy.routes["details"] = free_port()
    page = get(port, "/")
    assert page.status == 200
    assert "Error fetching product reviews: 502 connect-failure" in page.text
    assert "Error fetching product details: 502 connect-failure" in page.text
    assert "The Comedy of Errors" in page.text
    bookinfo["productpage"].wait_log(
        r"productpage GET / 200 \d+ms \(details: 502 connect-failure; reviews: 502 connect-failure\)"
    )


def test_productpage_times_out_after_3s(
    bookinfo: dict[str, App], proxy: ForwardProxy, servers: list[Recorder]
) -> None:
    slow = Recorder(delay=6.0)
    servers.append(slow)
    proxy.routes["reviews"] = slow.port
    began = time.monotonic()
    page = get(bookinfo["productpage"].port, "/productpage")
    elapsed = time.monotonic() - began
    assert page.status == 200
    assert "Error fetching product reviews: timed out after 3s" in page.text
    assert "123-1234567890" in page.text
    assert 2.9 <= elapsed < 5.0


def test_productpage_without_proxy(apps: Apps) -> None:
    """No HTTP_PROXY: the per-upstream URLs (MESH_UPSTREAM_<NAME>_URL) are used."""
    details = apps.start("details")
    reviews = apps.start("reviews", "--version", "v1")
    page_app = apps.start(
        "productpage",
        env={
            "MESH_UPSTREAM_DETAILS_URL": details.url(""),
            "MESH_UPSTREAM_REVIEWS_URL": reviews.url(""),
        },
    )
    page = get(page_app.port, "/productpage").text
    assert "123-1234567890" in page and ">reviews-v1<" in page

    # (a dead local port, not an unset variable: that would send a DNS query for "reviews")
    dead = free_port()
    lonely = apps.start(
        "productpage",
        env={
            "MESH_UPSTREAM_DETAILS_URL": details.url(""),
            "MESH_UPSTREAM_REVIEWS_URL": f"http://127.0.0.1:{dead}",
        },
    )
    page = get(lonely.port, "/productpage")
    assert page.status == 200
    message = f"Error fetching product reviews: cannot connect to reviews at 127.0.0.1:{dead} (connection refused)"
    assert message in page.text
    assert "123-1234567890" in page.text


# -- process behaviour ---------------------------------------------------------------


@pytest.mark.parametrize("service", ["productpage", "details", "reviews", "ratings"])
def test_health_and_sigterm(apps: Apps, service: str) -> None:
    app = apps.start(service)
    assert app.started_in < 2.0, f"{service} took {app.started_in:.2f}s to listen"
    assert get(app.port, "/health").status == 200
    # an idle keep-alive connection must not hold up the exit
    idle = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    idle.request("GET", "/health")
    idle.getresponse().read()
    began = time.monotonic()
    assert app.stop(timeout=10) == 0
    assert time.monotonic() - began < 3.0
    assert "stopped" in app.log()
    idle.close()


def test_sigterm_lets_a_request_in_flight_finish(
    apps: Apps, proxy: ForwardProxy, servers: list[Recorder]
) -> None:
    slow = Recorder(delay=1.0)
    servers.append(slow)
    proxy.routes.update(reviews=slow.port, details=slow.port)
    app = apps.start("productpage", proxy=proxy)
    result: list[Got] = []
    worker = threading.Thread(target=lambda: result.append(get(app.port, "/productpage")))
    worker.start()
    deadline = time.monotonic() + 5
    while len(slow.times) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    app.popen.send_signal(signal.SIGTERM)
    worker.join(10)
    assert result and result[0].status == 200
    assert result[0].headers.get("connection") == "close"
    assert app.popen.wait(10) == 0


def test_port_missing_or_in_use(apps: Apps) -> None:
    missing = apps.spawn("details", ["details"], base_env())
    assert missing.popen.wait(10) == 2
    assert "PORT is not set" in missing.log()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = apps.spawn("ratings", ["ratings"], {**base_env(), "PORT": str(port)})
        assert busy.popen.wait(10) == 1
    assert f"127.0.0.1:{port}" in busy.log() and "already in use" in busy.log()

    bad = apps.spawn("ratings", ["ratings"], {**base_env(), "PORT": "http"})
    assert bad.popen.wait(10) == 2
    assert "not a port number" in bad.log()


# -- traffic -------------------------------------------------------------------------


def test_traffic_keeps_to_the_rate(apps: Apps, servers: list[Recorder]) -> None:
    target = Recorder()
    servers.append(target)
    traffic = apps.spawn(
        "traffic", ["traffic", "--url", f"{target.url}/productpage", "--rate", "5"], base_env()
    )
    deadline = time.monotonic() + 10
    while not target.times and time.monotonic() < deadline:
        time.sleep(0.01)
    assert target.times, traffic.log()
    time.sleep(2.0)
    assert traffic.stop() == 0
    times = list(target.times)
    span = times[-1] - times[0]
    # ~2 s at 5/s: 10 or 11 requests (1 at t=0, then one per 0.2 s), never a burst
    assert 8 <= len(times) <= 12, times
    assert len(times) <= span * 5 + 1.5  # (arrival times jitter a little around the 0.2 s sends)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.15, gaps
    assert traffic.log() == ""  # prints nothing while all is well


def test_traffic_reports_errors_sparingly(apps: Apps, servers: list[Recorder]) -> None:
    failing = Recorder(status=503, headers={"x-mesh-error": "no-endpoints"})
    servers.append(failing)
    traffic = apps.spawn(
        "traffic", ["traffic", "--url", failing.url + "/", "--rate", "20"], base_env()
    )
    deadline = time.monotonic() + 10
    while not failing.times and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(2.0)
    assert traffic.stop() == 0
    assert len(failing.times) <= 2.5 * 20 + 1  # bounded, even when every request fails
    lines = traffic.log().splitlines()
    assert 1 <= len(lines) <= 4, lines  # at most one error line per second
    assert "503 no-endpoints" in lines[0]
    assert any("more errors" in line for line in lines[1:]) or len(lines) == 1

    # nothing listening: a connection error is an error line too; --count ends the run
    dead = apps.spawn(
        "traffic",
        ["traffic", "--url", f"http://127.0.0.1:{free_port()}/", "--rate", "50", "--count", "3"],
        base_env(),
    )
    assert dead.popen.wait(10) == 0
    assert "connection refused" in dead.log()


# -- the description for the orchestrator --------------------------------------------


def test_demo_services_description() -> None:
    from mesh.config import load_config_text
    from mesh.config._model import ServiceConfig

    by_instance = {instance_name(entry): entry for entry in DEMO_SERVICES}
    assert sorted(by_instance) == [
        "details",
        "productpage",
        "ratings",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
    ]
    for entry in DEMO_SERVICES:
        assert set(entry) == {"name", "command", "labels", "upstreams", "health"}
        prefix = [*mesh_command(), "demo"]  # runs from any directory, and from the single file
        assert entry["command"][: len(prefix)] == prefix
        assert entry["command"][len(prefix)] == entry["name"] and entry["health"] == "/health"
        ServiceConfig(**entry)  # the [[service]] shape, key for key
    assert by_instance["productpage"]["upstreams"] == ["details", "reviews"]
    for version in ("v1", "v2", "v3"):
        entry = by_instance[f"reviews-{version}"]
        assert entry["name"] == "reviews" and entry["labels"] == {"version": version}
        assert entry["command"][-2:] == ["--version", version]
        assert entry["upstreams"] == ([] if version == "v1" else ["ratings"])

    config = load_config_text(demo_config_toml())
    assert config.services == ()
    [gateway] = config.gateways
    assert {"listen": gateway.listen, "to": gateway.to} == DEMO_GATEWAY

    # the commented-out tutorial routes are valid config too
    head, _, tail = demo_config_toml().partition("# Try these")
    lines = [line[2:] for line in tail.splitlines()[1:] if line.startswith("# ")]
    examples = load_config_text(
        head + "\n".join(line for line in lines if line.startswith("[") or "=" in line)
    )
    assert len(examples.routes) == 4 and len(examples.policies) == 1
