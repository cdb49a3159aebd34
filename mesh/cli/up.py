"""`mesh up` and `mesh down`: bring the mesh to life, and stop it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mesh.cli._options import AccessLog, OtlpEndpoint, Store, TraceSample, store_url
from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state
from mesh.demo import DEMO_GATEWAY

DEMO_PAGE = f"http://{DEMO_GATEWAY['listen']}/productpage"  # the bookinfo page, through its gateway


def up(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Argument(metavar="[CONFIG]", help="A mesh.toml: its services and gateways run, its config is applied."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background (pid and logs in MESH_HOME/run/).")
    ] = False,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Run the bundled bookinfo demo (its page: http://127.0.0.1:9080/productpage)."),
    ] = False,
    traffic: Annotated[
        bool, typer.Option("--traffic/--no-traffic", help="With --demo: a gentle traffic generator.")
    ] = True,
    listen: Annotated[
        Optional[str],
        typer.Option(
            help="HOST:PORT of the controller's API (default: port 4190 on the host address, else 127.0.0.1)."
        ),
    ] = None,
    lan: Annotated[
        bool, typer.Option("--lan", help="zeroconf on every interface (default: CONFIG's [discovery] interfaces).")
    ] = False,
    advertise: Annotated[
        Optional[str],
        typer.Option(help="The address other hosts dial for this host: its services bind 0.0.0.0 and advertise it."),
    ] = None,
    store: Store = None,
    otlp_endpoint: OtlpEndpoint = None,
    trace_sample: TraceSample = None,
    access_log: AccessLog = None,
    daemon_mode: Annotated[bool, typer.Option("--daemon", hidden=True)] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Start the mesh: the CA if there is none, the controller, and the services of CONFIG (or the demo)."""
    from mesh.config import load_config
    from mesh.controller import daemon
    from mesh.errors import ControllerError
    from mesh.identity import CertificateAuthority
    from mesh.inject import plan_reach
    from mesh.proxy import parse_listen_address

    home = state(ctx).home
    if config is not None and demo:
        raise ControllerError("give a CONFIG or --demo, not both")
    parsed = load_config(config) if config is not None else None  # fail before starting anything
    address = parse_listen_address(listen, "--listen") if listen is not None else None
    reach = plan_reach(parsed.discovery if parsed else None, listen=address, advertise=advertise, lan=lan)
    chosen_store = store_url(store, parsed.control.store if parsed else None)
    telemetry = up_telemetry(parsed, otlp_endpoint, trace_sample, access_log)
    created = False
    if not home.has_ca():
        CertificateAuthority.init(home, trust_domain=parsed.mesh.trust_domain if parsed else "mesh.local")
        created = True
    if not daemon_mode and any(d.name == "mesh" for d in daemon.running(home)):
        raise ControllerError(
            f"the mesh is already up on {home.root}", hint="`mesh status` shows it; `mesh down` stops it"
        )
    if detach:
        argv = ["up", "--daemon", *reach.daemon_args()]
        argv += ["--store", store] if store else []
        argv += telemetry_flags(otlp_endpoint, trace_sample, telemetry.access_log if access_log is not None else None)
        argv += ["--demo"] if demo else []
        argv += [] if traffic else ["--no-traffic"]
        argv += [str(config.resolve())] if config is not None else []
        started = daemon.spawn(home, "mesh", argv)
        record = daemon.wait_until_listening(home, started)
        render(output, _summary(home, record, started.pid, created, parsed, demo, reach), _up_view)
        return
    from mesh.sd_notify import logs_to_journal

    # A terminal gets the live panel; a systemd unit (stderr is the journal) gets log lines, the
    # summary and join line included; the detached daemon only log lines (its parent printed the rest).
    view = "log" if daemon_mode else "journal" if logs_to_journal() else "panel"
    _run(home, reach, parsed, config, demo, traffic, created, view, chosen_store, telemetry)


def up_telemetry(parsed: Any, otlp_endpoint: str | None, trace_sample: str | None, access_log: str | None) -> Any:
    """mesh.toml's ``[telemetry]`` with the flags given in its place, checked as `mesh proxy` checks them."""
    from dataclasses import replace

    from mesh.config import TelemetryConfig
    from mesh.proxy import telemetry_settings

    telemetry = parsed.telemetry if parsed is not None else TelemetryConfig()
    given = {"otlp_endpoint": otlp_endpoint, "trace_sample": trace_sample, "access_log": access_log}
    telemetry = replace(telemetry, **{k: v for k, v in given.items() if v is not None})
    # Fail here, before anything starts, rather than in every service's sidecar.
    checked = telemetry_settings(telemetry.otlp_endpoint, str(telemetry.trace_sample), telemetry.access_log)
    return replace(telemetry, trace_sample=checked.trace_sample, access_log=checked.access_log)


