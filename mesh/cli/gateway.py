"""`mesh gateway --listen ADDR --to SERVICE`: an ingress into the mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._state import state


def gateway(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The mesh service that outside traffic goes to.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT that accepts plain HTTP from outside the mesh.")] = "127.0.0.1:9080",
    name: Annotated[Optional[str], typer.Option(help="The gateway's own service name (default: gateway).")] = None,
    admin: Annotated[str, typer.Option(help="Admin server, HOST:PORT.")] = "127.0.0.1:0",
    controller: Annotated[Optional[str], typer.Option(help="Controller HOST:PORT (default: MESH_HOME/controller.json).")] = None,
    token: Annotated[Optional[str], typer.Option(help="Join token for the first certificate.")] = None,
    zeroconf: Annotated[bool, typer.Option("--zeroconf/--no-zeroconf", help="Discover with mDNS.")] = True,
    lan: Annotated[bool, typer.Option("--lan", help="zeroconf on every interface (default: loopback only).")] = False,
    interface: Annotated[
        Optional[list[str]], typer.Option("--interface", help="zeroconf on this interface address (repeatable).")
    ] = None,
    endpoints: Annotated[
        Optional[Path], typer.Option(help="Static endpoints file (docs/discovery.md), re-read when it changes.")
    ] = None,
) -> None:
    """Accept plain HTTP at the edge and send it, over mTLS, to a mesh service: observed like every other hop."""
    import trio

    from mesh._logging import setup_logging
    from mesh.inject._reach import zeroconf_interfaces
    from mesh.proxy._main import ProxyOptions, build_proxy, parse_listen_address, settings_from

    st = state(ctx)
    service = name or "gateway"
    setup_logging(f"gateway {service}", debug=st.debug)
    options = ProxyOptions(
        home=st.home,
        service=service,
        app="127.0.0.1:1",  # replaced below: a gateway has no app
        admin=admin,
        upstreams=[f"{to}=0"],
        controller=controller,
        token=token,
        zeroconf=zeroconf,
        interfaces=zeroconf_interfaces(lan, interface),
        endpoints=endpoints,
    )
    base = settings_from(options)
    from dataclasses import replace

    settings = replace(base, app=None, upstreams={to: parse_listen_address(listen, "--listen", allow_any_port=True)})

    async def main() -> None:
        proxy = await build_proxy(options, settings)  # never advertised: app_ready stays unset
        await proxy.run()

    trio.run(main)


def register(app: typer.Typer) -> None:
    app.command()(gateway)
