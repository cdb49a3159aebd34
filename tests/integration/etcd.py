"""A real etcd cluster for tests: members on loopback ports, data under tmp_path, all killed at teardown.

Debian's ``etcd-server`` provides the binary (.ci/run installs it).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def etcd_binary() -> str:
    binary = shutil.which("etcd") or "/usr/bin/etcd"
    assert Path(binary).exists(), "etcd is not installed (.ci/run installs it: apt-get install etcd-server)"
    return binary


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    root: Path
    members: list[Member] = field(default_factory=list)
    fsync: bool = False

    @classmethod
    def start(cls, root: Path, size: int = 3, fsync: bool = False) -> EtcdCluster:
        """``fsync=False`` (tests): etcd skips its fsyncs, as a benchmark must not."""
        cluster = cls(root, fsync=fsync)
        root.mkdir(parents=True, exist_ok=True)
        for index in range(size):
            name = f"m{index}"
            cluster.members.append(
                Member(name, _free_port(), _free_port(), root / f"{name}.data", root / f"{name}.log")
            )
        for member in cluster.members:
            cluster._spawn(member, new=True)
        cluster.wait_healthy()
        return cluster

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def _spawn(self, member: Member, new: bool) -> None:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        argv = [
            etcd_binary(),
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", f"http://127.0.0.1:{member.client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{member.client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"t-{self.root.name}",
            # Tests: short elections (the default is 1 s).
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-level", "warn",
        ]  # fmt: skip
        if not self.fsync:
            argv.append("--unsafe-no-fsync")
        log = open(member.log_path, "ab")
        member.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def status(self, member: Member, timeout: float = 1.0) -> dict | None:
        request = urllib.request.Request(
            f"http://{member.endpoint}/v3/maintenance/status", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [self.status(m) for m in self.members if m.alive]
            if statuses and all(s and s.get("leader", "0") != "0" for s in statuses):
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {m.name}\n{m.log_path.read_text(errors='replace')[-2000:]}" for m in self.members)
        raise AssertionError(f"etcd did not become healthy in {timeout}s:\n{logs}")

    def kill(self, member: Member) -> None:
        if member.alive:
            assert member.process is not None
            member.process.send_signal(signal.SIGKILL)
            member.process.wait(10)

    def restart(self, member: Member) -> None:
        assert not member.alive
        self._spawn(member, new=False)

    def close(self) -> None:
        for member in self.members:
            if member.alive:
                assert member.process is not None
                member.process.kill()
                member.process.wait(10)
