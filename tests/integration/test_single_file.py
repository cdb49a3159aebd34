"""The single file (`scripts/build`): copied to a host that has Python and nothing else of mesh.

The file is built once per session (``single_file`` in conftest.py) and run from a new HOME with
no venv on PATH and a python3 without site-packages (``bare_host_env``): it can only work with
what it carries. The hosts are network namespaces: no network but the test's bridge.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

from tests.integration import netns
from tests.integration.conftest import APPS, READY, ProxyInfo, bare_host_env, port_of
from tests.integration.test_first_run import demo_serves_its_page
from tests.integration.test_multihost import config, eventually, inject, network, outbound  # noqa: F401

pytestmark = netns.marks(timeout=300)


def test_version_from_a_clean_home(single_file: Path, tmp_path: Path) -> None:
    env = bare_host_env(tmp_path)
    workdir = tmp_path / "work"
    (workdir / "mesh").mkdir(parents=True)  # nothing in the working directory shadows what the file holds
    for _ in range(2):  # the first run unpacks into ~/.shiv, the second reuses it
        result = subprocess.run([str(single_file), "version", "-o", "json"], env=env, cwd=workdir,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["version"]
    assert list((tmp_path / "home" / ".shiv").iterdir())  # unpacked in the new HOME, nowhere else
    # The dashboard's page travels inside the file (package data), with every file it loads.
    static = {p.name for p in (tmp_path / "home" / ".shiv").glob("*/site-packages/mesh/dashboard/static/*")}
    assert {"index.html", "dashboard.js", "dashboard.css", "dom.js", "graph.js", "chart.js", "icon.svg"} <= static, static


def test_a_second_host_joins_with_the_single_file_and_serves(
    single_file: Path, network: netns.Network, tmp_path: Path  # noqa: F811
) -> None:
    """Host A: `mesh up` from the venv. Host B: only the single file and Python; it joins with the
    line A printed, then serves web behind `mesh inject`; a client on A calls web by name, over mTLS,
    across the bridge."""
    a, b = network.add_host("a"), network.add_host("b")
    a.init_ca()
    up = a.mesh("up", "--detach", "--listen", f"{a.address}:0", "-o", "json", timeout=60)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    a.adopt("mesh", info["pid"])

    # B's every command runs the file in B's bare environment (the Cluster's env is what it spawns with).
    b._env = {**bare_host_env(tmp_path / "b-host"), "MESH_HOME": str(b.home), "PYTHONUNBUFFERED": "1"}
    mesh_b = [str(single_file)]
    join = shlex.split(info["join"])
    joined = b.run([*mesh_b, *join[1:], "-o", "json"], timeout=60)
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["trust_domain"] == a.trust_domain
    b.trust_domain = a.trust_domain

    app = f'exec python3 {shlex.quote(str(APPS))} http "$PORT" web'
    web_process = b.spawn("inject-web", [*mesh_b, "inject", "--name", "web", "--health", "/",
                                         "--inbound", f"{b.address}:0", "--", "sh", "-c", app])
    ready = web_process.wait_for(READY, timeout=60)
    web_process.wait_for("app is ready", timeout=30)
    web = ProxyInfo(web_process, port_of(ready["inbound"]), port_of(ready["outbound"]), port_of(ready["admin"]))
    assert config(b, web)["identity"] == a.spiffe("web")  # signed by A's controller

    # The sidecar (the lean re-exec, same PID) runs from the file, not from any installed mesh.
    cmdline = Path(f"/proc/{web_process.popen.pid}/cmdline").read_bytes().split(b"\0")
    assert str(single_file).encode() in cmdline and b"-m" not in cmdline, cmdline

    client = inject(a, "client")
    response = eventually(
        lambda: (r := a.http("http://web/headers", proxy=outbound(client))).status == 200 and r, 20, "A → web on B"
    )
    assert response.json()["mesh-client-id"] == a.spiffe("client")
    peers = b.run(["ss", "-Htn", "state", "established", f"( sport = :{web.inbound} )"]).stdout
    assert f"{a.address}:" in peers, peers


def test_demo_from_the_single_file(single_file: Path, network: netns.Network, tmp_path: Path) -> None:  # noqa: F811
    """`mesh up --demo` from the file: every service it starts runs the same file."""
    host = network.add_host("a")
    host._env = {**bare_host_env(tmp_path / "bare"), "MESH_HOME": str(host.home), "PYTHONUNBUFFERED": "1"}
    workdir = tmp_path / "with-a-mesh-folder"
    (workdir / "mesh").mkdir(parents=True)
    started = time.monotonic()
    demo_serves_its_page(host, [str(single_file)], workdir)
    assert time.monotonic() - started < 180


def test_units_written_by_the_single_file_verify(single_file: Path, tmp_path: Path) -> None:
    """`mesh install-service` from the file: ExecStart runs python3 on the file itself."""
    from tests.integration.test_install_service import verify

    env = {**bare_host_env(tmp_path), "MESH_HOME": str(tmp_path / "mesh-home")}
    root = tmp_path / "root"
    result = subprocess.run([str(single_file), "install-service", "--root", str(root), "inject", "web", "--",
                             "python3", "-m", "http.server"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    unit = root / "etc/systemd/system/mesh-web.service"
    assert f" {single_file} inject --name web -- python3 -m http.server" in unit.read_text()
    verify([unit])
