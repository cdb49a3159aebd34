"""`mesh inject`: a sidecar and its app in one supervised unit.

Order matters, and is the point of this module:
1. the sidecar gets its identity and opens its listeners — if that fails the
   app is never started;
2. the app starts with PORT, HTTP_PROXY and MESH_UPSTREAM_* in its environment;
3. only once the app accepts connections (and answers its health path) is the
   service advertised and registered;
4. on SIGINT/SIGTERM the service is withdrawn first, then the signal goes to
   the app; when the app exits the sidecar drains and `mesh inject` exits with
   the app's status.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from mesh import sd_notify
from mesh.errors import ProxyError
from mesh.home import MeshHome
from mesh.inject._env import build_app_env, default_service_name, parse_upstreams
from mesh.inject._process import Child, open_child

log = logging.getLogger("mesh.inject")

READY_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class InjectOptions:
    home: MeshHome
    command: Sequence[str]
    name: str | None = None
    port: int | None = None
    upstreams: Sequence[str] = ()
    labels: Sequence[str] = ()
    health: str | None = None
    ready_timeout: float = 30.0
    proxy_args: dict[str, Any] = field(default_factory=dict)  # extra ProxyOptions fields


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exit_status(returncode: int) -> int:
    """Like a shell: a child killed by signal N exits 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


async def run_injected(options: InjectOptions) -> int:
    from mesh.proxy import ProxyOptions, build_proxy, settings_from

    if not options.command:
        raise ProxyError("no command to run", hint="mesh inject [OPTIONS] -- CMD [ARGS]...")
    if os.sep not in options.command[0] and shutil.which(options.command[0]) is None:
        log.error("command not found: %s", options.command[0])
        return 127  # like a shell, and before any sidecar starts
    name = options.name or default_service_name(options.command)
    port = options.port or free_port()
    upstreams = parse_upstreams(options.upstreams)
    if options.health is not None and not options.health.startswith("/"):
        raise ProxyError(f"--health {options.health!r}: expected a path such as /health")
    proxy_options = ProxyOptions(
        home=options.home,
        service=name,
        app=f"127.0.0.1:{port}",
        upstreams=[f"{svc}={local}" for svc, local in upstreams.items()],
        labels=list(options.labels),
        **options.proxy_args,
    )
    settings = settings_from(proxy_options)
    proxy = await build_proxy(proxy_options, settings)  # identity errors: the app never starts
    proxy.handle_signals = False

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(proxy.run)  # listener errors: the app never starts
        env = build_app_env(
            sd_notify.without_notify(os.environ),
            service=name,
            port=port,
            outbound=bound.outbound,
            upstreams=bound.upstreams,
            labels=settings.labels,
        )
        try:
            process = open_child(options.command, env=env)
        except FileNotFoundError:
            log.error("command not found: %s", options.command[0])
            proxy.stop()
            return 127
        except PermissionError:
            log.error("command not executable: %s", options.command[0])
            proxy.stop()
            return 126
        log.info("started %s (pid %d) on port %d", " ".join(options.command), process.pid, port)
        status = await _supervise(process, proxy, port, options)
        proxy.stop()
    return status


async def _supervise(process: Child, proxy: Any, port: int, options: InjectOptions) -> int:
    timed_out = False
    async with trio.open_nursery() as nursery:

        async def readiness() -> None:
            if await _wait_ready(process, port, options.health, options.ready_timeout):
                proxy.app_ready.set()
                log.info("app is ready on 127.0.0.1:%d; service advertised", port)
                sd_notify.ready(f"serving: app on 127.0.0.1:{port}, service advertised")
                return
            if process.returncode is None:
                what = f"answer {options.health} on" if options.health else "open"
                log.error("the app did not %s port %d within %gs; stopping it", what, port, options.ready_timeout)
                await _withdraw(proxy)
                _signal(process, signal.SIGTERM)
                with trio.move_on_after(5):
                    await process.wait()
                _signal(process, signal.SIGKILL)
                nonlocal timed_out
                timed_out = True

        async def forward_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s: withdrawing, then passing it to the app", signal.Signals(signum).name)
                    sd_notify.stopping("withdrawn; the app drains, then the sidecar")
                    await _withdraw(proxy)
                    _signal(process, signum)

        nursery.start_soon(readiness)
        nursery.start_soon(forward_signals)
        returncode = await process.wait()
        nursery.cancel_scope.cancel()
    await _withdraw(proxy)
    status = 1 if timed_out else exit_status(returncode)
    log.info("app exited with status %d; draining the sidecar", status)
    return status


async def _withdraw(proxy: Any) -> None:
    hooks, proxy.shutdown_hooks = proxy.shutdown_hooks, []
    with trio.move_on_after(2):
        for hook in hooks:
            await hook()


def _signal(process: Child, signum: int) -> None:
    if process.returncode is None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass


async def _wait_ready(process: Child, port: int, health: str | None, timeout: float) -> bool:
    with trio.move_on_after(timeout):
        while process.returncode is None:
            if await _answers(port, health):
                return True
            await trio.sleep(READY_POLL_SECONDS)
    return False


async def _answers(port: int, health: str | None) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    try:
        if health is None:
            return True
        request = f"GET {health} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        with trio.move_on_after(2):
            await stream.send_all(request.encode())
            head = await stream.receive_some(64)
            parts = head.split(b" ", 2)
            return len(parts) > 1 and parts[1][:1] in (b"2", b"3")
        return False
    except (trio.BrokenResourceError, OSError):
        return False
    finally:
        await stream.aclose()


def run_inject_command(options: InjectOptions) -> int:
    return trio.run(run_injected, options)
