"""`mesh join HOST:PORT --token T --ca-fingerprint sha256:…`: make this host part of a mesh."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def join(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(metavar="HOST:PORT", help="The controller, as `mesh up` printed it.")],
    token: Annotated[str, typer.Option(help="The join token `mesh up` printed.")],
    ca_fingerprint: Annotated[str, typer.Option(help="sha256:… of the trust anchor, as `mesh up` printed it.")],
    advertise: Annotated[
        Optional[str],
        typer.Option(
            help="The address other hosts dial for this one (default: the one it reaches the controller from); "
            "its services then bind 0.0.0.0 and advertise it (behind NAT)."
        ),
    ] = None,
    name: Annotated[
        Optional[str], typer.Option(help="This host's name in the mesh (default: from its host name).")
    ] = None,
    operator: Annotated[
        Optional[str],
        typer.Option(
            "--operator",
            metavar="GRANT",
            help="Make this host an operator's: the one-time grant that `mesh operator grant NAME` "
            "printed on an operator's host.",
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Pin the mesh's trust anchor, get this host's identity and record its address: proxies here
    get their certificates from the controller, and listen on this host's address by default."""
    import trio

    from mesh.controller import join_mesh
    from mesh.inject import check_advertise

    if advertise is not None:
        check_advertise(advertise)
    result = trio.run(
        lambda: join_mesh(
            state(ctx).home, address, token, ca_fingerprint, name=name, advertise=advertise, operator_grant=operator
        )
    )
    render(output, result, _join_view)


def _join_view(d: dict) -> list[str]:
    lines = [
        f"joined the mesh of trust domain {d['trust_domain']} at {d['controller']}",
        f"trust anchor {d['ca_fingerprint']} pinned in {d['bundle']}",
        f"this host is {d['identity']}: `mesh status`, `stat`, `top`, `tap` and `check` work here"
        + (f"; as operator {d['operator']}, so do `mesh apply` and `mesh fault`" if d["operator"] else " (read only)"),
    ]
    if d["address"]:
        lines.append(
            f"services started here (`mesh inject`, `mesh proxy`, `mesh gateway`) listen on {d['address']} "
            "and get their certificates from the controller"
        )
    else:
        lines.append("this host reaches the controller over loopback: services started here stay on loopback")
    return lines


def register(app: typer.Typer) -> None:
    app.command()(join)
