"""`mesh config validate FILE`: check a mesh.toml without applying it."""

from __future__ import annotations

import sys
from typing import Annotated, Any, NoReturn

import typer

from mesh.cli._output import OutputFormat, OutputOption, print_error, print_ok, render

config_app = typer.Typer(
    name="config",
    help="Work with mesh.toml files.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@config_app.command()
def validate(
    file: Annotated[str, typer.Argument(metavar="FILE", help="The mesh.toml to check.", show_default=False)],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Check a mesh.toml without applying it.

    Prints every problem, one line each with its key path, and exits 1 if there is any.
    """
    from mesh.config import ConfigInvalid, load_config
    from mesh.errors import ConfigError

    try:
        config = load_config(file)
    except ConfigInvalid as exc:
        _report_invalid(output, file, [str(issue) for issue in exc.issues], hint=None)
    except ConfigError as exc:
        _report_invalid(output, file, [exc.message], hint=exc.hint)
    summary = config.summary()
    if output is OutputFormat.json:
        render(output, {"file": file, "valid": True, "errors": [], "summary": summary})
    else:
        # Plain line, not rich: a file name like "a[1].toml" must not be read as markup.
        print_ok(f"{file}: OK ({_describe(summary)})")


def _report_invalid(output: OutputFormat, file: str, lines: list[str], hint: str | None) -> NoReturn:
    if output is OutputFormat.json:
        render(output, {"file": file, "valid": False, "errors": lines, "summary": None})
    elif len(lines) == 1 and hint:
        print_error(lines[0], hint)
    else:
        # One problem per line, compiler style: `FILE: key.path: expected …, found …`.
        for line in lines:
            sys.stderr.write(line + "\n")
    raise typer.Exit(code=1)


def _describe(summary: dict[str, int]) -> str:
    nouns = (
        ("services", "service"),
        ("gateways", "gateway"),
        ("routes", "route"),
        ("policies", "policy"),
    )
    return ", ".join(f"{summary[key]} {key if summary[key] != 1 else one}" for key, one in nouns)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command()
def show(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Show the config in force at the controller, with its version."""
    from mesh.cli._state import state
    from mesh.net import controller_request, raise_for_status

    data = raise_for_status(controller_request(state(ctx).home, "GET", "/v1/config"), "mesh config show")

    def view(d: dict) -> list[Any]:
        from rich.text import Text

        # Text, not markup: "[mesh]" and "[[route]]" are TOML here, not rich styles.
        return [Text(f"# config version {d['version']}"), Text(_toml(d["config"]))]

    render(output, data, view)


def _toml(data: dict) -> str:
    """A readable TOML rendering of a config dict (tables and arrays of tables)."""
    import json

    def value(v: object) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)

    out: list[str] = []
    for key, section in data.items():
        if isinstance(section, dict):
            out.append(f"[{key}]")
            out += [f"{k} = {value(v)}" for k, v in section.items()]
            out.append("")
        elif isinstance(section, list):
            for item in section:
                out.append(f"[[{key}]]")
                out += [f"{k} = {value(v)}" for k, v in item.items()]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


@config_app.command()
def history(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """The last versions of the config (the store keeps 20), newest first."""
    from mesh.cli._state import state
    from mesh.net import controller_request, raise_for_status

    data = raise_for_status(controller_request(state(ctx).home, "GET", "/v1/config/history"), "mesh config history")

    def view(d: dict) -> list[Any]:
        from datetime import UTC, datetime

        from mesh.cli._output import rows_table

        if not d["versions"]:
            return ["no config has been applied yet (version 0: no routes, no policies)"]
        rows = [
            [
                f"{v['version']}{' *' if v['current'] else ''}",
                datetime.fromtimestamp(v["applied_at"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
                v["applied_by"],
                v["source"],
                str(v["routes"]),
                str(v["policies"]),
                v["authz_default"],
            ]
            for v in d["versions"]
        ]
        headers = ["version", "applied (UTC)", "by", "source", "routes", "policies", "authz"]
        return [
            rows_table(headers, rows, title=f"config versions (* in force: {d['current']}); `mesh config rollback N`")
        ]

    render(output, data, view)


@config_app.command()
def rollback(
    ctx: typer.Context,
    version: Annotated[
        int, typer.Argument(metavar="N", help="The version to put in force again (see `mesh config history`).")
    ],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Put config version N in force again, as a new version (history is never rewritten)."""
    from mesh.cli._state import state
    from mesh.net import controller_request, raise_for_status

    response = controller_request(state(ctx).home, "POST", "/v1/config/rollback", {"version": version})
    data = raise_for_status(response, f"mesh config rollback {version}")
    render(
        output,
        data,
        lambda d: [
            f"config version {d['rolled_back_to']} is in force again as version {d['version']}"
            if d["changed"]
            else f"config version {d['rolled_back_to']} is already what is in force (version {d['version']})"
        ],
    )
