"""`mesh gateway --listen ADDR --to SERVICE`: an ingress into the mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._options import Interfaces, Lan
from mesh.cli._state import state
from mesh.errors import MeshError

GATEWAY_PROTOCOLS = ("http", "http2", "grpc")


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
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="What outside clients speak: http (HTTP/1.1, or HTTP/2 with prior knowledge), http2 or grpc. "
            "The gateway is HTTP only: never a raw TCP relay.",
        ),
    ] = "http",
    workers: Annotated[
        str, typer.Option(help="Processes sharing the listener (SO_REUSEPORT), one per CPU at most (docs/performance.md).")
    ] = "1",
) -> None:
    """Accept plain HTTP at the edge and send it, over mTLS, to a mesh service: observed like every other hop."""
    from mesh.cli._sidecar import hand_over
    from mesh.inject._reach import zeroconf_interfaces

    st = state(ctx)
    if protocol not in GATEWAY_PROTOCOLS:
        raise MeshError(
            f"--protocol: a gateway speaks HTTP only, not {protocol!r}",
            hint=f"one of {', '.join(GATEWAY_PROTOCOLS)}; to carry raw TCP, use `mesh inject --upstream SVC=PORT`",
        )
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
            "protocol": protocol,
            "workers": workers,
        },
    )


def register(app: typer.Typer) -> None:
    app.command()(gateway)
