"""`mesh gateway --listen ADDR --to SERVICE`: an ingress into the mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._options import Interfaces, Lan
from mesh.cli._state import state


def gateway(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The mesh service that outside traffic goes to.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT that accepts plain HTTP from outside the mesh.")] = "127.0.0.1:9080",
    name: Annotated[Optional[str], typer.Option(help="The gateway's own service name (default: gateway).")] = None,
    admin: Annotated[str, typer.Option(help="Admin server, HOST:PORT (loopback only).")] = "127.0.0.1:0",
    controller: Annotated[Optional[str], typer.Option(help="Controller HOST:PORT (default: MESH_HOME/controller.json).")] = None,
    token: Annotated[Optional[str], typer.Option(help="Join token for the first certificate.")] = None,
    cert_ttl: Annotated[
        Optional[str], typer.Option(help="Lifetime of the certificates to ask for (default 24h, at least 60s).")
    ] = None,
    zeroconf: Annotated[bool, typer.Option("--zeroconf/--no-zeroconf", help="Discover with mDNS.")] = True,
    lan: Lan = False,
    interface: Interfaces = None,
    endpoints: Annotated[
        Optional[Path], typer.Option(help="Static endpoints file (docs/discovery.md), re-read when it changes.")
    ] = None,
) -> None:
    """Accept plain HTTP at the edge and send it, over mTLS, to a mesh service: observed like every other hop."""
    from mesh.cli._sidecar import hand_over
    from mesh.inject._reach import zeroconf_interfaces

    st = state(ctx)
    # Parsed and validated: the gateway runs in a lean process without typer (mesh/cli/_sidecar.py).
    hand_over(
        "gateway",
        st.home,
        st.debug,
        {
            "to": to,
            "listen": listen,
            "name": name,
            "admin": admin,
            "controller": controller,
            "token": token,
            "cert_ttl": cert_ttl,
            "zeroconf": zeroconf,
            "interfaces": zeroconf_interfaces(lan, interface),
            "endpoints": endpoints,
        },
    )


def register(app: typer.Typer) -> None:
    app.command()(gateway)
