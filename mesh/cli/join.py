"""`mesh join HOST:PORT --token T --ca-fingerprint sha256:…`: prepare this host's MESH_HOME."""

from __future__ import annotations

from typing import Annotated

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def join(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(metavar="HOST:PORT", help="The controller, as `mesh up` printed it.")],
    token: Annotated[str, typer.Option(help="The join token `mesh up` printed.")],
    ca_fingerprint: Annotated[str, typer.Option(help="sha256:… of the trust anchor, as `mesh up` printed it.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Pin the mesh's trust anchor by fingerprint and record the controller, so proxies here can join."""
    import trio

    from mesh.controller import join_mesh

    result = trio.run(join_mesh, state(ctx).home, address, token, ca_fingerprint)
    render(
        output,
        result,
        lambda d: [
            f"joined the mesh of trust domain {d['trust_domain']} at {d['controller']}",
            f"trust anchor {d['ca_fingerprint']} pinned in {d['bundle']}",
            "proxies on this host now get their certificates from the controller",
        ],
    )


def register(app: typer.Typer) -> None:
    app.command()(join)
