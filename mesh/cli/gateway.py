"""`mesh gateway --listen ADDR --to SERVICE`: an ingress into the mesh (TLS, routes by host and path)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mesh.cli._options import with_sidecar_options
from mesh.cli._state import state
from mesh.errors import MeshError

GATEWAY_PROTOCOLS = ("http", "http2", "grpc")


@with_sidecar_options("gateway")
def gateway(
    ctx: typer.Context,
    to: Annotated[
        Optional[str],
        typer.Option("--to", help="The mesh service that requests no --route takes go to (one route for everything)."),
    ] = None,
    route: Annotated[
        Optional[list[str]],
        typer.Option(
            "--route",
            metavar="HOST[/PREFIX]=SERVICE",
            help="Requests for HOST (*.example.com: names below it; *: any) whose path starts with PREFIX go to SERVICE. "
            "Repeatable; the first that matches wins, then --to. No match: 404 no-route.",
        ),
    ] = None,
    listen: Annotated[
        Optional[str],
        typer.Option(
            help="HOST:PORT that accepts outside clients (HTTPS with --tls-cert, else plain HTTP). Default: port 9080 "
            "on this host's address (recorded by `mesh join`), else on 127.0.0.1.",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--tls-cert", metavar="FILE", help="PEM certificate (chain) for outside clients; repeatable, SNI picks one."
        ),
    ] = None,
    tls_key: Annotated[
        Optional[list[Path]],
        typer.Option("--tls-key", metavar="FILE", help="PEM key of each --tls-cert, in the same order."),
    ] = None,
    http_redirect: Annotated[
        Optional[str],
        typer.Option(help="HOST:PORT of a plain-HTTP listener that answers every request 308 to its https:// address."),
    ] = None,
    trust_forwarded: Annotated[
        Optional[list[str]],
        typer.Option(
            "--trust-forwarded",
            metavar="CIDR",
            help="Peers (a load balancer) whose X-Forwarded-For/-Proto/-Host are kept; from anyone else they are "
            "dropped. Repeatable.",
        ),
    ] = None,
    client_connections: Annotated[
        int, typer.Option(help="Open connections per client address (IPv6: per /64); more are closed. 0: no limit.")
    ] = 100,
    client_rps: Annotated[
        float, typer.Option(help="Requests per second per client address; beyond: 429 with Retry-After. 0: no limit.")
    ] = 0.0,
    client_burst: Annotated[
        int, typer.Option(help="Requests a client may send at once above --client-rps (default: one second's worth).")
    ] = 0,
    name: Annotated[Optional[str], typer.Option(help="The gateway's own service name (default: gateway).")] = None,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="What outside clients speak: http (HTTP/1.1, or HTTP/2 with prior knowledge), http2 or grpc. "
            "The gateway is HTTP only: never a raw TCP relay.",
        ),
    ] = "http",
    **sidecar: Any,
) -> None:
    """Accept outside clients (HTTPS or plain HTTP) and send each request, over mTLS, to the mesh service its
    host and path route to: observed like every other hop."""
    from mesh.cli._sidecar import hand_over

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
            "protocol": protocol,
            "routes": route or [],
            "tls_cert": [str(p) for p in tls_cert or []],
            "tls_key": [str(p) for p in tls_key or []],
            "http_redirect": http_redirect,
            "trust_forwarded": trust_forwarded or [],
            "client_connections": client_connections,
            "client_rps": client_rps,
            "client_burst": client_burst,
            **sidecar,  # the sidecar's options (mesh.proxy.SIDECAR_OPTIONS), as given
        },
    )


def register(app: typer.Typer) -> None:
    app.command()(gateway)
