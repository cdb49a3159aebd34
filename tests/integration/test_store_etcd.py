"""Several controllers on a real 3-member etcd cluster (issue 13's "Done when", etcd part).

One cluster for the module (started once, ~2 s); each test has its own key prefix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, Process, ProxyInfo
from tests.integration.etcd import EtcdCluster
from tests.integration.test_control_plane import admin_config, wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.start(tmp_path_factory.mktemp("etcd"))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def etcd_healthy(etcd: EtcdCluster) -> EtcdCluster:
    """Every member running again (a test before may have killed some)."""
    for member in etcd.members:
        if not member.alive:
            etcd.restart(member)
    etcd.wait_healthy()
    return etcd


def store_url(etcd: EtcdCluster, cluster: Cluster) -> str:
    return f"{etcd.url}/{cluster.tmp.name}"  # a prefix per test


def second_home(cluster: Cluster, name: str = "home-b") -> Path:
    """Another controller's MESH_HOME holding a copy of the mesh's CA (docs/operations.md)."""
    home = cluster.tmp / name
    home.mkdir(mode=0o700)
    shutil.copytree(cluster.home / "ca", home / "ca")
    return home


def start_controller(cluster: Cluster, name: str, home: Path, store: str) -> tuple[Process, str]:
    argv = [sys.executable, "-m", "mesh", "--home", str(home), "controller", "--listen", "127.0.0.1:0"]
    process = cluster.spawn(name, [*argv, "--no-zeroconf", "--store", store])
    process.wait_for(r"controller listening on")
    return process, json.loads((home / "controller.json").read_text())["address"]


def mesh_at(cluster: Cluster, home: Path, *args: str, timeout: float = 30):  # noqa: ANN201
    return cluster.mesh("--home", str(home), *args, timeout=timeout)


class SteadyLoad:
    """GET http://web/ through the client proxy every 20 ms; counts every failure."""

    def __init__(self, client: ProxyInfo) -> None:
        self.client = client
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        proxies = {"http": self.client.proxy_url}
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = session.get("http://web/", proxies=proxies, timeout=5)
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{response.status_code} {response.headers.get('x-mesh-error')}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            time.sleep(0.02)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


CONFIG = """
[mesh]
trust_domain = "{td}"

[[route]]
service = "web"
timeout = "{timeout}"
"""


def write_config(cluster: Cluster, timeout: str) -> Path:
    path = cluster.tmp / f"mesh-{timeout}.toml"
    path.write_text(CONFIG.format(td=cluster.trust_domain, timeout=timeout))
    return path


