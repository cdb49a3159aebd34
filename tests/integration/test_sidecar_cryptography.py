"""A running sidecar never loads the cryptography package (~9 MB each: docs/performance.md, Memory).

Real processes: a controller, a `mesh proxy` and a `mesh inject` sidecar with 60 s certificates,
mTLS traffic between them across a renewal of each. Their keys and CSRs come from the identity
helper process (mesh/identity/_helper.py); this reads each sidecar's /proc/PID/maps, where a
loaded cryptography shows as its native library (cryptography/hazmat/bindings/_rust.abi3.so).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, free_port
from tests.integration.test_control_plane import admin_config, get, up, wait_for
from tests.integration.test_inject import HTTP_SERVER, write_script

pytestmark = pytest.mark.timeout(150)


def cryptography_mapped(pid: int) -> list[str]:
    """The files of the cryptography package that process ``pid`` has mapped (none, we hope)."""
    with open(f"/proc/{pid}/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "/cryptography/" in line})


def test_proxy_and_inject_sidecars_serve_and_renew_without_cryptography(cluster: Cluster, tmp_path: Path) -> None:
    up(cluster)
    server = write_script(tmp_path, "server.py", HTTP_SERVER)
    inbound = free_port()
    web = cluster.spawn(
        "inject-web",
        [sys.executable, "-m", "mesh", "inject", "--name", "web", "--inbound", f"127.0.0.1:{inbound}", "--health", "/",
         "--cert-ttl", "60s", "--", sys.executable, str(server)],
    )  # fmt: skip
    web.wait_for("app is ready", timeout=30)
    client = cluster.proxy("client", cluster.app("http", "client"), extra=["--cert-ttl", "60s"])
    wait_for(lambda: get(client, "http://web/").status_code == 200, 10, "client → web")
    first_expiry = admin_config(client)["certificate_expiry"]
    for pid in (web.popen.pid, client.process.popen.pid):
        assert cryptography_mapped(pid) == []

    # Both renew at ~70 % of 60 s: a new key and CSR each, through the helper process.
    deadline = time.monotonic() + 60
    failures: list[str] = []
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        while time.monotonic() < deadline:
            if all("renewed the certificate" in p.log() for p in (web, client.process)):
                break
            response = session.get("http://web/", timeout=5)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.headers.get('x-mesh-error')}")
            time.sleep(0.2)
    for process in (web, client.process):
        assert "renewed the certificate" in process.log(), process.log()
    assert admin_config(client)["certificate_expiry"] != first_expiry
    assert failures == []
    # New mTLS connections with the renewed certificates.
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        session.headers["Connection"] = "close"
        assert all(session.get("http://web/", timeout=5).status_code == 200 for _ in range(20))
    for pid in (web.popen.pid, client.process.popen.pid):
        assert cryptography_mapped(pid) == []


def test_a_proxy_with_credentials_from_files_checks_them_without_cryptography(cluster: Cluster) -> None:
    cluster.init_ca()
    issued = cluster.mesh("ca", "issue", "web", "--out", str(cluster.tmp / "web"))
    assert issued.returncode == 0, issued.stderr
    files = cluster.tmp / "web"
    argv = ["--cert", str(files / "cert.pem"), "--key", str(files / "key.pem"), "--bundle", str(files / "bundle.pem")]
    web = cluster.proxy("web", cluster.app("http", "web"), extra=[*argv, "--no-zeroconf"])
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=["--no-zeroconf"])
    assert get(client, "http://web/").status_code == 200
    assert cryptography_mapped(web.process.popen.pid) == []

    # The helper's checks reach the operator as before: a key of another certificate is refused.
    other = cluster.mesh("ca", "issue", "other", "--out", str(cluster.tmp / "other"))
    assert other.returncode == 0, other.stderr
    argv[3] = str(cluster.tmp / "other" / "key.pem")
    refused = cluster.mesh("proxy", "--service", "web", "--app", "127.0.0.1:1", "--no-zeroconf", *argv, timeout=30)
    assert refused.returncode == 1
    assert f"private key {argv[3]} does not belong to the certificate {files / 'cert.pem'}" in refused.stderr
