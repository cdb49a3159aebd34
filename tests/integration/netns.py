"""Hosts for multi-host tests: network namespaces joined by a bridge (root only).

A `Network` is a bridge in a namespace of its own plus one namespace per host,
each joined to the bridge by a veth pair (`eth0` inside the host) with an
address from a private /24, `10.77.X.N/24`. Nothing is created in the root
namespace: not the bridge, not the veth ends, not a route. So the machine's
real interfaces never see a packet (zeroconf included), and two test runs at
once cannot disturb each other even if they picked the same /24.

A `Host` is a `Cluster` (see conftest.py) whose commands run inside its
namespace (`ip netns exec NS …`), with its own `MESH_HOME` and its own host
name (a UTS namespace per command, `unshare --uts`). Every process it
starts has a process group of its own and is killed by group at teardown;
then whatever is still inside one of our namespaces (a detached daemon, an
app in its own group) is killed by pid, and every namespace is deleted.
Namespace names carry the test process's pid and X (`meshtest-PID-X-RANDOM-HOST`):
a new network avoids the X of live ones, and deletes the names of a test
process that died before its teardown (SIGKILL) once they are an hour old.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mesh.controller._daemon import alive
from tests.integration.conftest import Cluster, Process

NS_PREFIX = "meshtest"
NETWORK = "10.77.{x}.0/24"
HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # `v-NAME` must fit IFNAMSIZ (15)
STALE_AFTER = 3600.0  # a namespace of a dead test process older than this is a leftover


def ip(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    return not_root() or broken()


def not_root() -> str | None:
    """The one reason these tests skip: creating namespaces takes root (CI runs as root)."""
    if os.geteuid() != 0:
        return "multi-host tests need root to create network namespaces (CI runs as root)"
    return None


def broken() -> str | None:
    """As root, what keeps namespaces from working: a missing part, which fails the tests."""
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed: apt-get install iproute2 (.ci/run does)"
    probe = f"{NS_PREFIX}-{os.getpid()}-0-probe{secrets.token_hex(2)}"
    added = ip("netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` does not work here: {added.stderr.strip()}"
    ip("netns", "delete", probe, check=False)
    return None


def marks(timeout: float) -> list[pytest.MarkDecorator]:
    """A namespace test module's marks: skipped when not root, failed (at each test's setup,
    naming the missing part) when root cannot make namespaces, and a timeout."""
    why_not_root = not_root()
    return [
        pytest.mark.skipif(why_not_root is not None, reason=why_not_root or ""),
        pytest.mark.usefixtures("_namespaces_work"),
        pytest.mark.timeout(timeout),
    ]


def _our_namespaces() -> list[str]:
    listing = ip("-json", "netns", "list", check=False)
    if listing.returncode != 0 or not listing.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(listing.stdout) if entry["name"].startswith(NS_PREFIX + "-")]


def _remove_stale_namespaces() -> None:
    """Names left by a test process that was killed before its teardown (old, owner gone)."""
    for name in _our_namespaces():
        parts = name.split("-")
        if len(parts) < 3 or not parts[1].isdigit() or alive(int(parts[1])):
            continue
        try:
            age = time.time() - (Path("/run/netns") / name).stat().st_mtime
        except OSError:
            continue
        if age > STALE_AFTER:
            ip("netns", "delete", name, check=False)


def _pick_subnet() -> tuple[int, ipaddress.IPv4Network]:
    """A 10.77.X.0/24 that no route or address of the root namespace touches, and that
    no other live network of these tests uses (X is part of every namespace name)."""
    taken: set[int] = set()
    for name in _our_namespaces():
        parts = name.split("-")
        if len(parts) >= 3 and parts[2].isdigit():
            taken.add(int(parts[2]))
    used: list[ipaddress.IPv4Network] = []
    for line in ip("-4", "-o", "addr", "show", check=False).stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            used.append(ipaddress.ip_interface(match.group(1)).network)
    for line in ip("-4", "route", "show", "table", "all", check=False).stdout.splitlines():
        head = line.split()[0] if line.split() else ""
        if head in ("local", "broadcast", "unreachable", "blackhole", "prohibit") and len(line.split()) > 1:
            head = line.split()[1]
        try:
            if head != "default":
                used.append(ipaddress.ip_network(head, strict=False))
        except ValueError:
            continue
    free = [
        x
        for x in range(1, 255)
        if x not in taken and not any(ipaddress.ip_network(NETWORK.format(x=x)).overlaps(net) for net in used)
    ]
    if not free:
        raise RuntimeError("no free 10.77.X.0/24 for a test network")
    x = random.choice(free)
    return x, ipaddress.ip_network(NETWORK.format(x=x))


@dataclass
class Response:
    """An HTTP response as curl saw it (status 0: curl itself failed, see error)."""

    status: int
    headers: dict[str, str]
    body: str
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


class Host(Cluster):
    """One machine: a namespace with `eth0` on the bridge and a MESH_HOME of its own."""

    def __init__(self, network: Network, name: str, netns: str, address: str, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp)
        self.network = network
        self.name = name
        self.netns = netns
        self.address = address

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.address}, netns {self.netns})"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        # A UTS namespace too, with the host's name as its host name (as each machine has its own):
        # `mesh join` names the host identity after it. Each command execs in place (same pid).
        named = 'echo "$0" > /proc/sys/kernel/hostname && exec "$@"'
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", named, self.name, *argv]

    # Cluster starts everything through these two, so proxies, apps and the CLI all run in here.
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        return super().spawn(name, self.wrap(argv), env)

    def mesh(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "mesh", *args], timeout=timeout)

    def run(
        self, argv: Sequence[str], timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A short command inside the namespace; its output."""
        return super().run(self.wrap(argv), timeout, env)

    def adopt(self, name: str, pid: int) -> Process:
        """A daemon that detached itself (`mesh up --detach`, log in run/NAME.log): it leads a
        process group of its own, stopped at teardown like the others."""
        from tests.integration.test_control_plane import _adopt

        process = _adopt(self, name, pid)
        self.processes.append(process)
        return process

    def http(self, url: str, *, proxy: str | None = None, timeout: float = 5.0) -> Response:
        """GET with curl inside the namespace; ``proxy`` is given the way `mesh inject` gives it,
        through HTTP_PROXY/http_proxy (curl reads the lower-case one)."""
        env = {"HTTP_PROXY": proxy, "http_proxy": proxy} if proxy else {}
        try:
            done = subprocess.run(  # bytes: text mode would turn the CRLFs we split on into LFs
                self.wrap(["curl", "-sS", "-i", "--max-time", str(timeout), url]),
                env={**self._env, **env},
                capture_output=True,
                timeout=timeout + 5,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return Response(0, {}, "", "curl did not return")
        if done.returncode != 0:
            return Response(0, {}, "", done.stderr.decode(errors="replace").strip())
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return Response(int(lines[0].split()[1]), headers, body.decode(errors="replace"))


class Network:
    """A bridge (its own namespace) and hosts on it. ``close()`` removes everything."""

    def __init__(self, tmp: Path) -> None:
        _remove_stale_namespaces()
        self.tmp = tmp
        self.x, self.subnet = _pick_subnet()
        # Unique per test: our pid (for leftover clean-up), the /24, and random bits.
        self.prefix = f"{NS_PREFIX}-{os.getpid()}-{self.x}-{secrets.token_hex(3)}"
        self.bridge_ns = f"{self.prefix}-br"
        self.hosts: list[Host] = []
        self.namespaces: list[str] = []
        self._add_namespace(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        if not HOST_NAME.match(name) or any(h.name == name for h in self.hosts):
            raise ValueError(f"host name {name!r}: short, lowercase, unique")
        number = len(self.hosts) + 1
        address = str(self.subnet.network_address + number)
        netns = f"{self.prefix}-{name}"
        self._add_namespace(netns)
        # Both ends are created straight in their namespaces: no name ever appears in the root one.
        ip("-n", self.bridge_ns, "link", "add", f"v-{name}", "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("-n", self.bridge_ns, "link", "set", f"v-{name}", "master", "br0", "up")
        ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(self, name, netns, address, self.tmp / name)
        self.hosts.append(host)
        return host

    def pids(self) -> list[int]:
        """Every process still inside one of our namespaces (ours by construction)."""
        found: list[int] = []
        for name in self.namespaces:
            listed = ip("netns", "pids", name, check=False)
            found += [int(p) for p in listed.stdout.split() if p.isdigit()]
        return found

    def close(self) -> None:
        errors: list[str] = []
        for host in reversed(self.hosts):
            try:
                host.close()  # SIGTERM by process group, SIGKILL after 10 s
            except Exception as exc:  # keep going: the namespaces must go whatever happens
                errors.append(f"{host.name}: {exc!r}")
        leftovers = self.pids()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while leftovers and time.monotonic() < deadline:
            leftovers = [pid for pid in leftovers if _running(pid)]
            time.sleep(0.05)
        for name in reversed(self.namespaces):
            deleted = ip("netns", "delete", name, check=False)
            if deleted.returncode != 0:
                errors.append(f"ip netns delete {name}: {deleted.stderr.strip()}")
        self.namespaces = [n for n in self.namespaces if n in _our_namespaces()]
        if errors or self.namespaces:
            raise RuntimeError(f"network teardown: {errors} left {self.namespaces}")


def _running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap a daemon's child in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
