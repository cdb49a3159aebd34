"""`--workers N`: N processes, each a whole proxy, sharing its data-plane listeners.

One proxy process uses one CPU (trio runs one thread). With ``--workers N`` the
command forks N workers before anything else runs (no threads yet, no trio) and
stays as their supervisor:

- Listeners: every worker binds the same inbound, outbound and ``--upstream``
  addresses, and a gateway's edge listeners (``--listen``, ``--http-redirect``),
  with ``SO_REUSEPORT``, so the kernel spreads new connections over
  them. A port 0 is chosen once, here, and held by a bound socket that never
  listens, so every worker gets the same port and no other process can take it.
- Admin: worker 0 serves the ``--admin`` address (and a gateway's admin pages
  over mTLS); the others an ephemeral port each. Metrics are per worker (each logs its admin address in
  its ``ready`` line); a connection, and so every request on it, is one
  worker's.
- Identity and discovery: each worker gets its own certificate (for the same
  service identity) and its own view of endpoints, routes and policies. Only
  worker 0 advertises (zeroconf) and registers with the controller: the
  service has one endpoint, however many processes serve it.
- Signals: the workers run in their own process group; SIGTERM or SIGINT to
  the supervisor reaches each worker once, and every worker drains. A worker
  that exits on its own (a crash, a port it cannot bind) ends the others too,
  and the supervisor exits with its status, for `mesh up` or systemd to
  restart the whole. A worker dies with its supervisor (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import replace

from mesh.errors import MeshError, ProxyError
from mesh.proxy._server import ProxySettings

log = logging.getLogger("mesh.proxy")


def reserve_ports(settings: ProxySettings) -> tuple[ProxySettings, list[socket.socket]]:
    """The settings with every data-plane port 0 replaced by a port held for the workers."""
    held: list[socket.socket] = []

    def hold(address: tuple[str, int], what: str) -> tuple[str, int]:
        host, port = address
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            for other in held:
                other.close()
            raise ProxyError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}",
                hint="choose another port, or stop the process that holds it",
            ) from None
        held.append(sock)
        return host, sock.getsockname()[1]

    inbound = hold(settings.inbound, "inbound") if settings.app is not None else settings.inbound
    outbound = hold(settings.outbound, "outbound") if settings.app is not None else settings.outbound
    upstreams = {svc: hold(address, f"upstream {svc}") for svc, address in settings.upstreams.items()}
    gateway = settings.gateway
    if gateway is not None:  # a gateway's edge listeners (TLS or not): shared the same way
        redirect = gateway.http_redirect
        gateway = replace(
            gateway,
            listen=hold(gateway.listen, "the gateway"),
            http_redirect=hold(redirect, "the gateway's redirect") if redirect is not None else None,
        )
    shared = replace(
        settings, inbound=inbound, outbound=outbound, upstreams=upstreams, gateway=gateway, reuse_port=True
    )
    return shared, held


def worker_settings(shared: ProxySettings, index: int) -> ProxySettings:
    """Worker 0 serves the admin addresses; the others an ephemeral port each (their own pages)."""
    if index == 0:
        return shared
    own = replace(shared, admin=(shared.admin[0], 0), worker=index)
    if shared.app is None:  # a gateway's inbound address is its admin pages over mTLS, worker 0's
        own = replace(own, inbound=(shared.inbound[0], 0))
    return own


def run_workers(count: int, settings: ProxySettings, run_one: Callable[[ProxySettings, int], None]) -> int:
    """Fork ``count`` workers running ``run_one(settings, index)``; supervise them; their exit status."""
    shared, held = reserve_ports(settings)
    pids: dict[int, int] = {}  # pid -> worker index
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                _worker_setup()
                for sock in held:
                    sock.close()
                run_one(worker_settings(shared, index), index)
                status = 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except MeshError as exc:  # what the user can fix: one line, as the command would say it
                log.error("worker %d: %s%s", index, exc.message, f" ({exc.hint})" if exc.hint else "")
            except BaseException:  # noqa: BLE001 - reported, then the worker's status says it
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(status)
        pids[pid] = index
    log.info("started %d workers (pids %s) sharing %s", count, ", ".join(map(str, pids)), _listeners(shared))
    return _supervise(pids, held)


def _worker_setup() -> None:
    os.setpgid(0, 0)  # a Ctrl-C reaches the supervisor, which passes it on once
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)


def _supervise(pids: dict[int, int], held: list[socket.socket]) -> int:
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, len(pids))
        stopping = True
        _signal_all(pids, signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while pids:
            try:
                pid, raw = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(raw)
            code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says
            if not stopping:
                log.error("worker %d (pid %d) exited with status %d; stopping the others", index, pid, code)
                stopping = True
                status = code or 1
                _signal_all(pids, signal.SIGTERM)
            elif code and not status:
                status = code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for sock in held:
            sock.close()
    return status


def _signal_all(pids: dict[int, int], signum: int) -> None:
    for pid in list(pids):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _listeners(settings: ProxySettings) -> str:
    named = [] if settings.app is None else [("inbound", settings.inbound), ("outbound", settings.outbound)]
    named += [(f"upstream {svc}", address) for svc, address in settings.upstreams.items()]
    if settings.gateway is not None:
        named.append(("gateway", settings.gateway.listen))
        if settings.gateway.http_redirect is not None:
            named.append(("redirect", settings.gateway.http_redirect))
    return ", ".join(f"{name} {host}:{port}" for name, (host, port) in named)
