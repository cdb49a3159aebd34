"""`mesh up` and `mesh down`: bring the control plane to life, and stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def up(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Argument(metavar="[CONFIG]", help="A mesh.toml to apply once up.")] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background (pid and log in MESH_HOME/run/).")] = False,
    listen: Annotated[str, typer.Option(help="HOST:PORT of the controller's API.")] = "127.0.0.1:4190",
    lan: Annotated[bool, typer.Option("--lan", help="zeroconf on every interface (default: loopback only).")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Start the mesh: create the CA if there is none, start the controller, print how to join."""
    from mesh.config import load_config
    from mesh.controller import daemon
    from mesh.errors import ControllerError
    from mesh.identity import CertificateAuthority

    home = state(ctx).home
    parsed = load_config(config) if config is not None else None  # fail before starting anything
    created = False
    if not home.has_ca():
        trust_domain = parsed.mesh.trust_domain if parsed else "mesh.local"
        CertificateAuthority.init(home, trust_domain=trust_domain)
        created = True
    if any(d.name == "controller" for d in daemon.running(home)):
        raise ControllerError(
            f"the mesh is already up on {home.root}", hint="`mesh status` shows it; `mesh down` stops it"
        )
    argv = ["controller", "--listen", listen] + (["--lan"] if lan else [])
    if not detach:
        _foreground(home, argv, parsed, config, created)
        return
    started = daemon.spawn(home, "controller", argv)
    record = daemon.wait_until_listening(home, started)
    applied = _apply(home, parsed, config) if parsed else None
    info = _summary(home, record, started.pid, created, applied)
    render(output, info, _up_view)


def _apply(home: Any, parsed: Any, path: Path | None) -> int:
    from mesh.cli._control import operator_request, raise_for_status

    body = {"config": parsed.to_dict(), "source": str(path)}
    return raise_for_status(operator_request(home, "POST", "/v1/config", body), f"applying {path}")["version"]


def _summary(home: Any, record: dict[str, Any], pid: int, created: bool, applied: int | None) -> dict[str, Any]:
    from mesh.identity import CertificateAuthority, fingerprint

    ca = CertificateAuthority.load(home)
    token = home.join_token.read_text().strip()
    fp = fingerprint(ca.root_cert)
    return {
        "controller": record["address"],
        "pid": pid,
        "home": str(home.root),
        "trust_domain": record["trust_domain"],
        "ca_created": created,
        "config_version": applied,
        "ca_fingerprint": fp,
        "join": f"mesh join {record['address']} --token {token} --ca-fingerprint {fp}",
        "log": str(home.run_dir / "controller.log"),
    }


def _up_view(d: dict[str, Any]) -> list[str]:
    lines = []
    if d["ca_created"]:
        lines.append(f"created a CA for trust domain {d['trust_domain']} in {d['home']}/ca")
    lines.append(f"mesh is up: controller at {d['controller']} (pid {d['pid']}, log {d['log']})")
    if d["config_version"] is not None:
        lines.append(f"config applied (version {d['config_version']})")
    lines.append("other hosts join with:")
    lines.append(f"  {d['join']}")
    lines.append("`mesh status` shows the mesh; `mesh down` stops it")
    return lines


def _foreground(home: Any, argv: list[str], parsed: Any, path: Path | None, created: bool) -> None:
    """The controller in this process, with a live status panel; Ctrl-C stops it cleanly."""
    import trio

    from mesh._logging import setup_logging
    from mesh.controller import ControllerSettings, run_controller
    from mesh.proxy._main import parse_listen_address

    listen = parse_listen_address(argv[argv.index("--listen") + 1], "--listen")
    settings = ControllerSettings(home=home, listen=listen, interfaces=("all",) if "--lan" in argv else ("127.0.0.1",))
    log_path = home.ensure_dir(home.run_dir) / "controller.log"
    setup_logging("controller", log_file=log_path)

    async def main() -> None:
        from rich.console import Console, Group
        from rich.live import Live

        from mesh.cli.status import status_view

        async with trio.open_nursery() as nursery:
            app = await nursery.start(run_controller, settings)
            if parsed is not None:
                app.state.apply_config(parsed.to_dict(), str(path))
                app.changed()
            import json

            summary = _summary(home, json.loads(home.controller_json.read_text()), __import__("os").getpid(), created, app.state.config_version if parsed else None)
            console = Console()
            for line in _up_view(summary)[:-1]:
                console.print(line, highlight=False)
            console.print(f"logs: {log_path}; Ctrl-C stops the mesh", highlight=False)
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                while True:
                    live.update(Group(*status_view(app.status_view())))
                    with trio.move_on_after(1):
                        await app.wait_changed()
                    if nursery.cancel_scope.cancel_called:
                        break

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    print("mesh stopped")


def down(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a graceful stop before SIGKILL.")] = 15.0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Stop a mesh started with `mesh up --detach`: services first, then the controller."""
    from mesh.controller import daemon

    home = state(ctx).home
    stopped = daemon.stop(home, timeout)
    data = {"stopped": [{"name": d.name, "pid": d.pid} for d in stopped]}
    render(
        output,
        data,
        lambda d: [f"stopped {s['name']} (pid {s['pid']})" for s in d["stopped"]] or ["nothing was running"],
    )


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
