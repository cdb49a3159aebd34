"""The services of a mesh.toml (or the demo), kept running by `mesh up`.

Each unit is one process, usually `mesh inject … -- CMD`. A unit that exits is
restarted with a backoff that grows (1 s, 2 s, 4 s … 30 s) and resets once the
unit has stayed up for a while; the panel and `mesh status` show the restarts,
the last exit code and the last log lines. Stopping sends SIGTERM to every
unit (each withdraws its service, then stops its app) and waits.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mesh.home import MeshHome, open_log
from mesh.inject._process import Child, open_child
from mesh.inject._reach import Reach
from mesh.self_command import child_env, mesh_command

log = logging.getLogger("mesh.up")

BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
STABLE_AFTER = 30.0  # seconds up before the backoff resets
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class UnitSpec:
    name: str  # unique among units: "reviews-v2", "details", "gateway", "traffic"
    argv: tuple[str, ...]
    service: str | None = None  # the mesh service it serves, when it is one
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Unit:
    spec: UnitSpec
    log_path: Path
    state: str = "starting"  # starting | running | backoff | stopped
    pid: int | None = None
    restarts: int = 0
    last_exit: int | None = None
    started_at: float | None = None
    next_start: float | None = None
    process: Child | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "service": self.spec.service,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "uptime_seconds": round(time.time() - self.started_at, 1)
            if self.started_at and self.state == "running"
            else None,
            "log": str(self.log_path),
            "last_lines": app_lines(tail(self.log_path, 30))[-3:] if self.restarts else [],
        }


def tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - 4096, 0))
            return [line.decode(errors="replace") for line in f.read().splitlines()[-lines:]]
    except OSError:
        return []


def app_lines(lines: list[str]) -> list[str]:
    """The app's own lines when there are any: they say why it died; the sidecar's rarely do
    (its log lines, and its access log lines with ``--access-log -``)."""
    from mesh._logging import is_mesh_line

    own = [line for line in lines if not is_mesh_line(line)]
    return own or lines


def mesh_argv(home: MeshHome, *args: str) -> tuple[str, ...]:
    return (*mesh_command(), "--home", str(home.root), *args)


def telemetry_args(telemetry: Any) -> list[str]:
    """Flags of `mesh inject` and `mesh gateway` for a ``TelemetryConfig`` (None: none)."""
    if telemetry is None:
        return []
    args: list[str] = []
    if telemetry.otlp_endpoint is not None:
        args += ["--otlp-endpoint", telemetry.otlp_endpoint, "--trace-sample", repr(float(telemetry.trace_sample))]
    if telemetry.access_log is not None:
        args += ["--access-log", telemetry.access_log]
    return args


def inject_argv(
    home: MeshHome, service: Any, reach: Reach | None, port: bool = True, telemetry: Any = None
) -> tuple[str, ...]:
    """`mesh inject` for one replica of a ServiceConfig; ``reach`` None keeps every default (loopback);
    ``telemetry`` (a TelemetryConfig) says where spans and access logs go."""
    args = ["inject", "--name", service.name]
    for key, value in service.labels.items():
        args += ["--label", f"{key}={value}"]
    for upstream in service.upstreams:
        args += ["--upstream", upstream]
    if service.health:
        args += ["--health", service.health]
    if service.protocol != "auto":
        args += ["--protocol", service.protocol]
    if service.port and port:
        args += ["--port", str(service.port)]
    args += reach.sidecar_args() if reach is not None else []
    args += telemetry_args(telemetry)
    return mesh_argv(home, *args, "--", *service.command)


def gateway_argv(home: MeshHome, gateway: Any, reach: Reach | None, telemetry: Any = None) -> tuple[str, ...]:
    """`mesh gateway` for a GatewayConfig: each of its keys has an option."""
    args = ["gateway", "--listen", gateway.listen]
    if gateway.to:
        args += ["--to", gateway.to]
    for route in gateway.routes:
        args += ["--route", f"{route.host or '*'}{route.path_prefix or ''}={route.to}"]
    for pair in gateway.tls:
        args += ["--tls-cert", pair.cert, "--tls-key", pair.key]
    if gateway.http_redirect:
        args += ["--http-redirect", gateway.http_redirect]
    for network in gateway.trust_forwarded:
        args += ["--trust-forwarded", network]
    limits = gateway.client_limits
    if limits is not None:
        args += ["--client-connections", str(limits.connections), "--client-rps", f"{limits.requests_per_second:g}"]
        args += ["--client-burst", str(limits.burst)]
    args += reach.discovery_args() if reach is not None else []
    return mesh_argv(home, *args, *telemetry_args(telemetry))


def units_from_config(home: MeshHome, config: Any, reach: Reach | None = None, telemetry: Any = None) -> list[UnitSpec]:
    """One unit per service replica and per gateway; ``telemetry`` in place of the config's own."""
    telemetry = telemetry if telemetry is not None else config.telemetry
    specs: list[UnitSpec] = []
    for service in config.services:
        for replica in range(service.replicas):
            name = service.name if service.replicas == 1 else f"{service.name}-{replica + 1}"
            # A fixed port fits one replica only; the others take free ones.
            argv = inject_argv(home, service, reach, port=service.replicas == 1, telemetry=telemetry)
            specs.append(UnitSpec(name, argv, service.name, tuple(service.env.items())))
    for index, gateway in enumerate(config.gateways):
        name = "gateway" if len(config.gateways) == 1 else f"gateway-{index + 1}"
        specs.append(UnitSpec(name, gateway_argv(home, gateway, reach, telemetry), "gateway"))
    return specs


