"""`mesh store backup FILE` and `mesh store restore FILE`: the embedded store (MESH_HOME/state/mesh.db)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state

store_app = typer.Typer(
    name="store",
    help="Back up and restore the embedded store (an etcd store is backed up with etcd's own tools).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _store_path(home: object) -> Path:
    return home.root / "state" / "mesh.db"  # type: ignore[attr-defined]


@store_app.command()
def backup(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the copy (refused if it exists).")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """A consistent copy of the embedded store, also while the controller runs."""
    from mesh.controller import backup_store as copy
    from mesh.errors import StoreError

    if file.exists():
        raise StoreError(f"{file} exists already", hint="choose a new file name: a backup never overwrites")
    source = _store_path(state(ctx).home)
    size = copy(source, file)
    render(
        output,
        {"store": str(source), "backup": str(file), "bytes": size},
        lambda d: [f"backed up {d['store']} to {d['backup']} ({d['bytes']} bytes)"],
    )


@store_app.command()
def restore(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A file written by `mesh store backup`.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Put a backup in place of the embedded store. The controller must be stopped (`mesh down`)."""
    from mesh.controller import home_lock, restore_store as put_back
    from mesh.identity import CertificateAuthority, fingerprint

    home = state(ctx).home
    ca = CertificateAuthority.load(home)
    with home_lock(home):  # refuses while a controller runs on this MESH_HOME
        replaced = put_back(file, _store_path(home), fingerprint(ca.root_cert))
    data = {"restored": str(file), "store": str(_store_path(home)), "replaced": str(replaced) if replaced else None}
    render(
        output,
        data,
        lambda d: (
            [f"restored {d['restored']} to {d['store']}"]
            + ([f"the store it replaced is kept as {d['replaced']}"] if d["replaced"] else [])
            + ["start the controller (`mesh up --detach`): it serves the restored config"]
        ),
    )


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
