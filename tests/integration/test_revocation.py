"""`mesh ca revoke` with real processes: a controller (`mesh up`), proxies, real mTLS, real clients."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, ProxyInfo
from tests.integration.test_control_plane import get, metric, status, up, wait_for

pytestmark = pytest.mark.timeout(120)


def issued(cluster: Cluster) -> list[dict]:
    result = cluster.mesh("ca", "issued", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["certificates"]


def live_serial(cluster: Cluster, service: str) -> str:
    """The serial of the certificate a running proxy of ``service`` holds (the newest signed)."""
    mine = [c for c in issued(cluster) if c["identity"] == cluster.spiffe(service)]
    assert mine, f"no certificate of {service} recorded"
    return mine[-1]["serial"]


def labelled(proxy: ProxyInfo, name: str, **labels: str) -> float:
    from mesh.telemetry import parse_prometheus_text

    text = requests.get(proxy.admin_url + "/metrics", timeout=5).text
    return sum(
        s.value for s in parse_prometheus_text(text) if s.name == name and labels.items() <= dict(s.labels).items()
    )


def test_a_revoked_caller_is_cut_off_within_seconds_and_stays_revoked_after_a_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    info = up(cluster)
    web = cluster.proxy("web", cluster.app("http", "web"))
    client = cluster.proxy("client", cluster.app("http", "client"))
    other = cluster.proxy("other", cluster.app("http", "other"))
    session = requests.Session()  # keep-alive: the client proxy's pooled connection to web stays open
    proxies = {"http": client.proxy_url}
    wait_for(lambda: session.get("http://web/", proxies=proxies, timeout=2).status_code == 200, 5, "client → web")
    wait_for(lambda: get(other, "http://web/", timeout=2).status_code == 200, 5, "other → web")
    serial = live_serial(cluster, "client")

    revoked = cluster.mesh("ca", "revoke", serial, "--reason", "laptop stolen", "-o", "json")
    assert revoked.returncode == 0, revoked.stderr
    assert [r["serial"] for r in json.loads(revoked.stdout)["revoked"]] == [serial]
    started = time.monotonic()

    def refused() -> list[requests.Response]:  # a list: a 502 Response is falsy
        response = session.get("http://web/", proxies=proxies, timeout=2)
        return [response] if response.status_code == 502 else []

    [response] = wait_for(refused, 5, "the revoked client refused")
    assert time.monotonic() - started < 2.5
    assert "this proxy's certificate" in response.text and "was revoked" in response.text
    assert response.headers["x-mesh-error"]
    for _ in range(5):  # it stays refused, and the others still work
        assert session.get("http://web/", proxies=proxies, timeout=2).status_code == 502
        assert get(other, "http://web/", timeout=2).status_code == 200
    assert f"this proxy's certificate (spiffe://{cluster.trust_domain}/svc/client, {serial}) was revoked" in (
        client.process.log()
    )
    # Its watch ended: the controller withdrew its registration, as a departed proxy's (zeroconf may
    # still show it: callers that try it are refused at the handshake and fail over).
    def registered(service: str) -> bool:
        return any(e["source"] == "registration" for e in status(cluster)["services"].get(service, []))

    wait_for(lambda: not registered("client"), 5, "the revoked client's registration withdrawn")
    assert registered("other")
    assert "ended the watch of " + cluster.spiffe("client") in (cluster.home / "run" / "mesh.log").read_text()
    # The connection the client held open to web was closed (by whichever side heard first).
    assert labelled(web, "revoked_connections_closed_total") + labelled(client, "revoked_connections_closed_total") >= 1

    # A stolen key: a certificate the controller signed, presented to web by someone else, over a
    # connection held open: web closes it when the certificate is revoked, and refuses new ones.
    from tests.integration.controller_client import MtlsConnection, mtls_request, signed_by_controller

    stolen = signed_by_controller(cluster.home, "thief")
    held = MtlsConnection(stolen, web.inbound)
    try:
        assert held.get() == "HTTP/1.1 200 OK"
        assert cluster.mesh("ca", "revoke", format(stolen.leaf.serial_number, "x")).returncode == 0
        assert held.ended(timeout=2.5)
    finally:
        held.close()
    assert f"certificate(s) revoked ({stolen.leaf.serial_number:x}): closed 1 open connection(s)" in web.process.log()
    assert labelled(web, "revoked_connections_closed_total") >= 1
    assert mtls_request(stolen, web.inbound).startswith("closed")
    assert labelled(web, "tls_handshake_failures_total", direction="inbound", reason="revoked") >= 1
    assert f"{cluster.spiffe('thief')} with certificate {stolen.leaf.serial_number:x}, which an operator revoked" in (
        web.process.log()
    )

    # `mesh ca issued` shows it; a restarted controller still has it, and so do the proxies.
    listed = {c["serial"]: c for c in issued(cluster)}
    assert listed[serial]["revoked"]["reason"] == "laptop stolen"
    text = cluster.mesh("ca", "issued")
    assert "laptop stolen" in text.stdout and "2 of them revoked" in text.stdout
    check = cluster.mesh("check")
    assert "2 revoked certificate(s) in force, refused by every proxy" in check.stdout, check.stdout
    address = json.loads((cluster.home / "controller.json").read_text())["address"]
    os.kill(info["pid"], signal.SIGKILL)
    restarted = cluster.spawn("controller-2", [sys.executable, "-m", "mesh", "controller", "--listen", address])
    restarted.wait_for("controller listening")
    assert {c["serial"]: c for c in issued(cluster)}[serial]["revoked"]["reason"] == "laptop stolen"
    wait_for(lambda: metric(web, "controller_connected") == 1, 15, "web reconnected")
    time.sleep(0.5)
    assert session.get("http://web/", proxies=proxies, timeout=2).status_code == 502
    assert get(other, "http://web/", timeout=2).status_code == 200
    again = cluster.mesh("ca", "revoke", serial, "-o", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["already_revoked"]


def test_revoke_errors_and_who_may_revoke(cluster: Cluster, tmp_path: Path) -> None:
    info = up(cluster)
    cluster.proxy("web", cluster.app("http", "web"))
    serial = live_serial(cluster, "web")

    unknown = cluster.mesh("ca", "revoke", "abcdef0123")
    assert unknown.returncode == 1
    assert "no certificate with serial abcdef0123 in force" in unknown.stderr and "mesh ca issued" in unknown.stderr
    bad = cluster.mesh("ca", "revoke", "xyz")
    assert bad.returncode == 1 and "expected hexadecimal digits" in bad.stderr
    neither = cluster.mesh("ca", "revoke")
    assert neither.returncode != 0 and "give a serial or --identity" in neither.stderr
    nobody = cluster.mesh("ca", "revoke", "--identity", "nobody")
    assert nobody.returncode == 1 and f"no certificate of {cluster.spiffe('nobody')} in force" in nobody.stderr

    # A joined host reads the mesh; it may not revoke.
    other = Cluster(tmp_path / "host-b")
    other.home.mkdir(parents=True)
    try:
        token = (cluster.home / "join-token").read_text().strip()
        joined = other.mesh("join", info["controller"], "--token", token, "--ca-fingerprint", info["ca_fingerprint"])
        assert joined.returncode == 0, joined.stderr
        refused = other.mesh("ca", "revoke", serial)
        assert refused.returncode == 1 and "host identity" in refused.stderr and "operators only" in refused.stderr
    finally:
        other.close()
    assert all(not c["revoked"] for c in issued(cluster))

    # By identity: every live certificate of web; its proxy logs that it was revoked.
    by_identity = cluster.mesh("ca", "revoke", "--identity", "web", "-o", "json")
    assert by_identity.returncode == 0, by_identity.stderr
    assert serial in [r["serial"] for r in json.loads(by_identity.stdout)["revoked"]]


def test_a_revocation_through_one_controller_is_enforced_through_another_on_etcd(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two controllers on one etcd store: revoked through B, the proxies watching A refuse it."""
    from tests.integration.etcd import EtcdCluster
    from tests.integration.test_store_etcd import mesh_at, second_home, start_controller

    etcd = EtcdCluster.start(tmp_path_factory.mktemp("etcd"), size=1)
    try:
        cluster.init_ca()
        store = f"{etcd.url}/{cluster.tmp.name}"
        home_b = second_home(cluster)
        start_controller(cluster, "controller-a", cluster.home, store)
        start_controller(cluster, "controller-b", home_b, store)
        cluster.proxy("web", cluster.app("http", "web"), extra=["--no-zeroconf"])
        client = cluster.proxy("client", cluster.app("http", "client"), extra=["--no-zeroconf"])
        other = cluster.proxy("other", cluster.app("http", "other"), extra=["--no-zeroconf"])
        for caller in (client, other):
            wait_for(lambda caller=caller: get(caller, "http://web/", timeout=2).status_code == 200, 10, "→ web")
        serial = live_serial(cluster, "client")

        revoked = mesh_at(cluster, home_b, "ca", "revoke", "--identity", "client", "--reason", "host lost")
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        wait_for(lambda: get(client, "http://web/", timeout=2).status_code == 502, 5, "client refused")
        assert time.monotonic() - started < 2.5
        assert get(other, "http://web/", timeout=2).status_code == 200
        assert {c["serial"]: c for c in issued(cluster)}[serial]["revoked"]["reason"] == "host lost"  # through A
    finally:
        etcd.close()