def telemetry_flags(otlp_endpoint: str | None, trace_sample: str | None, access_log: str | None) -> list[str]:
    """The telemetry flags given to `mesh up`, for its detached daemon (which reads CONFIG itself)."""
    given = (("--otlp-endpoint", otlp_endpoint), ("--trace-sample", trace_sample), ("--access-log", access_log))
    return [arg for flag, value in given if value is not None for arg in (flag, value)]


def _run(
    home: Any,
    reach: Any,
    parsed: Any,
    path: Path | None,
    demo: bool,
    traffic: bool,
    created: bool,
    view: str,
    store: Any,
    telemetry: Any = None,
) -> None:
    import json
    import logging
    import os

    import trio

    from mesh._logging import setup_logging
    from mesh.inject import UpPlan, demo_units, run_up, units_from_config

    if demo:
        units = demo_units(home, traffic, reach, telemetry)
    else:
        units = units_from_config(home, parsed, reach, telemetry) if parsed else []
    plan = UpPlan(
        home=home,
        reach=reach,
        config=parsed,
        config_source=str(path) if path else None,
        units=units,
        store=store,
    )

    def summary_lines(reveal_token: bool = True) -> list[str]:
        record = json.loads(home.controller_json.read_text())
        return _up_view(_summary(home, record, os.getpid(), created, parsed, demo, reach, reveal_token))

    log_path = home.ensure_dir(home.run_dir) / "controller.log"
    if view != "panel":  # the detached daemon or a systemd unit: stderr is already the log
        setup_logging("up")

        async def announce(app: Any, fleet: Any) -> None:
            for line in summary_lines(reveal_token=False)[:-1]:  # a journal is kept and read by others
                logging.getLogger("mesh.up").info("%s", line.strip())

        trio.run(run_up, plan, announce if view == "journal" else None)
        return
    setup_logging("up", log_file=log_path)

    async def show(app: Any, fleet: Any) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        from mesh.cli._output import _console
        from mesh.cli.status import status_view

        console = _console()  # piped: not folded at 80 columns (a URL or the join line stays whole)
        for line in summary_lines()[:-1]:
            console.print(line, highlight=False)
        stop_line = f"logs in {home.run_dir}; Ctrl-C stops the mesh"
        console.print(stop_line, highlight=False)
        # The lines above scroll away under a tall panel: its last line says it again.
        footer = Text(f"demo: {DEMO_PAGE} · {stop_line}" if demo else stop_line, style="dim")
        with Live(console=console, refresh_per_second=2) as live:
            while True:
                live.update(Group(*status_view(app.status_view()), footer))
                with trio.move_on_after(1):
                    await app.wait_changed()

    try:
        trio.run(run_up, plan, show)
    except KeyboardInterrupt:
        pass
    print("mesh stopped")


def join_line(home: Any, record: dict[str, Any], reveal_token: bool = True) -> tuple[str, str, str]:
    """(`mesh join …` for other hosts, the address they dial, the CA fingerprint). Without
    ``reveal_token`` the token is named by its file: for logs, which outlive the terminal."""
    from mesh.identity import CertificateAuthority, fingerprint

    fp = fingerprint(CertificateAuthority.load(home).root_cert)
    address = record.get("advertise") or record["address"]  # what other hosts dial
    if reveal_token:
        return f"mesh join {address} --token {home.join_token.read_text().strip()} --ca-fingerprint {fp}", address, fp
    return f"mesh join {address} --token TOKEN --ca-fingerprint {fp}  (TOKEN: in {home.join_token})", address, fp


def _summary(
    home: Any,
    record: dict[str, Any],
    pid: int,
    created: bool,
    parsed: Any,
    demo: bool,
    reach: Any,
    reveal_token: bool = True,
) -> dict[str, Any]:
    from mesh.discovery import is_loopback, parse_address

    join, address, fp = join_line(home, record, reveal_token)
    return {
        "controller": address,
        "controller_local": is_loopback(parse_address(address)[0]),
        "services_address": reach.host,  # None: only this host reaches the services
        "zeroconf_interfaces": list(reach.interfaces) if reach.zeroconf else [],
        "pid": pid,
        "home": str(home.root),
        "trust_domain": record["trust_domain"],
        "ca_created": created,
        "services": sorted({s.name for s in parsed.services}) if parsed else [],
        "demo": DEMO_PAGE if demo else None,
        "ca_fingerprint": fp,
        "join": join,
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
        lines.append(f"demo: open {d['demo']} in a browser; `mesh top` in another terminal shows the traffic")
    if d["services_address"]:
        lines.append(f"services are reachable from other hosts at {d['services_address']}")
    if d["controller_local"]:  # the line still serves another MESH_HOME on this host
        lines.append("only this host reaches the controller (--listen ADDR:PORT lets others join); here:")
    else:
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
