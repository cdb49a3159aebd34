"""`mesh up` and `mesh down`: bring the mesh to life, and stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def up(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path], typer.Argument(metavar="[CONFIG]", help="A mesh.toml: its services and gateways run, its config is applied.")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background (pid and logs in MESH_HOME/run/).")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Run the bundled bookinfo demo (gateway at http://127.0.0.1:9080/).")] = False,
    traffic: Annotated[bool, typer.Option("--traffic/--no-traffic", help="With --demo: a gentle traffic generator.")] = True,
    listen: Annotated[str, typer.Option(help="HOST:PORT of the controller's API.")] = "127.0.0.1:4190",
    lan: Annotated[bool, typer.Option("--lan", help="zeroconf on every interface (default: loopback only).")] = False,
    daemon_mode: Annotated[bool, typer.Option("--daemon", hidden=True)] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Start the mesh: the CA if there is none, the controller, and the services of CONFIG (or the demo)."""
    from mesh.config import load_config
    from mesh.controller import daemon
    from mesh.errors import ControllerError
    from mesh.identity import CertificateAuthority

    home = state(ctx).home
    if config is not None and demo:
        raise ControllerError("give a CONFIG or --demo, not both")
    parsed = load_config(config) if config is not None else None  # fail before starting anything
    created = False
    if not home.has_ca():
        CertificateAuthority.init(home, trust_domain=parsed.mesh.trust_domain if parsed else "mesh.local")
        created = True
    if not daemon_mode and any(d.name == "mesh" for d in daemon.running(home)):
        raise ControllerError(f"the mesh is already up on {home.root}", hint="`mesh status` shows it; `mesh down` stops it")
    if detach:
        argv = ["up", "--daemon", "--listen", listen] + (["--lan"] if lan else [])
        argv += ["--demo"] if demo else []
        argv += [] if traffic else ["--no-traffic"]
        argv += [str(config.resolve())] if config is not None else []
        started = daemon.spawn(home, "mesh", argv)
        record = daemon.wait_until_listening(home, started)
        render(output, _summary(home, record, started.pid, created, parsed, demo), _up_view)
        return
    _run(home, listen, lan, parsed, config, demo, traffic, created, panel=not daemon_mode)


def _run(home: Any, listen: str, lan: bool, parsed: Any, path: Path | None, demo: bool, traffic: bool, created: bool, panel: bool) -> None:
    import trio

    from mesh._logging import setup_logging
    from mesh.inject._fleet import demo_units, units_from_config
    from mesh.inject._up import UpPlan, run_up
    from mesh.proxy._main import parse_listen_address

    units = demo_units(home, traffic) if demo else units_from_config(home, parsed) if parsed else []
    plan = UpPlan(
        home=home,
        listen=parse_listen_address(listen, "--listen"),
        interfaces=("all",) if lan else ("127.0.0.1",),
        config=parsed,
        config_source=str(path) if path else None,
        units=units,
    )
    log_path = home.ensure_dir(home.run_dir) / "controller.log"
    if not panel:  # the detached daemon: its stdout is already the log
        setup_logging("up")
        trio.run(run_up, plan)
        return
    setup_logging("up", log_file=log_path)

    async def show(app: Any, fleet: Any) -> None:
        import json
        import os

        from rich.console import Console, Group
        from rich.live import Live

        from mesh.cli.status import status_view

        console = Console()
        record = json.loads(home.controller_json.read_text())
        for line in _up_view(_summary(home, record, os.getpid(), created, parsed, demo))[:-1]:
            console.print(line, highlight=False)
        console.print(f"logs in {home.run_dir}; Ctrl-C stops the mesh", highlight=False)
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                live.update(Group(*status_view(app.status_view())))
                with trio.move_on_after(1):
                    await app.wait_changed()

    try:
        trio.run(run_up, plan, show)
    except KeyboardInterrupt:
        pass
    print("mesh stopped")


def _summary(home: Any, record: dict[str, Any], pid: int, created: bool, parsed: Any, demo: bool) -> dict[str, Any]:
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
        "services": sorted({s.name for s in parsed.services}) if parsed else [],
        "demo": "http://127.0.0.1:9080/" if demo else None,
        "ca_fingerprint": fp,
        "join": f"mesh join {record['address']} --token {token} --ca-fingerprint {fp}",
        "log": str(home.run_dir / "mesh.log"),
    }


def _up_view(d: dict[str, Any]) -> list[str]:
    lines = []
    if d["ca_created"]:
        lines.append(f"created a CA for trust domain {d['trust_domain']} in {d['home']}/ca")
    lines.append(f"mesh is up: controller at {d['controller']} (pid {d['pid']})")
    if d["services"]:
        lines.append("services: " + ", ".join(d["services"]))
    if d["demo"]:
        lines.append(f"demo: open {d['demo']} — run `mesh top` in another terminal")
    lines.append("other hosts join with:")
    lines.append(f"  {d['join']}")
    lines.append("`mesh status` shows the mesh; `mesh down` stops it")
    return lines


def down(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a graceful stop before SIGKILL.")] = 30.0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Stop a mesh started with `mesh up --detach`: its services first, then the controller."""
    from mesh.controller import daemon

    stopped = daemon.stop(state(ctx).home, timeout)
    render(
        output,
        {"stopped": [{"name": d.name, "pid": d.pid} for d in stopped]},
        lambda d: [f"stopped {s['name']} (pid {s['pid']})" for s in d["stopped"]] or ["nothing was running"],
    )


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
