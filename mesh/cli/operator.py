"""`mesh operator grant NAME`: let another host's CLI become an operator (`mesh join --operator`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state

operator_app = typer.Typer(
    name="operator",
    help="Operator identities: who may change the mesh (apply, fault, CA records) from which host.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


@operator_app.command()
def grant(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The operator's name: spiffe://TD/operator/NAME.")],
    valid_for: Annotated[str, typer.Option("--for", help="How long the grant can be used (once), 1m to 24h.")] = "15m",
    output: OutputOption = OutputFormat.table,
) -> None:
    """A one-time grant of an operator identity, and the `mesh join` line that redeems it on another host."""
    from mesh.config import parse_duration
    from mesh.errors import ConfigError, MeshError
    from mesh.net import controller_request, raise_for_status

    try:
        seconds = parse_duration(valid_for)
    except (ConfigError, ValueError):
        raise MeshError(f"--for: invalid duration {valid_for!r}", hint="e.g. 15m, 1h") from None
    home = state(ctx).home
    body = raise_for_status(
        controller_request(home, "POST", "/v1/operator-grants", {"name": name, "ttl_seconds": seconds}),
        f"mesh operator grant {name}",
    )
    render(output, {**body, "join": _join_line(home, body["grant"])}, _grant_view)


def _join_line(home: Any, grant: str) -> str:
    """`mesh join …` as `mesh up` prints it, with ``--operator GRANT``: from this host's records."""
    from mesh.identity import fingerprint, load_certificates

    record = json.loads(home.controller_json.read_text())
    address = record.get("advertise") or record["address"]
    anchor = fingerprint(load_certificates(home.bundle.read_bytes())[0])
    token = home.join_token.read_text().strip()
    return f"mesh join {address} --token {token} --ca-fingerprint {anchor} --operator {grant}"


def _grant_view(d: dict[str, Any]) -> list[str]:
    import time

    minutes = max(0.0, (d["expires_at"] - time.time()) / 60)
    return [
        f"granted operator {d['name']}: good once, for the next {minutes:.0f} min; on the other host run:",
        f"  {d['join']}",
    ]


def register(app: typer.Typer) -> None:
    app.add_typer(operator_app, name="operator")
