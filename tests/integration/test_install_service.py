"""`mesh install-service` / `mesh uninstall-service`: the units it writes pass `systemd-analyze verify`,
and the readiness and stop order they promise hold with real processes.

There is no systemd running as PID 1 here (nor in CI): units are written under ``--root`` (system)
or a temporary XDG_CONFIG_HOME (``--user``), verified by systemd's own parser, and the processes
are run under a stand-in for systemd's notification socket.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.conftest import APPS, Cluster

pytestmark = pytest.mark.timeout(120)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def verify(units: Sequence[Path], user: bool = False, runtime: Path | None = None) -> None:
    """`systemd-analyze verify`: systemd's parser on each unit, the ExecStart= binaries checked."""
    assert SYSTEMD_ANALYZE, "systemd-analyze is not installed (.ci/run installs Debian's systemd)"
    env = dict(os.environ)
    if user:  # a user manager's paths need a runtime directory, even to verify
        assert runtime is not None
        env["XDG_RUNTIME_DIR"] = str(runtime)
    argv = [SYSTEMD_ANALYZE, *(["--user"] if user else []), "verify", *map(str, units)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), (
        f"systemd-analyze verify {units}:\n{result.stdout}{result.stderr}"
    )


class Installer:
    def __init__(self, cluster: Cluster, tmp: Path) -> None:
        self.cluster = cluster
        self.root = tmp / "root"
        self.config_home = tmp / "config"
        self.runtime = tmp / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.workdir = tmp / "srv"
        self.workdir.mkdir()

    def mesh(self, *args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**self.cluster._env, "XDG_CONFIG_HOME": str(self.config_home)}
        where = ["--user"] if user else ["--root", str(self.root)]  # never this machine's /etc
        return subprocess.run([sys.executable, "-m", "mesh", args[0], *where, *args[1:]], env=env,
                              capture_output=True, text=True, timeout=60, cwd=self.workdir)

    def unit(self, name: str, user: bool = False) -> Path:
        if user:
            return self.config_home / "systemd" / "user" / name
        return self.root / "etc" / "systemd" / "system" / name


@pytest.fixture
def installer(cluster: Cluster, tmp_path: Path) -> Iterator[Installer]:
    yield Installer(cluster, tmp_path)


MESH_TOML = """
[mesh]
trust_domain = "units.test"

[[service]]
name = "web"
command = ["python3", "web.py"]
"""


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_every_unit_verifies(installer: Installer, user: bool) -> None:
    (installer.workdir / "mesh.toml").write_text(MESH_TOML)
    commands = [
        ("install-service", "controller", "--listen", "0.0.0.0:4190", "--advertise", "10.1.2.3", "--lan"),
        ("install-service", "up", "mesh.toml", "--lan"),
        ("install-service", "inject", "web", "--upstream", "db", "--health", "/health", "--", "python3", "web.py",
         "--greeting", "hello world", "--rate", "100%", "--home", "$HOME"),
    ]
    for command in commands:
        result = installer.mesh(*command, user=user)
        assert result.returncode == 0, result.stderr
    units = [installer.unit(f"mesh-{name}.service", user) for name in ("controller", "up", "web")]
    verify(units, user=user, runtime=installer.runtime)
    web = units[2].read_text()
    # The app's arguments survive systemd's quoting: spaces, `%` (specifiers), `$` (variables).
    assert ' -- python3 web.py --greeting "hello world" --rate 100%% --home "$$HOME"' in web
    assert f"WorkingDirectory={installer.workdir}" in web  # relative commands resolve as they did
    up = units[1].read_text()
    assert f" up {installer.workdir / 'mesh.toml'} --lan" in up  # the config, by absolute path
    env_dir = (installer.config_home / "mesh") if user else (installer.root / "etc" / "mesh")
    env_file = env_dir / "mesh-web.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert f'MESH_HOME="{installer.cluster.home}"' in env_file.read_text()


def test_dry_run_prints_what_it_would_write_and_writes_nothing(installer: Installer) -> None:
    result = installer.mesh("install-service", "--dry-run", "inject", "web", "--", "./web")
    assert result.returncode == 0, result.stderr
    assert "# /etc/systemd/system/mesh-web.service" in result.stdout
    assert "Type=notify" in result.stdout and "# /etc/mesh/mesh-web.env" in result.stdout
    assert not installer.root.exists()
    written = installer.mesh("install-service", "inject", "web", "--", "./web")
    assert written.returncode == 0, written.stderr
    unit_text = installer.unit("mesh-web.service").read_text()
    assert unit_text in result.stdout


