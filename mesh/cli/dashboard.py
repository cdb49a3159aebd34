"""`mesh dashboard`: the mesh in a browser (graph, golden metrics, endpoints, routes, tap, check, faults)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mesh.cli._state import state
from mesh.home import MeshHome

if TYPE_CHECKING:
    from mesh.dashboard import ControllerAccess


def dashboard(
    ctx: typer.Context,
    port: Annotated[
        Optional[int],
        typer.Option(
            help="Port on 127.0.0.1 (default 50750, or a free one if taken; 0: any free port).",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL only; do not open a browser.")
    ] = False,
) -> None:
    """Serve a web dashboard on 127.0.0.1 until Ctrl-C; its first line is the URL (with a per-run token).

    It talks to the controller as this host's operator, and only reads: service graph, golden
    metrics per version, endpoints, routes and policies, a live tap, `mesh check`, faults.
    """
    import trio

    from mesh._logging import setup_logging
    from mesh.dashboard import serve_dashboard

    setup_logging("dashboard", debug=state(ctx).debug)
    access = controller_access(state(ctx).home)

    def ready(url: str) -> None:
        # The first line of stdout, whatever happens next: scripts and tests read it.
        sys.stdout.write(f"dashboard: {url}\n")
        sys.stdout.flush()
        sys.stderr.write("the URL holds this run's access token; Ctrl-C stops the dashboard\n")
        if not no_browser and has_display():
            import webbrowser

            webbrowser.open(url)

    try:
        trio.run(serve_dashboard, access, ready, port)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def controller_access(home: MeshHome) -> ControllerAccess:
    """The dashboard's way to the controller: the same operator connection and answers as `mesh status`,
    `mesh stat` and `mesh tap`, and `mesh check --proxy` for its check view."""
    import warnings

    from mesh.cli.tap import tap_stream
    from mesh.dashboard import ControllerAccess
    from mesh.debug.check import build_categories, report_to_json, run_checks
    from mesh.identity import InsecurePermissionsWarning
    from mesh.net import controller_client, raise_for_status

    # The check view reports loose key permissions itself, with the chmod to run (as `mesh check`).
    warnings.simplefilter("ignore", InsecurePermissionsWarning)

    def run_check() -> dict[str, Any]:
        return report_to_json(run_checks(build_categories(home, proxy=True)))

    return ControllerAccess(
        connect=lambda: controller_client(home),
        body_of=raise_for_status,
        open_tap=tap_stream,
        run_check=run_check,
    )


def has_display() -> bool:
    """A browser can be shown: a desktop session (not ssh into a server, not CI). On Linux without
    one, webbrowser would start a text browser in this very terminal."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def register(app: typer.Typer) -> None:
    app.command()(dashboard)
