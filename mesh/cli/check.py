"""`mesh check`: is this host, this CA, this control plane (and its proxies) healthy?"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def check(
    ctx: typer.Context,
    pre: Annotated[
        bool,
        typer.Option("--pre", help="Check this host before `mesh up`: Python, dependencies, MESH_HOME, port, PATH."),
    ] = False,
    proxy: Annotated[
        bool, typer.Option("--proxy", help="Also check every proxy the controller knows (ready, certificate, config).")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Check the mesh: environment, CA, control plane, discovery, policy (and proxies with --proxy).

    Exits 0 when nothing failed (warnings allowed), 1 otherwise.
    """
    import sys
    import warnings

    from mesh.debug.check import (
        build_categories,
        category_lines,
        report_to_json,
        run_checks,
        summary_lines,
        symbols_for,
    )
    from mesh.identity import InsecurePermissionsWarning

    cli = state(ctx)
    symbols = symbols_for(getattr(sys.stdout, "encoding", None))
    printed: list[int] = []

    def show(category: Any) -> None:  # text: each category as soon as it is done
        render(output, category_lines(category, symbols, first=not printed), _view)
        printed.append(1)

    with warnings.catch_warnings():
        # The ca category reports loose key permissions itself, with the chmod to run.
        warnings.simplefilter("ignore", InsecurePermissionsWarning)
        report = run_checks(
            build_categories(cli.home, pre=pre, proxy=proxy),
            on_category=show if output is OutputFormat.table else None,
            raise_errors=cli.debug,
        )
    if output is OutputFormat.json:
        render(output, report_to_json(report))
    else:
        render(output, summary_lines(report, symbols), _view)
    if not report.success:
        raise typer.Exit(1)


def _view(lines: Any) -> list[Any]:
    return [_Line(line) for line in lines]


class _Line:
    """One styled line; when wider than the terminal it wraps under its text, not under its symbol."""

    def __init__(self, segments: Any) -> None:
        self.segments = segments

    def __rich_console__(self, console: Any, options: Any) -> Any:
        import textwrap

        from rich.segment import Segment

        segments = self.segments
        text = "".join(t for t, _ in segments)
        if len(text) <= options.max_width or len(segments) < 2:
            for part, style in segments:
                yield Segment(part, console.get_style(style) if style else None)
            yield Segment.line()
            return
        (prefix, prefix_style), rest = segments[0], segments[1:]
        body = "".join(t for t, _ in rest)
        body_style = next((console.get_style(s) for _, s in rest if s), None)
        width = max(options.max_width - len(prefix), 20)
        for index, chunk in enumerate(textwrap.wrap(body, width, break_on_hyphens=False) or [""]):
            if index == 0:
                yield Segment(prefix, console.get_style(prefix_style) if prefix_style else None)
            else:
                yield Segment(" " * len(prefix))
            yield Segment(chunk, body_style)
            yield Segment.line()


def register(app: typer.Typer) -> None:
    app.command()(check)
