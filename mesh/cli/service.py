"""`mesh install-service` and `mesh uninstall-service`: mesh processes that start at boot (systemd).

    mesh install-service [OPTIONS] controller [CONTROLLER OPTIONS]
    mesh install-service [OPTIONS] up CONFIG [UP OPTIONS]
    mesh install-service [OPTIONS] inject NAME [INJECT OPTIONS] -- CMD [ARGS]...

Everything after the kind is the command line of `mesh controller`, `mesh up` or
`mesh inject --name NAME`, checked by that command's own parser before anything
is written. The units' design (one unit per app and its sidecar, readiness,
stop order) is in mesh/service/_units.py and docs/install.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state

KINDS = ("controller", "up", "inject")

# install-service's own flags, also taken where people type them: after the kind, before `--`.
OWN_FLAGS = ("--user", "--dry-run", "--force", "--no-start")

User = Annotated[
    bool, typer.Option("--user", help="A unit of your own systemd manager (systemctl --user), not a system one.")
]
Root = Annotated[
    Optional[Path],
    typer.Option(
        help="Write under this directory (an image, a package build), not on this host; systemctl is not run."
    ),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the unit and its environment file; write nothing.")]


def install_service(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="controller|up|inject", help="What the unit runs.")],
    user: User = False,
    dry_run: DryRun = False,
    force: Annotated[
        bool, typer.Option("--force", help="Write the unit again if it exists (its environment file is kept).")
    ] = False,
    start: Annotated[
        bool, typer.Option("--start/--no-start", help="Enable and start it now, where systemd runs.")
    ] = True,
    root: Root = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Write a systemd unit (and its environment file) that runs `mesh controller`, `mesh up CONFIG`
    or `mesh inject NAME -- CMD` at boot, with readiness and an ordered stop; enable and start it."""
    from mesh import __version__
    from mesh.errors import ServiceError
    from mesh.self_command import mesh_command
    from mesh.service import Layout, ServicePlan, install, render_env, render_unit

    args = list(ctx.args)
    for flag in OWN_FLAGS:  # accepted after the kind too, before any `--`
        end = args.index("--") if "--" in args else len(args)
        if flag in args[:end]:
            args.remove(flag)
            user, dry_run, force = user or flag == "--user", dry_run or flag == "--dry-run", force or flag == "--force"
            start = start and flag != "--no-start"
    if kind not in KINDS:
        raise ServiceError(f"unknown kind {kind!r}", hint="one of: " + ", ".join(KINDS))
    name, command, ready_timeout = _command_line(ctx, kind, args)
    layout = Layout.for_host(user)
    home = state(ctx).home
    plan = ServicePlan(
        kind=kind,
        name=name,
        mesh=tuple(mesh_command(inherit_flags=False)),  # not this shell's -X or -W at every boot
        args=tuple(command),
        home=home.root.resolve(),
        user=user,
        env_file=layout.env_file(f"mesh-{name}"),
        path=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        working_directory=None if kind == "controller" else Path.cwd(),
        ready_timeout=ready_timeout,
        version=__version__,
    )
    if dry_run:
        unit_path = layout.unit_dir / plan.unit
        text = f"# {unit_path}\n{render_unit(plan)}\n# {plan.env_file}\n{render_env(plan)}"
        render(
            output,
            {
                "unit": str(unit_path),
                "unit_text": render_unit(plan),
                "env_file": str(plan.env_file),
                "env_text": render_env(plan),
            },
            lambda _: [text.rstrip("\n")],
        )
        return
    outcome = install(plan, layout, root=root, force=force, start=start)
    render(output, outcome.view(), _outcome_view)