def test_existing_units_are_kept_unless_forced_and_the_environment_file_always(installer: Installer) -> None:
    assert installer.mesh("install-service", "inject", "web", "--", "./web").returncode == 0
    env_file = installer.root / "etc" / "mesh" / "mesh-web.env"
    env_file.write_text(env_file.read_text() + 'API_KEY="secret"\n')
    again = installer.mesh("install-service", "inject", "web", "--", "./web", "--v2")
    assert again.returncode == 1 and "exists" in again.stderr and "--force" in again.stderr
    forced = installer.mesh("install-service", "inject", "web", "--force", "--", "./web", "--v2")
    assert forced.returncode == 0, forced.stderr
    assert "kept" in forced.stdout
    assert "./web --v2" in installer.unit("mesh-web.service").read_text()
    assert 'API_KEY="secret"' in env_file.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inject", "web", "--bogus", "--", "./web"), "no option '--bogus'"),
        (("inject", "web", "--port", "x", "--", "./web"), "--port"),
        (("inject", "web", "./web"), "no command to run after --"),
        (("inject", "web", "--token", "T", "--", "./web"), "world-readable"),
        (("inject", "controller", "--", "./web"), "cannot name a service unit"),
        (("inject", "Web_1", "--", "./web"), "cannot name a service unit"),
        (("up", "missing.toml"), "missing.toml"),
        (("up", "--detach"), "foreground"),
        (("gateway",), "unknown kind"),
    ],
)
def test_bad_command_lines_write_nothing(installer: Installer, args: tuple[str, ...], message: str) -> None:
    result = installer.mesh("install-service", *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not installer.root.exists()


def test_uninstall_removes_the_unit_and_its_environment_file(installer: Installer) -> None:
    assert installer.mesh("install-service", "controller").returncode == 0
    assert installer.mesh("install-service", "inject", "web", "--", "./web").returncode == 0
    dry = installer.mesh("uninstall-service", "--dry-run", "web")
    assert dry.returncode == 0 and "would remove" in dry.stdout and installer.unit("mesh-web.service").exists()
    gone = installer.mesh("uninstall-service", "web")
    assert gone.returncode == 0, gone.stderr
    assert not installer.unit("mesh-web.service").exists()
    assert not (installer.root / "etc" / "mesh" / "mesh-web.env").exists()
    assert installer.unit("mesh-controller.service").exists()
    missing = installer.mesh("uninstall-service", "web")
    assert missing.returncode == 1 and "installed: mesh-controller.service" in missing.stderr


# -- what the units promise, with real processes ----------------------------------------------


class FakeSystemd:
    """The notification socket systemd gives a Type=notify service (sd_notify(3))."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def wait_for(self, field: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while field not in "\n".join(self.messages).splitlines():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {field} from the service in {timeout}s: {self.messages}"
            self.sock.settimeout(remaining)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path)
    yield fake
    fake.close()


APP = """
import os, signal, sys, time, http.server, threading
out = sys.argv[1]
with open(out, "a") as f:
    f.write("NOTIFY_SOCKET=%s\\n" % os.environ.get("NOTIFY_SOCKET"))
time.sleep(1.0)  # the sidecar must not say ready before the app answers
def drain(signum, frame):
    with open(out, "a") as f:
        f.write("draining\\n")
    time.sleep(1.0)  # in-flight work; the sidecar is still up meanwhile
    with open(out, "a") as f:
        f.write("drained\\n")
    os._exit(0)
signal.signal(signal.SIGTERM, drain)
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler)
with open(out, "a") as f:
    f.write("listening\\n")
server.serve_forever()
"""


def test_inject_says_ready_once_the_app_answers_and_stops_the_app_before_its_sidecar(
    cluster: Cluster, systemd: FakeSystemd, tmp_path: Path
) -> None:
    cluster.init_ca()
    app, out = tmp_path / "app.py", tmp_path / "app.out"
    app.write_text(textwrap.dedent(APP))
    process = cluster.spawn("inject", [sys.executable, "-m", "mesh", "inject", "--name", "web", "--no-zeroconf",
                                       "--", sys.executable, str(app), str(out)], env=systemd.env())
    messages = systemd.wait_for("READY=1", 30)
    assert "listening" in out.read_text()  # READY=1 came after the app answered
    assert "NOTIFY_SOCKET=None" in out.read_text()  # the socket is the unit's main process's, not the app's
    assert any("STATUS=serving" in m for m in messages)
    process.popen.send_signal(signal.SIGTERM)
    systemd.wait_for("STOPPING=1", 10)
    assert process.popen.wait(30) == 0
    log = process.log()
    # The app drained, then the sidecar: systemd's SIGTERM went to `mesh inject` alone (KillMode=mixed).
    assert out.read_text().splitlines()[-2:] == ["draining", "drained"]
    assert log.index("app exited with status 0") < log.index("draining (up to")


def test_controller_says_ready_when_it_accepts_connections(cluster: Cluster, systemd: FakeSystemd) -> None:
    cluster.init_ca()
    process = cluster.spawn("controller", [sys.executable, "-m", "mesh", "controller", "--listen", "127.0.0.1:0",
                                           "--no-zeroconf"], env=systemd.env())
    systemd.wait_for("READY=1", 30)
    assert "controller listening on" in process.log()
    process.popen.send_signal(signal.SIGTERM)
    assert process.popen.wait(20) == 0


def test_mesh_up_under_systemd_logs_its_summary_to_the_journal(
    cluster: Cluster, systemd: FakeSystemd, tmp_path: Path
) -> None:
    """stderr is the journal (JOURNAL_STREAM names it): log lines, the join line among them; no panel."""
    cluster.init_ca()
    config = tmp_path / "mesh.toml"
    config.write_text(
        f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n\n[[service]]\nname = "web"\n'
        f'command = ["{sys.executable}", "{APPS}", "http", "0", "web"]\n'
    )
    log_path = tmp_path / "journal.log"
    with open(log_path, "wb") as journal:
        info = os.fstat(journal.fileno())
        env = {**cluster._env, **systemd.env(), "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        up = subprocess.Popen([sys.executable, "-m", "mesh", "up", "--listen", "127.0.0.1:0", str(config)],
                              stdout=journal, stderr=journal, env=env, start_new_session=True)
    try:
        systemd.wait_for("READY=1", 30)
        deadline = time.monotonic() + 10
        while "mesh join" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log_path.read_text()
        assert "[mesh up] INFO mesh is up: controller at 127.0.0.1:" in text, text
        assert "mesh join 127.0.0.1:" in text
        up.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING=1", 10)
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(5)


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: systemd's parser rejects what it cannot run."""
    unit = tmp_path / "mesh-broken.service"
    unit.write_text("[Service]\nType=notify\nExecStart=/nonexistent/python3 -m mesh controller\n")
    with pytest.raises(AssertionError, match="not executable"):
        verify([unit])
