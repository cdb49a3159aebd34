"""`mesh up mesh.toml` and `mesh up --demo`: whole meshes from one command, and `mesh down`."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, free_port
from tests.integration.test_control_plane import _adopt, wait_for
from tests.integration.test_inject import HTTP_SERVER

pytestmark = pytest.mark.timeout(150)


def processes_of(home: Path) -> list[str]:
    """Command lines of live processes that belong to this MESH_HOME (ours and their children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat.split(") ", 1)[1].startswith("Z"):
            continue
        if int(entry.name) == os.getpid():
            continue  # the test itself
        if str(home) in cmdline or f"MESH_HOME={home}\0".encode() in environ + b"\0":
            found.append(f"{entry.name}: {cmdline}")
    return found


def up_detached(cluster: Cluster, *args: str) -> dict:
    result = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0", *args, "-o", "json", timeout=60)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    cluster.processes.append(_adopt(cluster, "mesh", info["pid"]))
    return info


def status(cluster: Cluster) -> dict:
    result = cluster.mesh("status", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_services_and_gateway_from_mesh_toml(cluster: Cluster, tmp_path: Path) -> None:
    cluster.init_ca()
    server = tmp_path / "server.py"
    server.write_text(textwrap.dedent(HTTP_SERVER))
    gateway_port = free_port()
    config = tmp_path / "mesh.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [mesh]
            trust_domain = "{cluster.trust_domain}"

            [[service]]
            name = "web"
            command = ["{sys.executable}", "{server}"]
            labels = {{ version = "v1" }}
            health = "/"
            replicas = 2

            [[service]]
            name = "crashy"
            command = ["{sys.executable}", "-c", "import sys; print('crashy failing'); sys.exit(3)"]

            [[gateway]]
            listen = "127.0.0.1:{gateway_port}"
            to = "web"
            """
        )
    )
    info = up_detached(cluster, str(config))
    assert info["services"] == ["crashy", "web"]
    wait_for(
        lambda: requests.get(f"http://127.0.0.1:{gateway_port}/", timeout=3).status_code == 200, 20, "gateway → web"
    )
    answer = requests.get(f"http://127.0.0.1:{gateway_port}/", timeout=5).text
    assert answer == f"hello from web caller={cluster.spiffe('gateway')}\n"

    def crashy_restarted() -> dict | None:
        units = {u["name"]: u for u in status(cluster)["units"]}
        crashy = units["crashy"]
        return units if crashy["restarts"] >= 2 and crashy["last_exit"] == 3 else None

    units = wait_for(crashy_restarted, 20, "crashy restarted with backoff")
    assert units["crashy"]["last_lines"] and "crashy failing" in "\n".join(units["crashy"]["last_lines"])
    assert {units["web-1"]["state"], units["web-2"]["state"]} == {"running"}
    web = wait_for(lambda: len(status(cluster)["services"].get("web", [])) == 2 and status(cluster), 10, "2 web")
    assert all(e["labels"] == {"version": "v1"} for e in web["services"]["web"])
    text = cluster.mesh("status").stdout
    assert "crashy" in text and "web" in text
    # The rest of the mesh keeps running while crashy crashes.
    assert requests.get(f"http://127.0.0.1:{gateway_port}/", timeout=5).status_code == 200

    down = cluster.mesh("down", timeout=60)
    assert down.returncode == 0, down.stderr
    wait_for(lambda: processes_of(cluster.home) == [], 10, "no process left")


def test_demo_serves_product_page_with_all_review_versions(cluster: Cluster) -> None:
    if requests_port_busy(9080):
        pytest.fail("127.0.0.1:9080 (the demo's gateway) is in use on this machine: stop what holds it")
    cluster.init_ca()
    up_detached(cluster, "--demo", "--no-traffic")
    try:
        wait_for(lambda: requests.get("http://127.0.0.1:9080/productpage", timeout=3).status_code == 200, 60, "demo")
        seen: set[str] = set()
        deadline = time.monotonic() + 60  # a loaded CI machine starts eight processes slowly
        while seen != {"v1", "v2", "v3"} and time.monotonic() < deadline:
            page = requests.get("http://127.0.0.1:9080/productpage", timeout=5).text
            seen.update(re.findall(r"reviews-(v[123])", page))
        assert seen == {"v1", "v2", "v3"}
        services = wait_for(
            lambda: (s := set(status(cluster)["services"])) >= {"productpage", "details", "reviews", "ratings"} and s,
            10,
            "demo services in status",
        )
        assert {"productpage", "details", "reviews", "ratings"} <= services
        reviews = status(cluster)["services"]["reviews"]
        assert sorted(e["labels"]["version"] for e in reviews) == ["v1", "v2", "v3"]
        _observe_demo(cluster)
    finally:
        assert cluster.mesh("down", timeout=60).returncode == 0
    wait_for(lambda: processes_of(cluster.home) == [], 10, "no process left")


def requests_port_busy(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the gateway does
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_until_free(port: int, timeout: float) -> bool:
    """Whether ``port`` is free, waiting up to ``timeout`` (another test's demo may hold 9080)."""
    deadline = time.monotonic() + timeout
    while requests_port_busy(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _observe_demo(cluster: Cluster) -> None:
    """`mesh top/tap/stat/edges` on the running demo, with a bounded request loop as traffic."""
    import threading

    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 25
        with requests.Session() as session:
            for _ in range(2000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                session.get("http://127.0.0.1:9080/productpage", timeout=5)
                time.sleep(0.05)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        top = cluster.mesh("top", "--once", "--seconds", "3", timeout=30)
        assert top.returncode == 0, top.stderr
        for row in (r"gateway\s+productpage", r"productpage\s+reviews", r"reviews\s+ratings", r"productpage\s+details"):
            assert re.search(row, top.stdout), (row, top.stdout)
        tap = cluster.mesh("tap", "reviews", "-o", "json", "--max", "3", timeout=30)
        assert tap.returncode == 0, tap.stderr
        events = [json.loads(line) for line in tap.stdout.splitlines() if line.strip()]
        assert len(events) == 3 and all("reviews" in (e.get("src"), e.get("dst")) or e.get("dst_service") == "reviews" or e.get("src_service") == "reviews" for e in events)
        stat = cluster.mesh("stat", "-o", "json", timeout=30)
        assert stat.returncode == 0, stat.stderr
        stats = json.loads(stat.stdout)
        rows = {(r["service"], r["version"]): r for r in stats["rows"]}
        assert {("reviews", "v1"), ("reviews", "v2"), ("reviews", "v3")} <= set(rows), rows
        assert rows[("reviews", None)]["success_rate"] == 1.0 and rows[("reviews", None)]["p50_ms"] is not None
        edges = json.loads(cluster.mesh("edges", "-o", "json", timeout=30).stdout)
        pairs = {(e["src"], e["dst"]) for e in edges.get("edges", [])}
        assert {("gateway", "productpage"), ("productpage", "reviews"), ("reviews", "ratings")} <= pairs, pairs
        assert all(e["mtls"] for e in edges["edges"] if e["dst"] in ("reviews", "ratings"))
    finally:
        stop.set()
        worker.join(30)


def test_ctrl_c_on_foreground_up_stops_every_child(cluster: Cluster, tmp_path: Path) -> None:
    import signal

    cluster.init_ca()
    server = tmp_path / "server.py"
    server.write_text(textwrap.dedent(HTTP_SERVER))
    config = tmp_path / "mesh.toml"
    config.write_text(
        f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n\n'
        f'[[service]]\nname = "web"\ncommand = ["{sys.executable}", "{server}"]\nreplicas = 2\n'
    )
    up = cluster.spawn("up", [sys.executable, "-m", "mesh", "up", "--listen", "127.0.0.1:0", str(config)])
    wait_for(lambda: len(status(cluster)["services"].get("web", [])) == 2, 20, "two web instances")
    assert len(processes_of(cluster.home)) >= 5  # up + 2 × (inject + app)
    up.popen.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert up.popen.wait(30) == 0
    wait_for(lambda: processes_of(cluster.home) == [], 10, "no child left")
