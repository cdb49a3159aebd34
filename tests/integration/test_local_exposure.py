"""What one host exposes to its other processes and to the network (docs/security.md,
"The trust boundary on one host"): the gateway's listeners, the admin servers, /tap, MESH_HOME."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

import pytest
import requests

from tests.integration.conftest import Cluster, Process, port_of
from tests.integration.test_control_plane import wait_for

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
    any process of the host could call every service through it as spiffe://TD/svc/gateway.
    Its one mTLS listener serves its admin pages (ALPN mesh-admin) to the controller and
    operators, so that `mesh stat` and `mesh edges` see it: a service's certificate gets nothing."""
    from tests.integration.test_inject import up
    from tests.integration.test_multihost import tls_client

    up(cluster)
    gateway = cluster.spawn("gateway", [*MESH, "gateway", "--listen", "127.0.0.1:0", "--to", "web"])
    ready = gateway.wait_for(r"proxy gateway ready: (.*)$")
    assert re.fullmatch(
        r"admin 127\.0\.0\.1:\d+, admin-mtls 127\.0\.0\.1:\d+, listen http 127\.0\.0\.1:\d+", ready.group(1)
    ), ready.group(0)
    listen = port_of(re.search(r"listen http (\S+)", ready.group(1)).group(1))
    admin = port_of(re.search(r"admin (\S+),", ready.group(1)).group(1))
    admin_mtls = port_of(re.search(r"admin-mtls (\S+),", ready.group(1)).group(1))
    assert listening_ports(gateway) == {("127.0.0.1", listen), ("127.0.0.1", admin), ("127.0.0.1", admin_mtls)}
    config = requests.get(f"http://127.0.0.1:{admin}/config", timeout=5).json()
    assert config["listeners"]["outbound"] is None and config["listeners"]["inbound"] is None
    assert config["listeners"]["admin_mtls"] == f"127.0.0.1:{admin_mtls}"
    # A service's certificate is refused there, whatever it asks for.
    creds = cluster.tmp / "client-creds"
    assert cluster.mesh("ca", "issue", "client", "--out", str(creds)).returncode == 0
    paths = [f"{creds}/cert.pem", f"{creds}/key.pem", f"{creds}/bundle.pem"]
    for alpn in ("http/1.1", "mesh-admin"):
        tried = tls_client(cluster, "127.0.0.1", admin_mtls, paths, alpn)
        assert tried.startswith("refused"), (alpn, tried)
    gateway.wait_for("refused spiffe://.*/svc/client .*a gateway serves only its admin pages over mTLS", timeout=5)


def test_a_fresh_demo_gives_an_all_green_check(cluster: Cluster) -> None:
    """`mesh up --demo` on a MESH_HOME that does not exist yet: MESH_HOME is made 0700 and every
    file under it that holds a secret owner-only, so `mesh check` has nothing to warn about
    (before: "MESH_HOME ... is readable by group and others (mode 0755)")."""
    from tests.integration.test_check import check, wait_until_current
    from tests.integration.test_up_config import requests_port_busy, up_detached

    assert not cluster.home.exists()
    wait_for(lambda: not requests_port_busy(9080), 60, "127.0.0.1:9080 (the demo's gateway) to be free")
    init = cluster.mesh("ca", "init", "--trust-domain", cluster.trust_domain)  # as `mesh up` does, in our own trust domain
    assert init.returncode == 0, init.stderr
    up_detached(cluster, "--demo", "--no-traffic")
    try:
        # productpage, details, ratings, reviews v1-v3, and the gateway (it registers: `mesh stat` sees it)
        wait_until_current(cluster, instances=7, timeout=60)
        result = check(cluster)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "\u203c" not in result.stdout and "\u00d7" not in result.stdout, result.stdout
        assert result.stdout.rstrip().splitlines()[-1].startswith("Status check results are \u2714 ("), result.stdout
        # Owner-only: MESH_HOME, its directories, and every file that is not a certificate or a public record.
        public = {"root.pem", "issuer.pem", "bundle.pem", "cert.pem", "controller.json", "host.json"}
        loose = []
        for path in [cluster.home, *cluster.home.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_dir() or path.name not in public:
                if mode & 0o077:
                    loose.append(f"{path.relative_to(cluster.home)} {mode:04o}")
        assert loose == [], loose
        assert (cluster.home / "run" / "productpage.log").exists() and (cluster.home / "run" / "mesh.log").exists()
    finally:
        assert cluster.mesh("down", timeout=60).returncode == 0


def test_tap_redacts_query_values_unless_an_operator_asks(cluster: Cluster) -> None:
    """The loopback admin server answers every process of the host: its /tap shows which query
    keys were sent, never their values (before: `?token=s3cret` as it was). An operator sees them
    with `mesh tap --show-query`, which the controller reads over mTLS and logs."""
    from tests.integration.test_observe import get, observed_mesh

    with observed_mesh(cluster) as mesh:
        with requests.get(f"{mesh.web.admin_url}/tap?service=web", stream=True, timeout=10) as tap:
            lines = tap.iter_lines()
            assert get(mesh.client, "/headers?user=ada&token=s3cret").status_code == 200
            event = json.loads(next(lines))
        assert event["path"] == "/headers?user=REDACTED&token=REDACTED"
        refused = requests.get(f"{mesh.web.admin_url}/tap?show_query=1", timeout=10)
        assert refused.status_code == 403 and "mesh tap --show-query" in refused.text
        tapping = cluster.spawn("tap", [*MESH, "tap", "web", "--direction", "inbound", "--max", "1", "-o", "json", "--show-query"])
        tapping.wait_for("tapping web", timeout=15)
        assert get(mesh.client, "/headers?user=ada&token=s3cret").status_code == 200
        assert tapping.popen.wait(20) == 0, tapping.log()
        (shown,) = [json.loads(line) for line in tapping.log().splitlines() if line.startswith("{")]
        assert shown["path"] == "/headers?user=ada&token=s3cret"
        assert "taps with query-string values shown" in (cluster.home / "run" / "mesh.log").read_text()
        # An admin server anywhere but loopback is refused.
        for admin in ("0.0.0.0:0", "192.0.2.1:0"):
            refused_admin = cluster.mesh("proxy", "--service", "web", "--app", "127.0.0.1:1", "--admin", admin)
            assert refused_admin.returncode == 1, refused_admin.stderr
            assert f"--admin {admin}: the admin server listens on loopback only" in refused_admin.stderr
