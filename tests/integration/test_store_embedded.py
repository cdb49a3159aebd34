"""The embedded store under MESH_HOME/state: restarts keep everything, bad files are refused.

Issue 13's "Done when", single host: apply a route and a deny policy, kill -9 the
controller of `mesh up`, start it again: both still enforced, same version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import Cluster, free_port
from tests.integration.test_control_plane import admin_config, get, up, wait_for

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[mesh]
trust_domain = "{td}"

[[route]]
service = "web"
name = "slow-web"
timeout = "7s"

[[policy]]
service = "web"
deny = ["client"]
"""


def kill_up(cluster: Cluster, pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 10, "the controller to die")


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ", 1)[1][0] == "Z"
    except OSError:
        return True


def test_kill_9_and_restart_keeps_the_config_and_proxies_never_go_back(cluster: Cluster) -> None:
    cluster.init_ca()
    listen = f"127.0.0.1:{free_port()}"  # the same address after each restart: the proxies dial it again
    first = up_again(cluster, listen)
    web = cluster.proxy("web", cluster.app("http", "web"), extra=["--no-zeroconf"])
    client = cluster.proxy("client", cluster.app("http", "client"), extra=["--no-zeroconf"])
    wait_for(lambda: get(client, "http://web/", timeout=2).status_code == 200, 10, "client → web")
    path = cluster.tmp / "mesh.toml"
    path.write_text(CONFIG.format(td=cluster.trust_domain))
    applied = cluster.mesh("apply", str(path), "-o", "json")
    assert applied.returncode == 0, applied.stderr
    version = json.loads(applied.stdout)["version"]
    wait_for(lambda: get(client, "http://web/", timeout=2).status_code == 403, 5, "the deny policy")

    kill_up(cluster, first["pid"])
    second = up_again(cluster, listen)
    assert second["pid"] != first["pid"]
    shown = json.loads(cluster.mesh("config", "show", "-o", "json").stdout)
    assert shown["version"] == version
    assert shown["config"]["policy"] == [{"service": "web", "deny": ["client"]}]
    assert shown["config"]["route"][0]["name"] == "slow-web"
    text = cluster.mesh("config", "show").stdout
    assert "[[policy]]" in text and 'deny = ["client"]' in text and "[[route]]" in text
    # The proxies resync to the same version; a proxy started now gets it from the restarted controller.
    for proxy in (web, client):
        wait_for(lambda proxy=proxy: admin_config(proxy)["controller"]["connected"], 10, "resync")
        assert admin_config(proxy)["controller"]["config_version"] == version
    late = cluster.proxy("late", cluster.app("http", "late"), extra=["--no-zeroconf"])
    issued = json.loads(cluster.mesh("ca", "issued", "-o", "json").stdout)["certificates"]
    assert {cluster.spiffe(s) for s in ("web", "client", "late")} <= {c["identity"] for c in issued}
    only_late = json.loads(cluster.mesh("ca", "issued", "--service", "late", "-o", "json").stdout)["certificates"]
    assert [c["identity"] for c in only_late] == [cluster.spiffe("late")]
    wait_for(lambda: admin_config(late)["controller"]["config_version"] == version, 10, "the late proxy's config")
    assert [r["name"] for r in admin_config(late)["routes"]] == ["slow-web"]
    assert get(client, "http://web/", timeout=2).status_code == 403
    assert get(late, "http://web/", timeout=2).status_code == 200  # only client is denied

    # A controller that lost its store: the proxies keep what they have, and say so.
    kill_up(cluster, second["pid"])
    shutil.move(cluster.home / "state", cluster.tmp / "state-lost")
    up_again(cluster, listen)
    wait_for(lambda: admin_config(client)["controller"]["refused"], 10, "the empty config to be refused")
    refused = admin_config(client)["controller"]["refused"]
    assert refused["config_version"] == 0 and refused["kept_version"] == version
    assert admin_config(client)["controller"]["config_version"] == version
    assert get(client, "http://web/", timeout=2).status_code == 403  # still enforced
    client.process.wait_for(r"offers config version 0, older than version \d+ in force here: kept version")
    check = cluster.mesh("check", "--proxy", "-o", "json", timeout=60)
    lines = [c for cat in json.loads(check.stdout)["categories"] if cat["name"] == "data plane" for c in cat["checks"]]
    assert any(
        c["status"] == "warn" and f"kept config version {version}" in c["message"] and "offers the older version 0" in c["message"]
        for c in lines
    ), lines
    # Applying again after the loss: numbered above what the proxies hold, so every proxy takes it.
    again = cluster.mesh("apply", str(path), "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["version"] == version + 1
    wait_for(lambda: admin_config(client)["controller"]["config_version"] == version + 1, 5, "the new version")
    assert admin_config(client)["controller"]["refused"] is None


def up_again(cluster: Cluster, listen: str) -> dict:
    result = cluster.mesh("up", "--detach", "--listen", listen, "-o", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    from tests.integration.test_control_plane import _adopt

    cluster.processes.append(_adopt(cluster, "mesh", info["pid"]))
    return info


def controller(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    """`mesh controller` that is expected to refuse to start (bounded by a timeout either way)."""
    return cluster.mesh("controller", "--listen", "127.0.0.1:0", "--no-zeroconf", *extra, timeout=20)


def test_a_corrupt_store_is_refused(cluster: Cluster) -> None:
    cluster.init_ca()
    state = cluster.home / "state"
    state.mkdir(mode=0o700)
    (state / "mesh.db").write_bytes(b"this is not a database, it was overwritten by accident\n" * 100)
    result = controller(cluster)
    assert result.returncode == 1
    assert "is corrupt" in result.stderr and "refuses to start rather than serve an empty config" in result.stderr
    assert "restore MESH_HOME/state/mesh.db from a backup" in result.stderr, result.stderr
    assert not (cluster.home / "controller.json").exists()


def test_a_full_disk_is_refused(cluster: Cluster) -> None:
    """The state directory on a tiny tmpfs, filled up, in a mount namespace of its own (CI runs as root)."""
    cluster.init_ca()
    started = cluster.spawn(
        "first", [sys.executable, "-m", "mesh", "controller", "--listen", "127.0.0.1:0", "--no-zeroconf"]
    )
    started.wait_for("controller listening")
    assert started.terminate() == 0
    state = cluster.home / "state"
    saved = cluster.tmp / "saved-state"
    shutil.copytree(state, saved)
    script = (
        f'mount -t tmpfs -o size=512k tmpfs "{state}" && cp -a "{saved}/." "{state}/" && '
        f'(dd if=/dev/zero of="{state}/filler" bs=4k 2>/dev/null; true) && '
        f'exec "{sys.executable}" -m mesh controller --listen 127.0.0.1:0 --no-zeroconf'
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=cluster._env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    assert "cannot be written: the file system is full" in result.stderr, result.stderr
    assert "free space on the file system" in result.stderr


def test_history_and_rollback(cluster: Cluster) -> None:
    up(cluster)
    versions = []
    for timeout in ("2s", "3s", "4s"):
        path = cluster.tmp / f"{timeout}.toml"
        path.write_text(f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n[[route]]\nservice = "web"\ntimeout = "{timeout}"\n')
        result = cluster.mesh("apply", str(path), "-o", "json")
        assert result.returncode == 0, result.stderr
        versions.append(json.loads(result.stdout)["version"])
    history = json.loads(cluster.mesh("config", "history", "-o", "json").stdout)
    assert [v["version"] for v in history["versions"]] == versions[::-1]
    assert history["versions"][0]["current"] and history["versions"][0]["source"].endswith("4s.toml")
    table = cluster.mesh("config", "history")
    assert table.returncode == 0 and "rollback" in table.stdout
    rolled = cluster.mesh("config", "rollback", str(versions[0]), "-o", "json")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["version"] == versions[-1] + 1
    shown = json.loads(cluster.mesh("config", "show", "-o", "json").stdout)
    assert shown["config"]["route"][0]["timeout"] == "2s"
    missing = cluster.mesh("config", "rollback", "999")
    assert missing.returncode == 1 and "999 is not kept" in missing.stderr and "mesh config history" in missing.stderr

    # Backup while it runs; restore only once it is stopped; it serves the restored version.
    backup = cluster.tmp / "backup.db"
    assert cluster.mesh("store", "backup", str(backup)).returncode == 0
    later = cluster.tmp / "later.toml"
    later.write_text(f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\nauthz_default = "deny"\n')
    assert cluster.mesh("apply", str(later)).returncode == 0
    busy = cluster.mesh("store", "restore", str(backup))
    assert busy.returncode == 1 and "already running" in busy.stderr
    assert cluster.mesh("down").returncode == 0
    restored = cluster.mesh("store", "restore", str(backup))
    assert restored.returncode == 0 and "kept as" in restored.stdout, restored.stderr
    up_again(cluster, "127.0.0.1:0")
    shown = json.loads(cluster.mesh("config", "show", "-o", "json").stdout)
    assert shown["version"] == versions[-1] + 1 and shown["config"]["mesh"]["authz_default"] == "allow"