def demo_units(home: MeshHome, traffic: bool, reach: Reach | None = None, telemetry: Any = None) -> list[UnitSpec]:
    from mesh.config import GatewayConfig, ServiceConfig
    from mesh.demo import DEMO_GATEWAY, DEMO_SERVICES, instance_name

    specs = [
        UnitSpec(
            instance_name(entry), inject_argv(home, ServiceConfig(**entry), reach, telemetry=telemetry), entry["name"]
        )
        for entry in DEMO_SERVICES
    ]
    gateway = GatewayConfig(**DEMO_GATEWAY)
    specs.append(UnitSpec("gateway", gateway_argv(home, gateway, reach, telemetry), "gateway"))
    if traffic:
        url = f"http://{gateway.listen}/productpage"
        specs.append(UnitSpec("traffic", (*mesh_command(), "demo", "traffic", "--url", url)))
    return specs


class Fleet:
    def __init__(self, home: MeshHome, specs: Sequence[UnitSpec]) -> None:
        run_dir = home.ensure_dir(home.run_dir)
        self.units = [Unit(spec, run_dir / f"{spec.name}.log") for spec in specs]
        self._stopping = False
        self._changed = trio.Event()

    def view(self) -> list[dict[str, Any]]:
        return [unit.view() for unit in self.units]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for unit in self.units:
                nursery.start_soon(self._keep_running, unit)
            task_status.started()

    async def _keep_running(self, unit: Unit) -> None:
        backoff = BACKOFF_START
        while not self._stopping:
            env = {**child_env(), "PYTHONUNBUFFERED": "1", **dict(unit.spec.env)}
            with open_log(unit.log_path) as log_file:
                try:
                    process = open_child(
                        unit.spec.argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env
                    )
                except OSError as exc:
                    log.error("%s: cannot start: %s", unit.spec.name, exc)
                    unit.state, unit.last_exit = "backoff", 127
                    process = None
            if process is not None:
                unit.process, unit.pid, unit.state = process, process.pid, "running"
                unit.started_at = time.time()
                log.info("%s started (pid %d)", unit.spec.name, process.pid)
                returncode = await process.wait()
                unit.last_exit = returncode if returncode >= 0 else 128 - returncode
                if self._stopping:
                    break
                ran = time.time() - (unit.started_at or time.time())
                if ran > STABLE_AFTER:
                    backoff = BACKOFF_START
            unit.restarts += 1
            unit.state = "backoff"
            unit.next_start = time.time() + backoff
            log.warning("%s exited with %s; restarting in %gs", unit.spec.name, unit.last_exit, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        unit.state = "stopped"

    async def stop(self) -> None:
        """SIGTERM every unit, wait for all (SIGKILL after STOP_TIMEOUT)."""
        self._stopping = True
        running = [u for u in self.units if u.process is not None and u.process.returncode is None]
        for unit in running:
            assert unit.process is not None
            try:
                unit.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        with trio.move_on_after(STOP_TIMEOUT):
            for unit in running:
                assert unit.process is not None
                await unit.process.wait()
        for unit in running:
            assert unit.process is not None
            if unit.process.returncode is None:
                log.warning("%s did not stop in %gs; killing it", unit.spec.name, STOP_TIMEOUT)
                unit.process.kill()
                await unit.process.wait()
            unit.state = "stopped"