def _command_line(ctx: typer.Context, kind: str, args: list[str]) -> tuple[str, list[str], float]:
    """(unit name, `mesh …` arguments, the app's ready timeout) for KIND ARGS, checked by the
    parser of that very command; relative paths made absolute where the unit needs them."""
    from mesh.config import is_valid_service_name, load_config
    from mesh.errors import ServiceError
    from mesh.service import RESERVED_NAMES

    end = args.index("--") if "--" in args else len(args)
    if kind == "inject":
        if not args or args[0].startswith("-"):
            raise ServiceError(
                "install-service inject needs the service's NAME first",
                hint="mesh install-service inject web -- ./web --port 8080",
            )
        name, args, end = args[0], args[1:], end - 1  # `end`: where options stop, in the new args
        if not is_valid_service_name(name) or name in RESERVED_NAMES:
            raise ServiceError(
                f"{name!r} cannot name a service unit",
                hint="lowercase letters, digits and '-', not " + " or ".join(RESERVED_NAMES),
            )
        for option in ("--name", "--token"):
            if any(a == option or a.startswith(option + "=") for a in args[:end]):
                why = (
                    "NAME is the name"
                    if option == "--name"
                    else ("a unit file is world-readable: run `mesh join` first, the host keeps its token in MESH_HOME")
                )
                raise ServiceError(f"{option} has no place here", hint=why)
        args = ["--name", name, *args]
    else:
        name = kind
        if kind == "up" and any(a in ("--detach", "-d", "--daemon") for a in args[:end]):
            raise ServiceError(
                "a unit runs `mesh up` in the foreground: leave out --detach", hint="systemd keeps it running"
            )
    parsed = _parse(ctx, kind, args)
    if kind == "up" and parsed.get("config") is not None:
        config = Path(parsed["config"])
        load_config(config)  # a broken mesh.toml fails now, not at boot
        args = [str(config.resolve()) if a == str(parsed["config"]) else a for a in args]
    if kind == "inject":
        after = args[args.index("--") + 1 :] if "--" in args else []
        command = [a for a in parsed.get("command") or [] if a != "--"]
        if not after:
            raise ServiceError(
                "no command to run after --", hint="mesh install-service inject NAME [OPTIONS] -- CMD [ARGS]..."
            )
        if command != after:  # `mesh inject` would take an unknown option for the app's command
            raise ServiceError(
                f"mesh inject has no option {command[0]!r}", hint="`mesh inject --help` lists its options"
            )
    return name, [kind, *args], float(parsed.get("ready_timeout") or 30.0)


def _parse(ctx: typer.Context, kind: str, args: list[str]) -> dict[str, Any]:
    """The options of `mesh KIND ARGS` as that command's own parser reads them (nothing runs)."""
    from mesh.errors import ServiceError

    try:  # typer vendors click from 0.2x on, and its usage errors are TyperExceptions there
        from click import ClickException as UsageProblem
    except ImportError:
        from typer import TyperException as UsageProblem

    command = ctx.find_root().command.get_command(ctx, kind)  # type: ignore[attr-defined]
    try:
        with command.make_context(f"mesh {kind}", list(args), parent=ctx) as sub:
            return dict(sub.params)
    except UsageProblem as exc:
        raise ServiceError(
            f"mesh {kind}: {exc.format_message()}",
            hint=f"`mesh {kind} --help` lists its options; install-service's own ({', '.join(OWN_FLAGS)}, --root) "
            "go before the kind",
        ) from None


def _outcome_view(d: dict[str, Any]) -> list[str]:
    lines = [f"wrote {path}" for path in d["written"]]
    lines += [f"kept {path} (yours to edit)" for path in d["kept"]]
    lines += [f"removed {path}" for path in d["removed"]]
    lines += [f"ran {command}" for command in d["systemctl"]]
    if d["todo"]:
        lines.append("still to do" + ("" if d["systemctl"] else " (systemd does not run here)") + ":")
        lines += [f"  {step}" for step in d["todo"]]
    return lines


def uninstall_service(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="controller, up, or the NAME of an injected service (or its unit).")],
    user: User = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    root: Root = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Stop and disable a unit of `mesh install-service`, then remove it and its environment file."""
    from mesh.service import Layout, uninstall

    outcome = uninstall(name, Layout.for_host(user), root=root, dry_run=dry_run)
    view = outcome.view()
    if dry_run:
        render(output, view, lambda d: [f"would remove {path}" for path in d["removed"]])
    else:
        render(output, view, _outcome_view)


def register(app: typer.Typer) -> None:
    passthrough = {"allow_interspersed_args": False, "ignore_unknown_options": True, "allow_extra_args": True}
    app.command("install-service", context_settings=passthrough)(install_service)
    app.command("uninstall-service")(uninstall_service)
