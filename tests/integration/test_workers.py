"""`--workers N`: N proxy processes sharing the data-plane listeners (SO_REUSEPORT), supervised
by the command: connections spread over them, a SIGTERM drains them all, one that dies ends all."""

from __future__ import annotations

import http.client
import os
import re
import signal
import sys
import time

import pytest

from tests.integration.conftest import Cluster, Process, free_port

pytestmark = pytest.mark.timeout(90)

ADMIN = re.compile(r"ready: .*admin 127\.0\.0\.1:(\d+)")
WORKERS = re.compile(r"started (\d+) workers \(pids ([\d, ]+)\)")


def admin_ports(process: Process, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ports = [int(m.group(1)) for m in ADMIN.finditer(process.log())]
        if len(ports) >= count:
            return ports
        assert process.popen.poll() is None, process.log()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers were ready:\n{process.log()}")


def counter(admin: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def get(port: int, target: str, host: str) -> int:
    """One request on a connection of its own: the kernel picks a worker per connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_proxy_workers_share_the_listeners_and_drain_together(cluster: Cluster) -> None:
    cluster.init_ca()
    app = cluster.app()
    admin = free_port()
    info = cluster.proxy("web", app, extra=["--no-zeroconf", "--workers", "2", "--admin", f"127.0.0.1:{admin}"])
    ports = admin_ports(info.process, 2)
    assert admin in ports  # worker 0 serves the given admin address; the other one a port of its own
    target = f"http://127.0.0.1:{app}/"
    assert [get(info.outbound, target, f"127.0.0.1:{app}") for _ in range(60)] == [200] * 60
    served = [counter(port, "request_total") for port in ports]
    assert sum(served) == 60 and all(served), served  # both workers took connections
    assert info.process.terminate() == 0
    log = info.process.log()
    assert log.count("proxy web stopped") == 2, log
    assert "Traceback" not in log


def test_a_worker_that_dies_ends_the_others(cluster: Cluster) -> None:
    cluster.init_ca()
    info = cluster.proxy("web", cluster.app(), extra=["--no-zeroconf", "--workers", "2"])
    admin_ports(info.process, 2)
    pids = [int(p) for p in WORKERS.search(info.process.log()).group(2).split(", ")]  # type: ignore[union-attr]
    os.kill(pids[1], signal.SIGKILL)
    assert info.process.popen.wait(20) == 128 + signal.SIGKILL
    log = info.process.log()
    assert "worker 1" in log and "stopping the others" in log, log
    assert "proxy web stopped" in log  # the other one drained
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_gateway_workers_answer_on_one_listener(cluster: Cluster) -> None:
    cluster.init_ca()
    port = free_port()
    gateway = cluster.spawn("gateway", [sys.executable, "-m", "mesh", "gateway", "--listen", f"127.0.0.1:{port}",
                                        "--to", "web", "--no-zeroconf", "--workers", "2"])
    ports = admin_ports(gateway, 2)
    statuses = [get(port, "/", "shop") for _ in range(40)]
    assert statuses == [503] * 40  # no endpoint for web: the mesh says so, from either worker
    answered = [counter(p, "response_total") for p in ports]
    assert sum(answered) == 40 and all(answered), answered
    assert gateway.terminate() == 0


def test_a_bad_worker_count_is_a_clear_error(cluster: Cluster) -> None:
    cluster.init_ca()
    result = cluster.mesh("proxy", "--service", "web", "--app", "127.0.0.1:9", "--workers", "0")
    assert result.returncode == 1
    assert "--workers: expected a whole number from 1 to 64" in result.stderr
    assert "Traceback" not in result.stderr
