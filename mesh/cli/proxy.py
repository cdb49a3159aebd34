"""`mesh proxy`: run the sidecar proxy in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._options import Advertise, AppProtocol, Interfaces, Lan
from mesh.cli._state import state


# An option added or changed here goes into mesh.cli._proxy_fast (OPTIONS, DEFAULTS) too:
# `mesh proxy` is parsed there first; tests/unit/cli/test_proxy_fast.py compares the two.
def proxy(
    ctx: typer.Context,
    service: Annotated[str, typer.Option("--service", help="Name of the service this sidecar serves.")],
    app: Annotated[str, typer.Option("--app", help="HOST:PORT where the app listens (inbound traffic goes there).")],
    inbound: Annotated[str, typer.Option(help="Inbound mTLS listener, HOST:PORT (port 0: any).")] = "127.0.0.1:0",
    outbound: Annotated[str, typer.Option(help="Outbound listener for the app, HOST:PORT.")] = "127.0.0.1:0",
    admin: Annotated[str, typer.Option(help="Admin server (/metrics, /ready, /live, /config, /tap), HOST:PORT on loopback.")] = "127.0.0.1:0",
    endpoints: Annotated[
        Optional[Path], typer.Option("--endpoints", help="Static endpoints file (TOML, re-read when it changes).")
    ] = None,
    upstream: Annotated[
        Optional[list[str]], typer.Option("--upstream", help="SVC=PORT: a local listener on PORT that carries any protocol to SVC.")
    ] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", help="k=v label of this instance.")] = None,
    cert: Annotated[Optional[Path], typer.Option(help="Certificate chain (PEM); default: issue from MESH_HOME's CA.")] = None,
    key: Annotated[Optional[Path], typer.Option(help="Private key (PEM) for --cert.")] = None,
    bundle: Annotated[Optional[Path], typer.Option(help="Trust bundle (PEM) for --cert.")] = None,
    request_timeout: Annotated[str, typer.Option(help="Time to wait for a response head (504 after).")] = "10s",
    idle_timeout: Annotated[str, typer.Option(help="Close client connections idle this long.")] = "5m",
    head_timeout: Annotated[str, typer.Option(help="A whole request head must arrive within this (408 after).")] = "10s",
    body_timeout: Annotated[
        str, typer.Option(help="A request body that stalls this long is cut (408, or 504 when the app stops reading).")
    ] = "30s",
    drain_timeout: Annotated[str, typer.Option(help="On SIGTERM, let in-flight requests finish for this long.")] = "10s",
    controller: Annotated[
        Optional[str], typer.Option(help="Controller HOST:PORT (default: from MESH_HOME/controller.json).")
    ] = None,
    token: Annotated[
        Optional[str], typer.Option(help="Join token for the first certificate (default: $MESH_JOIN_TOKEN or MESH_HOME/join-token).")
    ] = None,
    cert_ttl: Annotated[Optional[str], typer.Option(help="Lifetime of the certificates to ask for (default 24h, at least 60s).")] = None,
    zeroconf: Annotated[bool, typer.Option("--zeroconf/--no-zeroconf", help="Advertise and discover with mDNS.")] = True,
    lan: Lan = False,
    interface: Interfaces = None,
    advertise: Advertise = None,
    protocol: AppProtocol = "auto",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    workers: Annotated[
        str, typer.Option(help="Processes sharing the listeners (SO_REUSEPORT), one per CPU at most (docs/performance.md).")
    ] = "1",
) -> None:
    """Run the sidecar proxy: inbound mTLS → app, app → outbound mTLS to peers."""
    from mesh.cli._proxy_fast import start_proxy

    # Most runs do not get here: main() parses a plain `mesh proxy ...` without typer
    # (mesh.cli._proxy_fast); typer runs this for the command lines left to it.
    st = state(ctx)
    start_proxy(
        st.home,
        st.debug,
        service=service,
        app=app,
        inbound=inbound,
        outbound=outbound,
        admin=admin,
        endpoints=endpoints,
        upstream=upstream,
        label=label,
        cert=cert,
        key=key,
        bundle=bundle,
        request_timeout=request_timeout,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        drain_timeout=drain_timeout,
        controller=controller,
        token=token,
        cert_ttl=cert_ttl,
        zeroconf=zeroconf,
        lan=lan,
        interface=interface,
        advertise=advertise,
        protocol=protocol,
        log_level=log_level,
        workers=workers,
    )


def register(app: typer.Typer) -> None:
    app.command()(proxy)
