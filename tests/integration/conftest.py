"""Fixtures that start real processes (mesh, apps) on 127.0.0.1 and always clean them up."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.otlp import OtlpReceiver

APPS = Path(__file__).with_name("apps.py")
READY = re.compile(
    r"ready: inbound (?P<inbound>\S+), outbound (?P<outbound>[^,\s]+), admin (?P<admin>[^,\s]+)(?P<rest>.*)$"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                match = regex.search(line)
                if match:
                    return match
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no line matching {regex.pattern!r} in {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 15.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class ProxyInfo:
    process: Process
    inbound: int
    outbound: int
    admin: int
    upstreams: dict[str, int] = field(default_factory=dict)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.outbound}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


class Cluster:
    """Processes of one test. Everything started here is stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        # A trust domain per test: zeroconf on loopback is shared by every test
        # (and every developer) on this machine; records of other trust domains are ignored.
        self.trust_domain = f"t{uuid.uuid4().hex[:12]}.test"
        self.processes: list[Process] = []
        self._env = dict(os.environ, MESH_HOME=str(self.home), PYTHONUNBUFFERED="1")
        for proxy_var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            self._env.pop(proxy_var, None)

    def mesh(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", *args], env=self._env, capture_output=True, text=True, timeout=timeout
        )

    def run(
        self, argv: list[str], timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A short command; its output."""
        return subprocess.run(
            argv,
            env={**self._env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def init_ca(self) -> None:
        result = self.mesh("ca", "init", "--trust-domain", self.trust_domain)
        assert result.returncode == 0, result.stderr

    def spiffe(self, service: str) -> str:
        return f"spiffe://{self.trust_domain}/svc/{service}"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log_path = self.tmp / f"{name}.log"
        log_file = open(log_path, "wb")
        popen = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**self._env, **(env or {})},
            start_new_session=True,
        )
        log_file.close()
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def app(self, kind: str = "http", name: str = "app", env: dict[str, str] | None = None) -> int:
        process = self.spawn(f"app-{name}", [sys.executable, str(APPS), kind, "0", name], env=env)
        return int(process.wait_for(r"listening \S+:(\d+)").group(1))

    def proxy(
        self,
        service: str,
        app_port: int,
        endpoints: Path | None = None,
        extra: list[str] | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ProxyInfo:
        argv = [sys.executable, "-m", "mesh", "proxy", "--service", service, "--app", f"127.0.0.1:{app_port}"]
        if endpoints is not None:
            argv += ["--endpoints", str(endpoints)]
        argv += extra or []
        process = self.spawn(name or f"proxy-{service}", argv, env=env)
        match = process.wait_for(READY)
        upstreams = {
            m.group(1): port_of(m.group(2)) for m in re.finditer(r"upstream (\S+) (\S+?)(?:,|$)", match.group("rest"))
        }
        return ProxyInfo(
            process,
            port_of(match.group("inbound")),
            port_of(match.group("outbound")),
            port_of(match.group("admin")),
            upstreams,
        )

    def nginx(self, name: str, server: str) -> int:
        """An nginx (one worker) serving ``server`` (a server block body, ``{port}`` filled in); its port."""
        binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None)
        assert binary, "nginx is not installed (.ci/run installs it: apt-get install nginx)"
        prefix = self.tmp / name
        prefix.mkdir()
        port = free_port()
        temps = "".join(f"  {d}_temp_path {prefix}/tmp-{d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (prefix / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log stderr warn;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n  access_log off;\n{temps}  server {{\n{server.replace('{port}', str(port))}\n  }}\n}}\n"
        )
        process = self.spawn(name, [binary, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", "stderr"])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                if process.popen.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx {name} did not start:\n{process.log()}") from None
                time.sleep(0.05)

    def write_endpoints(self, entries: list[tuple[str, int]], name: str = "endpoints.toml") -> Path:
        path = self.tmp / name
        text = "".join(f'[[endpoint]]\nservice = "{svc}"\naddress = "127.0.0.1:{port}"\n\n' for svc, port in entries)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.popen.poll() is None:
                try:
                    os.killpg(process.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for process in self.processes:
            try:
                process.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.popen.wait(5)


@pytest.fixture(scope="session")
def _namespaces_work() -> None:
    """For the network-namespace modules (netns.marks): as root, a machine that cannot make
    namespaces is missing a part (.ci/run installs iproute2), which fails the tests."""
    from tests.integration import netns

    problem = netns.broken()
    if problem is not None:
        pytest.fail(f"these tests run hosts in network namespaces: {problem}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def collector() -> Iterator[OtlpReceiver]:
    """A test OTLP/HTTP collector on 127.0.0.1 (tests/integration/otlp.py); imported here only
    when a test asks for it (opentelemetry-proto is not needed by the other tests)."""
    from tests.integration.otlp import OtlpReceiver

    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()


@dataclass
class Pair:
    """client app → client proxy (outbound) → mTLS → web proxy (inbound) → web app."""

    cluster: Cluster
    web_app: int
    web: ProxyInfo
    client: ProxyInfo
    endpoints: Path


@pytest.fixture
def pair(cluster: Cluster) -> Pair:
    cluster.init_ca()
    web_app = cluster.app("http", "web")
    web = cluster.proxy("web", web_app)
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client_app = cluster.app("http", "client")
    client = cluster.proxy("client", client_app, endpoints=endpoints)
    return Pair(cluster, web_app, web, client, endpoints)


def raw_request(port: int, data: bytes, timeout: float = 10.0, read_all: bool = True) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_all:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`scripts/build`'s zipapp, copied to a fresh directory as one would copy it to a host.
    Built once per session; scripts/build itself skips the build when nothing changed."""
    built = subprocess.run([str(ROOT / "scripts" / "build")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert built.returncode == 0, f"scripts/build failed:\n{built.stderr[-4000:]}"
    copy = tmp_path_factory.mktemp("host") / "bin" / "mesh"
    copy.parent.mkdir()
    shutil.copyfile(built.stdout.strip().splitlines()[-1], copy)
    copy.chmod(0o755)
    return copy


def bare_host_env(tmp: Path) -> dict[str, str]:
    """The environment of a host that has Python and nothing of mesh: a new HOME, a PATH without
    any venv. Its `python3` runs with -S (no site-packages at all), so the single file can only
    work with what it carries."""
    bin_dir = tmp / "python-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(str(python))} -S "$@"\n')
    wrapper.chmod(0o755)
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = {"HOME": str(tmp / "home"), "PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert shutil.which("mesh", path=env["PATH"]) is None, "a mesh on the bare host's PATH"
    return env
