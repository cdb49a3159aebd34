"""What one host exposes to its other processes and to the network (docs/security.md,
"The trust boundary on one host"): the gateway's listeners, the admin servers, /tap, MESH_HOME."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests

from tests.integration.conftest import Cluster, Process, port_of

pytestmark = pytest.mark.timeout(120)

MESH = [sys.executable, "-m", "mesh"]


def listening_ports(process: Process) -> set[tuple[str, int]]:
    """(host, port) of every TCP socket ``process`` listens on."""
    listed = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=True).stdout
    found = set()
    for line in listed.splitlines():
        if f"pid={process.popen.pid}," in line:
            host, _, port = line.split()[3].rpartition(":")
            found.add((host.strip("[]"), int(port)))
    return found


def test_the_gateway_has_no_outbound_listener(cluster: Cluster) -> None:
    """Before, a gateway opened an outbound listener (and an inbound one that answered nobody):
    any process of the host could call every service through it as spiffe://TD/svc/gateway."""
    from tests.integration.test_inject import up

    up(cluster)
    gateway = cluster.spawn("gateway", [*MESH, "gateway", "--listen", "127.0.0.1:0", "--to", "web"])
    ready = gateway.wait_for(r"proxy gateway ready: (.*)$")
    assert re.fullmatch(r"admin 127\.0\.0\.1:\d+, upstream web 127\.0\.0\.1:\d+", ready.group(1)), ready.group(0)
    listen = port_of(re.search(r"upstream web (\S+)", ready.group(1)).group(1))
    admin = port_of(re.search(r"admin (\S+),", ready.group(1)).group(1))
    assert listening_ports(gateway) == {("127.0.0.1", listen), ("127.0.0.1", admin)}
    config = requests.get(f"http://127.0.0.1:{admin}/config", timeout=5).json()
    assert config["listeners"]["outbound"] is None and config["listeners"]["inbound"] is None