def test_two_controllers_failover_apply_and_quorum(cluster: Cluster, etcd_healthy: EtcdCluster) -> None:
    etcd = etcd_healthy
    cluster.init_ca()
    store = store_url(etcd, cluster)
    home_b = second_home(cluster)
    controller_a, address_a = start_controller(cluster, "controller-a", cluster.home, store)
    controller_b, address_b = start_controller(cluster, "controller-b", home_b, store)
    # Both share the join token (the store's) and know each other.
    assert (home_b / "join-token").read_text() == (cluster.home / "join-token").read_text()

    # Proxies join through controller A (their MESH_HOME's controller.json).
    web = cluster.proxy("web", cluster.app("http", "web"), extra=["--no-zeroconf"])
    client = cluster.proxy("client", cluster.app("http", "client"), extra=["--no-zeroconf"])
    wait_for(
        lambda: requests.get("http://web/", proxies={"http": client.proxy_url}, timeout=2).status_code == 200,
        10,
        "client → web through the controller's snapshot",
    )
    for proxy in (web, client):
        wait_for(
            lambda proxy=proxy: set(admin_config(proxy)["controller"]["controllers"]) == {address_a, address_b},
            10,
            "proxies know both controllers",
        )
        assert admin_config(proxy)["controller"]["address"] == address_a

    with SteadyLoad(client) as load:
        time.sleep(0.5)
        killed_at = time.monotonic()
        controller_a.popen.kill()  # kill -9
        for proxy in (web, client):
            wait_for(
                lambda proxy=proxy: (c := admin_config(proxy)["controller"])["address"] == address_b and c["connected"],
                5,
                "the proxy to move to controller B",
            )
        moved = time.monotonic() - killed_at
        assert moved < 5, moved

        # A config applied through B is in force at every proxy within 2 s.
        applied = mesh_at(cluster, home_b, "apply", str(write_config(cluster, "3s")), "-o", "json")
        assert applied.returncode == 0, applied.stderr
        version = json.loads(applied.stdout)["version"]
        applied_at = time.monotonic()
        for proxy in (web, client):
            wait_for(lambda proxy=proxy: admin_config(proxy)["controller"]["config_version"] == version, 2, "config everywhere")
        assert time.monotonic() - applied_at < 2

        # One etcd member killed: nothing visible; writes still work.
        etcd.kill(etcd.members[0])
        again = mesh_at(cluster, home_b, "apply", str(write_config(cluster, "4s")), "-o", "json")
        assert again.returncode == 0, again.stderr
        check = mesh_at(cluster, home_b, "check", "-o", "json", timeout=60)
        store_checks = {c["description"]: c for c in _category(check.stdout, "store")}
        assert store_checks["every etcd member answers"]["status"] == "warn"
        assert store_checks["etcd has a leader and a quorum"]["status"] == "ok"
        time.sleep(1)
    assert load.ok > 50 and load.failures == [], load.failures[:5]

    # Two members killed: the data plane goes on, the controller is read-only, apply names the store.
    with SteadyLoad(client) as load:
        etcd.kill(etcd.members[1])
        refused = wait_for(
            lambda: (r := mesh_at(cluster, home_b, "apply", str(write_config(cluster, "5s")))).returncode != 0 and r,
            15,
            "apply to be refused",
            interval=0.5,
        )
        assert "cannot apply a config" in refused.stderr and store.split("://")[0] in refused.stderr, refused.stderr
        assert "read-only" in refused.stderr
        check = mesh_at(cluster, home_b, "check", "-o", "json", timeout=60)
        store_checks = {c["description"]: c for c in _category(check.stdout, "store")}
        quorum = store_checks["etcd has a leader and a quorum"]
        assert quorum["status"] == "fail" and "quorum" in quorum["message"], quorum
        writable = store_checks["the store takes writes (else the controllers are read-only)"]
        assert writable["status"] == "fail" and "read-only" in writable["message"], writable
        time.sleep(1)
    assert load.ok > 20 and load.failures == [], load.failures[:5]

    # The members come back: writes work again.
    etcd.restart(etcd.members[0])
    etcd.restart(etcd.members[1])
    etcd.wait_healthy()
    wait_for(
        lambda: mesh_at(cluster, home_b, "apply", str(write_config(cluster, "6s"))).returncode == 0,
        20,
        "apply to work again",
        interval=0.5,
    )
    controller_b.terminate()


def _category(stdout: str, name: str) -> list[dict]:
    report = json.loads(stdout)
    return next(c for c in report["categories"] if c["name"] == name)["checks"]


def test_a_controller_with_another_ca_refuses_the_store(cluster: Cluster, etcd_healthy: EtcdCluster) -> None:
    cluster.init_ca()
    store = store_url(etcd_healthy, cluster)
    start_controller(cluster, "controller-a", cluster.home, store)
    other = cluster.tmp / "other"
    assert mesh_at(cluster, other, "ca", "init", "--trust-domain", cluster.trust_domain).returncode == 0
    result = mesh_at(cluster, other, "controller", "--listen", "127.0.0.1:0", "--no-zeroconf", "--store", store)
    assert result.returncode == 1
    assert "belongs to another mesh" in result.stderr and "copy the mesh's CA" in result.stderr, result.stderr


