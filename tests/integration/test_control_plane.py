"""`mesh up`, `mesh controller`, discovery, certificates and config push, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509

from tests.integration.conftest import Cluster, ProxyInfo

pytestmark = pytest.mark.timeout(120)


def up(cluster: Cluster) -> dict:
    """`mesh up --detach` on an ephemeral port, in this test's trust domain."""
    cluster.init_ca()
    result = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0", "-o", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    cluster.processes.append(_adopt(cluster, "mesh", info["pid"]))
    return info


def _adopt(cluster: Cluster, name: str, pid: int):  # noqa: ANN202 - a Process for cleanup
    """Make a detached daemon part of the test's clean-up."""
    from tests.integration.conftest import Process

    class Adopted:
        def __init__(self, pid: int) -> None:
            self.pid = pid
            self.returncode: int | None = None

        def poll(self) -> int | None:
            from mesh.controller._daemon import alive

            if not alive(self.pid):
                self.returncode = 0
            return self.returncode

        def wait(self, timeout: float | None = None) -> int:
            deadline = time.monotonic() + (timeout or 10)
            while self.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired("daemon", timeout or 10)
                time.sleep(0.05)
            return 0

        def send_signal(self, signum: int) -> None:
            os.kill(self.pid, signum)

        def kill(self) -> None:
            os.kill(self.pid, signal.SIGKILL)

    return Process(name, Adopted(pid), cluster.home / "run" / f"{name}.log")  # type: ignore[arg-type]


