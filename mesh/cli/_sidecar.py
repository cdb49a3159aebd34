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


def _to_json(value: Any) -> Any:
    """Paths and tuples as JSON carries them (the body turns paths back: mesh.proxy.proxy_fields)."""
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


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
    health: str | None,
    ready_timeout: float,
    **sidecar: Any,
) -> int:
    """The body of `mesh inject`, whichever process runs it: the app's exit status. ``sidecar``:
    the sidecar's options (mesh.proxy.SIDECAR_OPTIONS) as the command took them."""
    from mesh._logging import setup_logging
    from mesh.inject import InjectOptions, default_service_name, run_inject_command
    from mesh.proxy import proxy_fields

    service = name or default_service_name(command)
    setup_logging(f"inject {service}", debug=debug)
    proxy_args = proxy_fields(sidecar)
    status = run_inject_command(
        InjectOptions(
            home=home,
            command=command,
            name=service,
            port=port,
            upstreams=upstream or [],
            labels=proxy_args.pop("labels", []),
            health=health,
            ready_timeout=ready_timeout,
            proxy_args=proxy_args,
        )
    )
    sys.stdout.flush()
    return status


def start_gateway(
    home: MeshHome,
    debug: bool,
    *,
    to: str | None,
    listen: str | None,
    name: str | None,
    protocol: str = "http",
    routes: list[str] | tuple[str, ...] = (),
    tls_cert: list[str] | tuple[str, ...] = (),
    tls_key: list[str] | tuple[str, ...] = (),
    http_redirect: str | None = None,
    trust_forwarded: list[str] | tuple[str, ...] = (),
    client_connections: int = 100,
    client_rps: float = 0.0,
    client_burst: int = 0,
    **sidecar: Any,
) -> int | None:
    """The body of `mesh gateway`, whichever process runs it (``sidecar``: the sidecar's options,
    mesh.proxy.SIDECAR_OPTIONS, as the command took them). Its only listener besides the edge
    (``--listen``) and the loopback admin server serves the admin pages over mTLS, to the
    controller and operators (so that `mesh stat`, `top` and `edges` see the edge of the mesh):
    on the host's address, as a sidecar's inbound listener would be."""
    from dataclasses import replace

    import trio

    from mesh._logging import setup_logging
    from mesh.discovery import format_address
    from mesh.home import read_host_record
    from mesh.proxy import (
        ProxyOptions,
        build_proxy,
        gateway_settings,
        parse_listen_address,
        proxy_fields,
        run_in_workers,
        settings_from,
    )

    service = name or "gateway"
    setup_logging(f"gateway {service}", debug=debug)
    if listen is None:  # on a host that recorded its address, the edge is there (else loopback)
        record = read_host_record(home)
        listen = format_address(record.bind or record.address, 9080) if record and record.address else "127.0.0.1:9080"
    options = ProxyOptions(
        home=home,
        service=service,
        app="127.0.0.1:1",  # replaced below: a gateway has no app
        protocol=protocol,
        **proxy_fields(sidecar),
    )
    base = settings_from(options)
    # Checked (certificates loaded) before anything else: a bad pair is an error at start.
    edge = gateway_settings(
        listen=parse_listen_address(listen, "--listen", allow_any_port=True),
        to=to,
        routes=routes,
        tls_cert=tls_cert,
        tls_key=tls_key,
        http_redirect=parse_listen_address(http_redirect, "--http-redirect") if http_redirect else None,
        trust_forwarded=trust_forwarded,
        client_connections=client_connections,
        client_rps=client_rps,
        client_burst=client_burst,
    )
    settings = replace(base, app=None, gateway=edge)

    def run_one(settings: Any, worker: int) -> None:
        async def main() -> None:
            proxy = await build_proxy(options, settings)  # registered as a gateway (worker 0), never advertised
            await proxy.run()

        trio.run(main)

    return run_in_workers(options.workers, settings, run_one)


BODIES: dict[str, Callable[..., int | None]] = {"inject": start_inject, "gateway": start_gateway}


def hand_over(kind: str, home: MeshHome, debug: bool, values: dict[str, Any]) -> int | None:
    """Run the sidecar body: in a re-exec'd lean process if main() owns this one, else here."""
    if _entry_args is not None and sys.executable:
        payload = {
            "kind": kind,
            "argv": _entry_args,
            "home": str(home.root),
            "debug": debug,
            "values": {k: _to_json(v) for k, v in values.items()},
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
    values = dict(payload["values"])  # paths stay strings: the bodies' proxy_fields turns them back
    home = MeshHome.resolve(payload["home"])
    body = BODIES[payload["kind"]]
    from mesh.cli._proxy_fast import run_standalone

    run_standalone(lambda: body(home, bool(payload["debug"]), **values))
    return True  # not reached: run_standalone exits
