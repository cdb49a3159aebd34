"""`mesh inject` and `mesh gateway` run their sidecar without typer.

typer (and pydantic, which it validates options with) costs a long-running
sidecar ~7-11 MB of its ~60 MB budget (docs/performance.md). These commands
have options that a hand-written parser would have to mirror (``-- CMD``,
``--port`` as an int, ``--ready-timeout`` as a float...), so typer still parses
and validates their command line, errors and help included; then the command
calls ``hand_over``, which re-execs the same interpreter in place:

    <this mesh> <the same arguments>     with _MESH_SIDECAR={resolved settings}

(``mesh.self_command.mesh_command()``: ``python -P -m mesh``, or the single file).

Same PID, same stdin/stdout/stderr, same signal dispositions, so the user (or
`mesh up`) sees one process exiting with the app's status. ``main()`` calls
``take_over`` first: when the variable is there it pops it (the app must not
inherit it) and runs the very body the typer command would have run
(``start_inject``/``start_gateway``), ending as typer's standalone mode does.

The exec happens only when ``main()`` was started as the process entry (argv None,
``enable``); a command invoked in-process (CliRunner, ``main(argv)``) runs the body in place.

This module must import neither typer nor anything heavy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.home import MeshHome
from mesh.self_command import mesh_command

ENV = "_MESH_SIDECAR"

# The arguments of `mesh ...` when main() started this process (argv=None); else None, and the
# commands run in-process (CliRunner, or main(argv) from a script or test).
_entry_args: list[str] | None = None

# Settings that JSON cannot carry as they are.
_PATHS = ("endpoints",)
_TUPLES = ("interfaces",)


def enable(args: list[str]) -> None:
    """main() owns this process: a sidecar command may replace it with a lean one."""
    global _entry_args
    _entry_args = list(args)


def start_inject(
    home: MeshHome,
    debug: bool,
    *,
    command: list[str],
    name: str | None,
    port: int | None,
    upstream: list[str] | None,
    label: list[str] | None,
    health: str | None,
    ready_timeout: float,
    controller: str | None,
    token: str | None,
    cert_ttl: str | None,
    inbound: str,
    admin: str,
    zeroconf: bool,
    interfaces: tuple[str, ...],
    advertise: str | None,
    protocol: str,
    endpoints: Path | None,
) -> int:
    """The body of `mesh inject`, whichever process runs it: the app's exit status."""
    from mesh._logging import setup_logging
    from mesh.inject import InjectOptions, default_service_name, run_inject_command

    service = name or default_service_name(command)
    setup_logging(f"inject {service}", debug=debug)
    status = run_inject_command(
        InjectOptions(
            home=home,
            command=command,
            name=service,
            port=port,
            upstreams=upstream or [],
            labels=label or [],
            health=health,
            ready_timeout=ready_timeout,
            proxy_args={
                "controller": controller,
                "token": token,
                "cert_ttl": cert_ttl,
                "inbound": inbound,
                "admin": admin,
                "zeroconf": zeroconf,
                "interfaces": interfaces,
                "advertise": advertise,
                "protocol": protocol,
                "endpoints": endpoints,
            },
        )
    )
    sys.stdout.flush()
    return status


def start_gateway(
    home: MeshHome,
    debug: bool,
    *,
    to: str,
    listen: str,
    name: str | None,
    admin: str,
    controller: str | None,
    token: str | None,
    cert_ttl: str | None,
    zeroconf: bool,
    interfaces: tuple[str, ...],
    endpoints: Path | None,
    protocol: str = "http",
    workers: int = 1,
) -> int | None:
    """The body of `mesh gateway`, whichever process runs it."""
    from dataclasses import replace

    import trio

    from mesh._logging import setup_logging
    from mesh.proxy import _main

    service = name or "gateway"
    setup_logging(f"gateway {service}", debug=debug)
    options = _main.ProxyOptions(
        home=home,
        service=service,
        app="127.0.0.1:1",  # replaced below: a gateway has no app
        admin=admin,
        upstreams=[f"{to}=0"],
        controller=controller,
        token=token,
        cert_ttl=cert_ttl,
        zeroconf=zeroconf,
        interfaces=interfaces,
        endpoints=endpoints,
        protocol=protocol,
    )
    base = _main.settings_from(options)
    listener = _main.parse_listen_address(listen, "--listen", allow_any_port=True)
    settings = replace(base, app=None, upstreams={to: listener})

    def run_one(settings: Any, worker: int) -> None:
        async def main() -> None:
            proxy = await _main.build_proxy(options, settings)  # never advertised: app_ready stays unset
            await proxy.run()

        trio.run(main)

    return _main.run_in_workers(workers, settings, run_one)


BODIES: dict[str, Callable[..., int | None]] = {"inject": start_inject, "gateway": start_gateway}


def hand_over(kind: str, home: MeshHome, debug: bool, values: dict[str, Any]) -> int | None:
    """Run the sidecar body: in a re-exec'd lean process if main() owns this one, else here."""
    if _entry_args is not None and sys.executable:
        payload = {
            "kind": kind,
            "argv": _entry_args,
            "home": str(home.root),
            "debug": debug,
            "values": {k: (str(v) if k in _PATHS and v is not None else list(v) if k in _TUPLES else v)
                       for k, v in values.items()},
        }
        os.environ[ENV] = json.dumps(payload)
        # Nothing may be lost or written twice across the exec.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            argv = [*mesh_command(), *_entry_args]
            os.execv(argv[0], argv)
        except OSError:
            os.environ.pop(ENV, None)  # could not exec: run the body here, typer and all
    return BODIES[kind](home, debug, **values)


def take_over(args: list[str]) -> bool:
    """In a re-exec'd process, run the sidecar and exit; False (nothing done) otherwise."""
    raw = os.environ.pop(ENV, None)  # popped first: the app must not inherit it
    if raw is None:
        return False
    payload = json.loads(raw)
    if payload.get("argv") != args:  # not the process that set it: ignore it
        return False
    values = dict(payload["values"])
    for key in _PATHS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    for key in _TUPLES:
        if key in values:
            values[key] = tuple(values[key])
    home = MeshHome.resolve(payload["home"])
    body = BODIES[payload["kind"]]
    from mesh.cli._proxy_fast import run_standalone

    run_standalone(lambda: body(home, bool(payload["debug"]), **values))
    return True  # not reached: run_standalone exits
