"""A `mesh inject` sidecar stays inside its memory budget too (peak RSS < 44 MB, docs/performance.md).

`mesh inject` parses its command line with typer, then re-execs itself into a lean
entry point (mesh/cli/_sidecar.py), so the long-running process carries neither
typer nor pydantic.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, free_port
from tests.integration.test_inject import HTTP_SERVER, write_script
from tests.integration.test_proxy_memory import PEAK_RSS_MB, requests_through, vm_kb

pytestmark = pytest.mark.timeout(90)

# Measured 39.4 MB (VmHWM) after this traffic, zeroconf on; 49.4 MB while the sidecar loaded
# cryptography, 61.1 MB while it ran inside the typer process. Same bound as test_proxy_memory.py.


def test_peak_rss_of_an_inject_sidecar_under_traffic(cluster: Cluster, tmp_path: Path) -> None:
    cluster.init_ca()
    server = write_script(tmp_path, "server.py", HTTP_SERVER)
    inbound = free_port()
    web = cluster.spawn(
        "inject-web",
        [sys.executable, "-m", "mesh", "inject", "--name", "web", "--inbound", f"127.0.0.1:{inbound}", "--health", "/",
         "--", sys.executable, str(server)],
    )  # fmt: skip
    web.wait_for("app is ready", timeout=30)
    endpoints = cluster.write_endpoints([("web", inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints)
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(requests_through, client.outbound, 100) for _ in range(8)]:
            future.result()
    peak_mb = vm_kb(web.popen.pid, "VmHWM") / 1024
    print(f"mesh inject (pid {web.popen.pid}): VmHWM {peak_mb:.1f} MB")
    assert peak_mb < PEAK_RSS_MB, f"mesh inject: peak RSS {peak_mb:.1f} MB (bound {PEAK_RSS_MB:g} MB)\n{web.log()}"
