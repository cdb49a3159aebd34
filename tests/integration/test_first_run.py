"""The first run has no traps: `mesh up --demo` works from any working directory and says where
its page is and how to stop it.

Each run is in a network namespace of its own (tests/integration/netns.py): its loopback has
the demo's fixed port 9080 free whatever else runs on this machine, and its zeroconf is private.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.integration import netns
from tests.integration.conftest import Process
from tests.integration.test_multihost import eventually, network  # noqa: F401 - the fixture

pytestmark = netns.marks(timeout=180)

PAGE = "http://127.0.0.1:9080/productpage"
# What `mesh install.sh` links into ~/.local/bin: the venv's console script.
INSTALLED_MESH = str(Path(sys.executable).parent / "mesh")


def demo_serves_its_page(host: netns.Host, mesh: list[str], cwd: Path, env: dict[str, str] | None = None) -> Process:
    """`mesh up --demo` in the foreground, started in ``cwd``: the page through the gateway, the lines
    that say where it is and how to stop it, then Ctrl-C stops everything."""
    up = host.spawn("up-demo", ["env", "-C", str(cwd), *mesh, "up", "--demo", "--no-traffic"], env=env)
    page = eventually(
        lambda: (r := host.http(PAGE, timeout=5)).status == 200 and r, 120, f"the demo page from {cwd}", interval=0.5
    )
    assert "BookInfo" in page.body and "Book Details" in page.body, page.body[:500]
    printed = up.log()
    assert f"demo: open {PAGE}" in printed, printed
    assert "Ctrl-C stops the mesh" in printed, printed
    assert "cannot import name" not in printed
    logs = "".join(p.read_text(errors="replace") for p in (host.home / "run").glob("*.log"))
    assert "cannot import name" not in logs and "No module named" not in logs, logs[-3000:]
    up.popen.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert up.popen.wait(60) == 0, up.log()
    return up


def test_demo_from_a_directory_holding_a_mesh_folder(network: netns.Network, tmp_path: Path) -> None:
    """The parent of a clone holds `mesh/`: the services `mesh up` starts must not import it."""
    workdir = tmp_path / "projects"
    (workdir / "mesh" / "mesh").mkdir(parents=True)  # a clone, as `git clone … mesh` leaves it
    (workdir / "mesh" / "README.md").write_text("a clone\n")
    demo_serves_its_page(network.add_host("a"), [INSTALLED_MESH], workdir)


def test_demo_from_the_root_directory(network: netns.Network) -> None:
    demo_serves_its_page(network.add_host("a"), [INSTALLED_MESH], Path("/"))