def status(cluster: Cluster) -> dict:
    result = cluster.mesh("status", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def get(proxy: ProxyInfo, url: str, timeout: float = 5) -> requests.Response:
    return requests.get(url, proxies={"http": proxy.proxy_url}, timeout=timeout)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (requests.RequestException, AssertionError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def admin_config(proxy: ProxyInfo) -> dict:
    return requests.get(proxy.admin_url + "/config", timeout=5).json()


def metric(proxy: ProxyInfo, name: str) -> float:
    from mesh.telemetry import parse_prometheus_text

    text = requests.get(proxy.admin_url + "/metrics", timeout=5).text
    return sum(s.value for s in parse_prometheus_text(text) if s.name == name)


def test_up_discover_route_status_and_down(cluster: Cluster) -> None:
    info = up(cluster)
    assert info["join"].startswith("mesh join 127.0.0.1:")
    web = cluster.proxy("web", cluster.app("http", "web"))
    started = time.monotonic()
    client = cluster.proxy("client", cluster.app("http", "client"))
    # No endpoints file: zeroconf and the controller's watch find web.
    wait_for(lambda: get(client, "http://web/", timeout=2).status_code == 200, 5, "client → web")
    assert time.monotonic() - started < 5 + 3  # within 5 s of the second proxy being up
    assert get(client, "http://web/headers").json()["mesh-client-id"] == cluster.spiffe("client")

    state = wait_for(lambda: (s := status(cluster)) and {"web", "client"} <= set(s["services"]) and s, 5, "status")
    web_entry = state["services"]["web"][0]
    assert web_entry["identity"] == cluster.spiffe("web")
    assert web_entry["address"] == f"127.0.0.1:{web.inbound}"
    text = cluster.mesh("status")
    assert text.returncode == 0 and "web" in text.stdout and "client" in text.stdout

    # A proxy stopped with SIGTERM disappears from status and from its peers' endpoints.
    assert web.process.terminate() == 0
    wait_for(lambda: "web" not in status(cluster)["services"], 5, "web gone from status")
    wait_for(lambda: "web" not in admin_config(client)["endpoints"], 5, "web gone from client's endpoints")
    assert get(client, "http://web/").status_code == 503

    down = cluster.mesh("down", "-o", "json")
    assert down.returncode == 0, down.stderr
    assert [d["name"] for d in json.loads(down.stdout)["stopped"]] == ["mesh"]
    from mesh.controller._daemon import alive  # a zombie (nobody reaps in a container) is not alive

    assert not alive(info["pid"])


def test_apply_reaches_proxies_and_bad_config_is_rejected(cluster: Cluster, tmp_path: Path) -> None:
    up(cluster)
    web = cluster.proxy("web", cluster.app("http", "web"))
    wait_for(lambda: admin_config(web)["controller"]["connected"], 5, "web connected")
    good = tmp_path / "mesh.toml"
    good.write_text(
        f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n\n'
        '[[route]]\nservice = "web"\ntimeout = "3s"\n\n[[policy]]\nservice = "web"\nallow = ["client"]\n'
    )
    started = time.monotonic()
    result = cluster.mesh("apply", str(good))
    assert result.returncode == 0, result.stderr
    assert "applied, config version 1" in result.stdout
    wait_for(lambda: admin_config(web)["controller"]["config_version"] == 1, 2, "config version 1 at web")
    assert time.monotonic() - started < 2.5
    assert admin_config(web)["policies"][0]["allow"] == ["client"]

    shown = json.loads(cluster.mesh("config", "show", "-o", "json").stdout)
    assert shown["version"] == 1 and shown["config"]["route"][0]["timeout"] == "3s"

    bad = tmp_path / "bad.toml"
    bad.write_text('[[route]]\nservice = "web"\nsplit = [ { labels = { version = "v1" }, weight = 90 } ]\n')
    result = cluster.mesh("apply", str(bad))
    assert result.returncode == 1
    assert "route[0].split: expected weights that sum to 100, found 90" in result.stderr
    assert json.loads(cluster.mesh("config", "show", "-o", "json").stdout)["version"] == 1
    assert admin_config(web)["controller"]["config_version"] == 1


@pytest.mark.timeout(150)
def test_short_lived_certificates_renew_on_schedule_without_failed_requests(cluster: Cluster) -> None:
    """The shortest lifetime allowed (60 s): each proxy renews once, at 70 % of the life it was
    granted (not at 40 %, as when the schedule counted from the backdated notBefore), and not
    one request fails meanwhile. A shorter --cert-ttl is refused, and the controller never
    signs below the minimum whatever a caller asks for."""
    up(cluster)
    web = cluster.proxy("web", cluster.app("http", "web"), extra=["--cert-ttl", "60s"])
    client = cluster.proxy("client", cluster.app("http", "client"), extra=["--cert-ttl", "1m"])
    started = time.time()
    wait_for(lambda: get(client, "http://web/").status_code == 200, 5, "client → web")
    first = {p.process.name: admin_config(p)["certificate_expiry"] for p in (web, client)}
    renewed_at: dict[str, float] = {}
    failures: list[str] = []
    count = 0
    deadline = time.monotonic() + 50  # past 70 % of 60 s, short of a second renewal
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        while time.monotonic() < deadline:
            if count % 10 == 0:  # about twice a second: when did each proxy swap its certificate?
                for proxy in (web, client):
                    name = proxy.process.name
                    if name not in renewed_at and admin_config(proxy)["certificate_expiry"] != first[name]:
                        renewed_at[name] = time.time()
            try:
                response = session.get("http://web/", timeout=5)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.headers.get('x-mesh-error')}")
            except requests.RequestException as exc:
                failures.append(repr(exc))
            count += 1
            time.sleep(0.05)
    assert failures == []
    assert count > 100
    for proxy in (web, client):
        assert admin_config(proxy)["certificate_expiry"] != first[proxy.process.name]
        assert proxy.process.log().count("renewed the certificate") == 1, proxy.process.log()
        after = renewed_at[proxy.process.name] - started
        assert 38 <= after <= 50, (after, proxy.process.log())
    # The controller signed two certificates per proxy: its first and one renewal.
    controller_log = (cluster.home / "run" / "mesh.log").read_text()
    assert controller_log.count("signed a certificate for") == 4, controller_log

    # Below the minimum: a clear error, and nothing starts.
    for ttl in ("15s", "59s"):
        short = cluster.mesh("proxy", "--service", "web", "--app", "127.0.0.1:1", "--cert-ttl", ttl, timeout=20)
        assert short.returncode == 1, short.stderr
        assert f"--cert-ttl {ttl}" in short.stderr and "at least 60s" in short.stderr, short.stderr
    for command in (["inject", "--cert-ttl", "10s", "--", "true"], ["gateway", "--to", "web", "--cert-ttl", "10s"]):
        refused = cluster.mesh(*command, timeout=20)
        assert refused.returncode == 1 and "at least 60s" in refused.stderr, (command, refused.stderr)
    # A caller that asks the controller for less gets the minimum.
    from tests.integration.controller_client import renew_as

    status_code, body = renew_as(cluster.home, holder="web", asks_for="web", extra={"ttl_seconds": 15})
    assert status_code == 200, body
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    granted = leaf.not_valid_after_utc.timestamp() - time.time()
    assert 55 <= granted <= 61, granted
    status_code, body = renew_as(cluster.home, holder="web", asks_for="web", extra={"ttl_seconds": "soon"})
    assert status_code == 400 and "ttl_seconds" in body["error"], body


def shorten_issuer(cluster: Cluster, lifetime: timedelta) -> datetime:
    """Replace the issuer of the cluster's CA by one that ends ``lifetime`` from now (an issuer
    nobody rotated in time); its end."""
    from mesh.home import MeshHome, atomic_write
    from mesh.identity import CertificateAuthority, cert_to_pem, generate_key, key_to_pem
    from mesh.identity._certs import load_key, make_issuer

    home = MeshHome(cluster.home)
    ca = CertificateAuthority.load(home)
    root_key = load_key(home.root_key.read_bytes(), "root key")
    issuer_key = generate_key()
    issuer = make_issuer(issuer_key, ca.root_cert, root_key, lifetime=lifetime, label="short")
    atomic_write(home.issuer_key, key_to_pem(issuer_key), mode=0o600)
    atomic_write(home.issuer_cert, cert_to_pem(issuer), mode=0o644)
    return issuer.not_valid_after_utc


def test_leaves_cut_short_by_their_issuer_renew_a_bounded_number_of_times(cluster: Cluster) -> None:
    """The issuer ends in 35 s, so every leaf the controller signs ends there too, each shorter
    than the last. Counted from the backdated notBefore, such leaves were due at once from about
    25 s before the end: a renewal storm of hundreds (1,730 in 34 s with a 15 s leaf). Counted
    from arrival, at least 6 s apart, the proxy renews a few times, then fails slowly."""
    cluster.init_ca()
    end = shorten_issuer(cluster, timedelta(seconds=35))
    result = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0", "-o", "json")
    assert result.returncode == 0, result.stderr
    cluster.processes.append(_adopt(cluster, "mesh", json.loads(result.stdout)["pid"]))
    web = cluster.proxy("web", cluster.app("http", "web"))
    time.sleep(max((end - datetime.now(UTC)).total_seconds(), 0) + 3)
    renewed = web.process.log().count("renewed the certificate")
    signed = (cluster.home / "run" / "mesh.log").read_text().count(f"signed a certificate for {cluster.spiffe('web')}")
    assert 1 <= renewed <= 5, web.process.log()[-3000:]
    assert signed <= 1 + renewed + 1, signed  # the first one, the renewals, and one in flight
    assert web.process.popen.poll() is None  # still serving, with what it has


def test_controller_killed_traffic_flows_and_restart_resyncs(cluster: Cluster, tmp_path: Path) -> None:
    info = up(cluster)
    web = cluster.proxy("web", cluster.app("http", "web"))
    client = cluster.proxy("client", cluster.app("http", "client"))
    wait_for(lambda: get(client, "http://web/").status_code == 200, 5, "client → web")
    wait_for(lambda: metric(client, "controller_connected") == 1, 5, "connected")
    os.kill(info["pid"], signal.SIGKILL)
    wait_for(lambda: metric(client, "controller_connected") == 0, 30, "controller_connected 0")
    for _ in range(20):
        assert get(client, "http://web/").status_code == 200
    # Restart on the same port: proxies reconnect and resync by themselves.
    address = json.loads((cluster.home / "controller.json").read_text())["address"]
    restarted = cluster.spawn("controller-2", [sys.executable, "-m", "mesh", "controller", "--listen", address])
    restarted.wait_for("controller listening")
    wait_for(lambda: metric(client, "controller_connected") == 1, 15, "reconnected")
    config = tmp_path / "mesh.toml"
    config.write_text(f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n\n[[route]]\nservice = "web"\ntimeout = "4s"\n')
    assert cluster.mesh("apply", str(config)).returncode == 0
    wait_for(lambda: admin_config(web)["routes"] and admin_config(web)["routes"][0]["timeout"] == "4s", 3, "resync")
    assert get(client, "http://web/").status_code == 200


def test_refusals(cluster: Cluster) -> None:
    info = up(cluster)
    # A second controller on the same home says so and exits.
    second = cluster.mesh("controller", "--listen", "127.0.0.1:0", timeout=20)
    assert second.returncode == 1
    assert "another controller is already running" in second.stderr
    # `mesh up` again: already up.
    again = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0")
    assert again.returncode == 1 and "already up" in again.stderr
    # A port in use: a clear error naming it (another home, same port as ours).
    other = Cluster(cluster.tmp / "other")
    other.home.mkdir(parents=True)
    assert other.mesh("ca", "init").returncode == 0
    busy = other.mesh("controller", "--listen", info["controller"], timeout=20)
    assert busy.returncode == 1 and info["controller"] in busy.stderr and "in use" in busy.stderr
    # A wrong join token: refused, and the proxy does not start.
    (cluster.home / "ca" / "issuer.key").rename(cluster.home / "ca" / "issuer.key.away")  # no local fallback
    try:
        refused = cluster.mesh(
            "proxy", "--service", "web", "--app", "127.0.0.1:1", "--token", "wrong", "--no-zeroconf", timeout=20
        )
    finally:
        (cluster.home / "ca" / "issuer.key.away").rename(cluster.home / "ca" / "issuer.key")
    assert refused.returncode == 1
    assert "join token is missing or wrong" in refused.stderr
    # A certificate for someone else's identity: refused (403) and logged.
    from tests.integration.controller_client import renew_as

    status_code, body = renew_as(cluster.home, holder="web", asks_for="ratings")
    assert status_code == 403 and "may not act for service 'ratings'" in body["error"]
    controller_log = (cluster.home / "run" / "mesh.log").read_text()
    assert "refused POST /v1/certificates for ratings" in controller_log


def test_join_pins_the_bundle_by_fingerprint(cluster: Cluster, tmp_path: Path) -> None:
    info = up(cluster)
    address = info["controller"]
    token = (cluster.home / "join-token").read_text().strip()
    other = Cluster(tmp_path / "host-b")
    other.home.mkdir(parents=True)
    try:
        _join_other_host(cluster, other, address, token, info)
    finally:
        other.close()


def _join_other_host(cluster: Cluster, other: Cluster, address: str, token: str, info: dict) -> None:
    wrong = other.mesh("join", address, "--token", token, "--ca-fingerprint", "sha256:" + "0" * 64)
    assert wrong.returncode == 1 and "does not have fingerprint" in wrong.stderr
    assert not (other.home / "controller.json").exists()
    ok = other.mesh("join", address, "--token", token, "--ca-fingerprint", info["ca_fingerprint"])
    assert ok.returncode == 0, ok.stderr
    assert (other.home / "ca" / "bundle.pem").read_bytes() == (cluster.home / "ca" / "bundle.pem").read_bytes()
    # A proxy on the joined "host" gets its certificate from the controller with the token.
    other.trust_domain = cluster.trust_domain
    web = other.proxy("web", other.app("http", "web"))
    assert admin_config(web)["identity"] == cluster.spiffe("web")
    wait_for(lambda: "web" in status(cluster)["services"], 5, "web registered")
