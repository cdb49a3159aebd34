"""A `mesh proxy` process stays well inside its memory budget (peak RSS < 44 MB, docs/performance.md)."""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import Pair

pytestmark = pytest.mark.timeout(60)

# Measured ~39.0 MB (VmHWM) after this traffic, zeroconf on; ~49-50 MB while the sidecar loaded
# cryptography, ~61 MB while it loaded typer and pydantic too. 44 MB leaves room for another
# Python or OpenSSL build, and still catches a heavy import creeping back (~5-11 MB).
PEAK_RSS_MB = 44.0


def vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def requests_through(port: int, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(count):
            conn.request("GET", "/", headers={"Host": "web"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


def test_peak_rss_of_a_proxy_pair_under_traffic(pair: Pair) -> None:
    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(requests_through, pair.client.outbound, 100) for _ in range(8)]:
            future.result()
    for proxy in (pair.client, pair.web):
        peak_mb = vm_kb(proxy.process.popen.pid, "VmHWM") / 1024
        print(f"{proxy.process.name}: VmHWM {peak_mb:.1f} MB")
        assert peak_mb < PEAK_RSS_MB, f"{proxy.process.name}: peak RSS {peak_mb:.1f} MB (bound {PEAK_RSS_MB:g} MB)"
