"""`mesh inject -- CMD ARGS...`: run an app behind its own mTLS sidecar."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from mesh.cli._options import with_sidecar_options
from mesh.cli._state import state


@with_sidecar_options("inject")
def inject(
    ctx: typer.Context,
    command: Annotated[list[str], typer.Argument(metavar="-- CMD [ARGS]...", help="The app to run.")],
    name: Annotated[Optional[str], typer.Option(help="Service name (default: from the command).")] = None,
    port: Annotated[
        Optional[int], typer.Option(help="Port the app listens on (default: a free one, in $PORT).")
    ] = None,
    upstream: Annotated[
        Optional[list[str]],
        typer.Option("--upstream", help="SVC or SVC=LOCALPORT: a local listener to SVC, in $MESH_UPSTREAM_<SVC>_URL."),
    ] = None,
    health: Annotated[
        Optional[str], typer.Option(help="Path that must answer 2xx before the service is advertised.")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds the app has to open its port.")] = 30.0,
    **sidecar: Any,
) -> None:
    """Start a sidecar, then the app with PORT, HTTP_PROXY and MESH_UPSTREAM_*_URL set; exit with the app's status."""
    from mesh.cli._sidecar import hand_over

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
            "health": health,
            "ready_timeout": ready_timeout,
            **sidecar,  # the sidecar's options (mesh.proxy.SIDECAR_OPTIONS), as given
        },
    )
    raise typer.Exit(status or 0)


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})(inject)
