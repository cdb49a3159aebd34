"""`mesh inject -- CMD ARGS...`: run an app behind its own mTLS sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._options import Advertise, AppProtocol, Interfaces, Lan
from mesh.cli._state import state


def inject(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", help="The app to run.")],
    name: Annotated[Optional[str], typer.Option(help="Service name (default: from the command).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port the app listens on (default: a free one, in $PORT).")] = None,
    upstream: Annotated[
        Optional[list[str]],
        typer.Option("--upstream", help="SVC or SVC=LOCALPORT: a local listener to SVC, in $MESH_UPSTREAM_<SVC>_URL."),
    ] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", help="k=v label of this instance.")] = None,
    health: Annotated[Optional[str], typer.Option(help="Path that must answer 2xx before the service is advertised.")] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds the app has to open its port.")] = 30.0,
    controller: Annotated[Optional[str], typer.Option(help="Controller HOST:PORT (default: MESH_HOME/controller.json).")] = None,
    token: Annotated[Optional[str], typer.Option(help="Join token for the first certificate.")] = None,
    cert_ttl: Annotated[Optional[str], typer.Option(help="Lifetime of the certificates to ask for (default 24h, at least 60s).")] = None,
    inbound: Annotated[
        Optional[str],
        typer.Option(
            help="Inbound mTLS listener of the sidecar, HOST:PORT. Default: port 0 on this host's address "
            "(recorded by `mesh join`), else on 127.0.0.1.",
            show_default=False,
        ),
    ] = None,
    admin: Annotated[str, typer.Option(help="Admin server of the sidecar, HOST:PORT (loopback only).")] = "127.0.0.1:0",
    zeroconf: Annotated[bool, typer.Option("--zeroconf/--no-zeroconf", help="Advertise and discover with mDNS.")] = True,
    lan: Lan = False,
    interface: Interfaces = None,
    advertise: Advertise = None,
    protocol: AppProtocol = "auto",
    endpoints: Annotated[
        Optional[Path], typer.Option(help="Static endpoints file (docs/discovery.md), re-read when it changes.")
    ] = None,
) -> None:
    """Start a sidecar, then the app with PORT, HTTP_PROXY and MESH_UPSTREAM_*_URL set; exit with the app's status."""
    from mesh.cli._sidecar import hand_over
    from mesh.inject import zeroconf_interfaces

    st = state(ctx)
    # Parsed and validated: the sidecar runs in a lean process without typer (mesh/cli/_sidecar.py).
    status = hand_over(
        "inject",
        st.home,
        st.debug,
        {
            "command": command,
            "name": name,
            "port": port,
            "upstream": upstream,
            "label": label,
            "health": health,
            "ready_timeout": ready_timeout,
            "controller": controller,
            "token": token,
            "cert_ttl": cert_ttl,
            "inbound": inbound,
            "admin": admin,
            "zeroconf": zeroconf,
            # As `mesh proxy`: one LAN interface is enough to serve other hosts, without --lan's all.
            # None: the host's interface (host.json), else loopback.
            "interfaces": zeroconf_interfaces(lan, interface, default=None),
            "advertise": advertise,
            "protocol": protocol,
            "endpoints": endpoints,
        },
    )
    raise typer.Exit(status or 0)


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(inject)