def test_kill_9_mid_apply_is_all_or_nothing_at_every_controller(cluster: Cluster, etcd_healthy: EtcdCluster) -> None:
    cluster.init_ca()
    store = store_url(etcd_healthy, cluster)
    home_b = second_home(cluster)
    controller_a, _ = start_controller(cluster, "controller-a", cluster.home, store)
    start_controller(cluster, "controller-b", home_b, store)
    # Applies through A in a tight loop; A is killed in the middle of them.
    configs = [write_config(cluster, f"{n}s") for n in range(1, 30)]
    done: list[str] = []

    def apply_all() -> None:
        for path in configs:
            if mesh_at(cluster, cluster.home, "apply", str(path)).returncode != 0:
                return
            done.append(path.name)

    thread = threading.Thread(target=apply_all, daemon=True)
    thread.start()
    wait_for(lambda: len(done) >= 2, 30, "a few applies")
    controller_a.popen.kill()
    thread.join(30)
    # B serves one whole version: the config and its history entry agree.
    history = json.loads(mesh_at(cluster, home_b, "config", "history", "-o", "json").stdout)
    shown = json.loads(mesh_at(cluster, home_b, "config", "show", "-o", "json").stdout)
    assert shown["version"] == history["current"] == history["versions"][0]["version"] >= len(done)
    timeout = shown["config"]["route"][0]["timeout"]
    assert timeout == f"{shown['version']}s"  # version N is exactly the N-th file, whole


def _gateway(member: str, path: str, body: dict, token: str | None = None) -> dict:
    headers = {"Authorization": token} if token else {}
    response = requests.post(f"http://{member}{path}", json=body, headers=headers, timeout=5)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def test_etcd_with_a_user_and_password(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """etcd's authentication: the controller logs in with the URL's user and MESH_ETCD_PASSWORD."""
    import base64

    etcd = EtcdCluster.start(tmp_path_factory.mktemp("etcd-auth"), size=1)
    cluster.processes.append(Process("etcd", etcd.members[0].process, etcd.members[0].log_path))  # type: ignore[arg-type]
    member = etcd.members[0].endpoint
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    for name, password in (("root", "root-pw"), ("mesh", "mesh-pw")):
        _gateway(member, "/v3/auth/user/add", {"name": name, "password": password})
        _gateway(member, "/v3/auth/role/add", {"name": name})
        _gateway(member, "/v3/auth/user/grant", {"user": name, "role": name})
    permission = {"permType": "READWRITE", "key": b64("/authtest/"), "range_end": b64("/authtest0")}
    _gateway(member, "/v3/auth/role/grant", {"name": "mesh", "perm": permission})
    _gateway(member, "/v3/auth/enable", {})

    cluster.init_ca()
    store = f"etcd://{member}/authtest?user=mesh"
    argv = [sys.executable, "-m", "mesh", "controller", "--listen", "127.0.0.1:0", "--no-zeroconf", "--store", store]
    refused = subprocess.run(argv, env={**cluster._env, "MESH_ETCD_PASSWORD": "wrong"}, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "etcd refused user 'mesh'" in refused.stderr, refused.stderr
    missing = subprocess.run(argv, env=cluster._env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "MESH_ETCD_PASSWORD" in missing.stderr, missing.stderr
    process = cluster.spawn("controller", argv, env={"MESH_ETCD_PASSWORD": "mesh-pw"})
    process.wait_for("controller listening")
    applied = cluster.mesh("apply", str(write_config(cluster, "3s")), "-o", "json")
    assert applied.returncode == 0, applied.stderr
    proxy = cluster.proxy("web", cluster.app("http", "web"), extra=["--no-zeroconf"])  # a registration: a lease
    wait_for(lambda: admin_config(proxy)["controller"]["config_version"] == json.loads(applied.stdout)["version"], 5, "config")
    # What the controller wrote is under its prefix, readable only with a login.
    token = _gateway(member, "/v3/auth/authenticate", {"name": "root", "password": "root-pw"})["token"]
    assert {"/authtest/config/current", "/authtest/meta/ca", "/authtest/meta/join-token"} <= _names(member, token)
    wait_for(lambda: any(n.startswith("/authtest/registrations/web-") for n in _names(member, token)), 15, "registration")


def _names(member: str, token: str) -> set[str]:
    import base64

    prefix = {"key": base64.b64encode(b"/authtest/").decode(), "range_end": base64.b64encode(b"/authtest0").decode()}
    keys = _gateway(member, "/v3/kv/range", {**prefix, "keys_only": True}, token)
    return {base64.b64decode(kv["key"]).decode() for kv in keys.get("kvs", [])}
