"""`mesh proxy`: run the sidecar proxy in the foreground."""

from __future__ import annotations

from typing import Any

import typer

from mesh.cli._options import with_sidecar_options
from mesh.cli._state import state


# Its options are mesh.proxy.SIDECAR_OPTIONS: the lean parser (mesh.cli._proxy_fast) reads the same table.
@with_sidecar_options("proxy")
def proxy(ctx: typer.Context, **sidecar: Any) -> None:
    """Run the sidecar proxy: inbound mTLS → app, app → outbound mTLS to peers."""
    from mesh.cli._proxy_fast import start_proxy

    # Most runs do not get here: main() parses a plain `mesh proxy ...` without typer
    # (mesh.cli._proxy_fast); typer runs this for the command lines left to it.
    st = state(ctx)
    start_proxy(st.home, st.debug, **sidecar)


def register(app: typer.Typer) -> None:
    app.command()(proxy)
