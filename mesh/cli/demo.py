"""`mesh demo SERVICE`: one app of the bundled bookinfo demo, or its traffic generator.

A plain `mesh demo …` never reaches typer (``mesh.cli._run`` hands it to the demo's own
argparse parser, which has the options and the help); this command is what `mesh --help`
lists and what runs after root options (`mesh --debug demo …`).
"""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Run one demo app (productpage, details, reviews, ratings) on $PORT, or `traffic`; `mesh demo -h`."""
    from mesh.demo.__main__ import main

    raise typer.Exit(main(list(ctx.args), prog="mesh demo"))


def register(app: typer.Typer) -> None:
    settings = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
    app.command(context_settings=settings, add_help_option=False)(demo)
