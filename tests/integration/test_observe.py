"""Seeing the mesh with real processes: /tap on a proxy, and `mesh tap`, `top`, `stat`, `edges`
through the controller's fan-in. All traffic on 127.0.0.1; every load loop is bounded."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, ProxyInfo

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Observed:
    cluster: Cluster
    web: ProxyInfo
    client: ProxyInfo


def get(client: ProxyInfo, path: str = "/", timeout: float = 5) -> requests.Response:
    return requests.get(f"http://web{path}", proxies={"http": client.proxy_url}, timeout=timeout)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (requests.RequestException, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextmanager
def observed_mesh(cluster: Cluster) -> Iterator[Observed]:
    """`mesh up --detach`, web (labelled v1) and client proxies registered, client → web working."""
    cluster.init_ca()
    result = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pid"]
    try:
        web = cluster.proxy("web", cluster.app("http", "web"), extra=["--label", "version=v1"])
        client = cluster.proxy("client", cluster.app("http", "client"))
        wait_for(lambda: get(client, timeout=2).status_code == 200, 15, "client → web")

        def both_registered() -> bool:
            status = json.loads(cluster.mesh("status", "-o", "json").stdout)
            return {"web", "client"} <= set(status["services"])

        wait_for(both_registered, 15, "both proxies in the controller's registry", interval=0.3)
        yield Observed(cluster, web, client)
    finally:
        cluster.mesh("down")


@contextmanager
def load(client: ProxyInfo, paths: tuple[str, ...] = ("/",), max_requests: int = 600, pause: float = 0.02) -> Iterator[list[int]]:
    """Requests from client to web in a thread, until the block ends or max_requests were sent."""
    stop = threading.Event()
    statuses: list[int] = []

    def run() -> None:
        session = requests.Session()
        for i in range(max_requests):
            if stop.is_set():
                return
            try:
                statuses.append(session.get(f"http://web{paths[i % len(paths)]}", proxies={"http": client.proxy_url}, timeout=5).status_code)
            except requests.RequestException:
                statuses.append(0)
            time.sleep(pause)

    thread = threading.Thread(target=run, name="load", daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=10)


# ------------------------------------------------------------ tests


def test_admin_tap_streams_ndjson_events(cluster: Cluster) -> None:
    with observed_mesh(cluster) as mesh:
        web = mesh.web
        url = f"{web.admin_url}/tap?service=web&path=/headers&method=GET&max_rps=1000"
        with requests.get(url, stream=True, timeout=10) as tap:
            assert tap.status_code == 200
            assert tap.headers["Content-Type"] == "application/x-ndjson"
            assert tap.headers["Transfer-Encoding"] == "chunked"
            lines = tap.iter_lines()
            with load(mesh.client, paths=("/", "/headers"), max_requests=400):
                events = [json.loads(next(lines)) for _ in range(3)]
        for event in events:
            assert event["type"] == "request"
            assert event["proxy"] == "web" and event["direction"] == "inbound"
            assert event["path"] == "/headers" and event["method"] == "GET"  # the filter held
            assert event["src_service"] == "client" and event["src_identity"] == cluster.spiffe("client")
            assert event["dst_service"] == "web" and event["dst_identity"] == cluster.spiffe("web")
            assert event["status"] == 200 and event["tls"] is True and event["mesh_error"] is None
            assert event["latency_ms"] > 0 and event["response_bytes"] > 0
            assert abs(event["timestamp"] - time.time()) < 60
            assert len(event["request_id"]) == 32
        # The listener left: the proxy stops building events (no listener, no cost).
        wait_for(
            lambda: "tap_listeners 0" in requests.get(f"{web.admin_url}/metrics", timeout=5).text, 10, "tap_listeners 0"
        )
        assert "tap_dropped_events_total 0" in requests.get(f"{web.admin_url}/metrics", timeout=5).text


def test_mesh_tap_json_and_text(cluster: Cluster) -> None:
    with observed_mesh(cluster) as mesh:
        with load(mesh.client, paths=("/", "/headers")):
            result = cluster.mesh("tap", "web", "-o", "json", "--max", "5", timeout=60)
            assert result.returncode == 0, result.stderr
            events = [json.loads(line) for line in result.stdout.splitlines()]
            assert len(events) == 5
            for event in events:
                assert event["type"] == "request"
                assert event["dst_service"] == "web"
                assert event["src_identity"] == cluster.spiffe("client")
                assert event["tls"] is True and event["status"] == 200
                assert event["instance"]
            assert {e["direction"] for e in events} <= {"inbound", "outbound"}
            assert "tapping web" in result.stderr

            text = cluster.mesh("tap", "web", "--direction", "outbound", "--max", "2", timeout=60)
            assert text.returncode == 0, text.stderr
            lines = text.stdout.splitlines()
            assert len(lines) == 2
            for line in lines:
                assert line.startswith("req id=") and " proxy=out src=client dst=web :method=GET :authority=web" in line
                assert "→ :status=200 latency=" in line and line.endswith("mtls=true")

        # The CLI left: the controller closed its streams, the proxies build no events any more.
        def untapped() -> bool:
            return all(
                "tap_listeners 0" in requests.get(f"{p.admin_url}/metrics", timeout=5).text for p in (mesh.web, mesh.client)
            )

        wait_for(untapped, 10, "tap_listeners 0 on both proxies")

        bad = cluster.mesh("tap", "--direction", "sideways", "--max", "1")
        assert bad.returncode == 1 and "direction" in bad.stderr


def test_top_once_stat_and_edges(cluster: Cluster) -> None:
    with observed_mesh(cluster) as mesh:
        # Tap while requests run; top counts each call once though both proxies report it.
        with load(mesh.client, paths=("/", "/headers?n=1", "/headers?n=2"), max_requests=300):
            top = cluster.mesh("top", "--once", "--seconds", "3", timeout=60)
        assert top.returncode == 0, top.stderr
        rows = [line.split() for line in top.stdout.splitlines()]
        assert rows[0][0] == "mesh" and "from 2 proxies" in top.stdout
        header = next(r for r in rows if r and r[0] == "SOURCE")
        assert header == ["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST", "LAST", "SUCCESS"]
        body = {(r[0], r[1], r[2], r[3]): r for r in rows if len(r) == 9 and r[0] == "client"}
        assert ("client", "web", "GET", "/headers") in body  # query strings share a row
        headers_row = body[("client", "web", "GET", "/headers")]
        assert int(headers_row[4]) > 0 and headers_row[8] == "100.00%"

        as_json = cluster.mesh("top", "--once", "--seconds", "0.5", "-o", "json", timeout=60)
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout)["proxies"] == 2

        stat = cluster.mesh("stat", timeout=60)
        assert stat.returncode == 0, stat.stderr
        web_line = next(line.split() for line in stat.stdout.splitlines() if line.startswith("web "))
        service, version, meshed, success, rps, p50, p95, p99, tcp = web_line
        assert (service, version, meshed, success) == ("web", "-", "1/1", "100.00%")
        assert rps.endswith("rps") and float(rps[:-3]) > 0
        for latency in (p50, p95, p99):
            assert latency.endswith(("µs", "ms", "s")) and latency != "-"
        assert any(line.split()[:2] == ["web", "v1"] for line in stat.stdout.splitlines())

        data = json.loads(cluster.mesh("stat", "web", "-o", "json").stdout)
        (web_row, v1_row) = data["rows"]
        assert web_row["service"] == "web" and web_row["success_rate"] == 1.0 and web_row["requests"] > 0
        assert web_row["p50_ms"] > 0 and web_row["p99_ms"] >= web_row["p50_ms"]
        assert v1_row["version"] == "v1" and data["unreachable"] == []

        edges = cluster.mesh("edges", "-o", "json")
        assert edges.returncode == 0, edges.stderr
        (edge,) = [e for e in json.loads(edges.stdout)["edges"] if (e["src"], e["dst"]) == ("client", "web")]
        assert edge["src_identity"] == cluster.spiffe("client")
        assert edge["dst_identity"] == cluster.spiffe("web")
        assert edge["mtls"] is True and edge["seen_by"] == ["source", "destination"]
        assert edge["total_requests"] > 0
        text = cluster.mesh("edges")
        assert text.returncode == 0 and cluster.spiffe("client") in text.stdout and "yes" in text.stdout

        # A proxy that died is listed as unreachable, not an error.
        mesh.web.process.popen.kill()
        mesh.web.process.popen.wait(5)
        after = json.loads(cluster.mesh("stat", "-o", "json", timeout=60).stdout)
        assert any(u["service"] == "web" for u in after["unreachable"])


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by .ci/run")
def test_top_in_a_real_terminal(cluster: Cluster, tmp_path: Path) -> None:
    with observed_mesh(cluster) as mesh:
        socket_name = f"mesh-test-{uuid.uuid4().hex[:8]}"  # a tmux server of our own
        session = "top"
        rc_file = tmp_path / "top.rc"
        env = {"MESH_HOME": str(cluster.home), "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
        command = (
            " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            + f" {shlex.quote(sys.executable)} -m mesh top web; echo $? > {shlex.quote(str(rc_file))}"
        )
        tmux = ["tmux", "-L", socket_name]

        def capture() -> str:
            return subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=10).stdout

        try:
            subprocess.run(
                [*tmux, "new-session", "-d", "-s", session, "-x", "100", "-y", "30", f"env {command}"],
                check=True,
                timeout=10,
                env={k: v for k, v in os.environ.items() if not k.startswith("TMUX")},
            )
            with load(mesh.client, paths=("/headers",), max_requests=1000, pause=0.03):

                def row_shown() -> str | None:
                    screen = capture()
                    for line in screen.splitlines():
                        cells = line.split()
                        if cells[:4] == ["client", "web", "GET", "/headers"] and int(cells[4]) > 0:
                            return screen
                    return None

                screen = wait_for(row_shown, 40, "a client → web row in mesh top", interval=0.3)
            assert "SOURCE" in str(screen) and "q quits" in str(screen)
            assert max(len(line) for line in str(screen).splitlines()) <= 100
            subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True, timeout=10)
            wait_for(lambda: rc_file.exists() and rc_file.read_text().strip(), 15, "mesh top to exit after q")
            assert rc_file.read_text().strip() == "0"
            gone = subprocess.run([*tmux, "has-session", "-t", session], capture_output=True, timeout=10)
            assert gone.returncode != 0  # the command ended, and with it the session
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
