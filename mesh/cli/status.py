"""`mesh status`: the control plane, every service with its endpoints and identities."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from mesh.cli._output import OutputFormat, OutputOption, key_value_table, render, rows_table
from mesh.cli._state import state


def status(
    ctx: typer.Context,
    hosts: Annotated[
        bool,
        typer.Option(
            "--hosts",
            help="Every host of the mesh: address, role, mesh version, clock skew, services, last seen.",
        ),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Show the controller, the services it sees, and each proxy's identity and state."""
    from mesh.net import controller_request, raise_for_status

    if hosts:
        data = raise_for_status(controller_request(state(ctx).home, "GET", "/v1/hosts"), "mesh status --hosts")
        render(output, data, hosts_view)
        return
    data = raise_for_status(controller_request(state(ctx).home, "GET", "/v1/status"), "mesh status")
    render(output, data, status_view)


def hosts_view(data: dict[str, Any]) -> list[Any]:
    from mesh.debug.endpoints import time_left

    now = float(data.get("time") or time.time())
    rows = []
    for h in data["hosts"]:
        skew = h.get("skew_seconds")
        seen = h.get("last_seen")
        services = h["services"] + [f"{g} (gateway)" for g in h.get("gateways") or []]
        rows.append(
            (
                h["address"] + (" *" if h.get("this") else ""),
                h.get("name") or "-",
                ", ".join(h["roles"]),
                h.get("version") or "-",
                "-" if skew is None else f"{skew:+.3f}s",
                ", ".join(services) or "-",
                "-" if seen is None else ("now" if now - seen < 1 else f"{time_left(now - seen)} ago"),
            )
        )
    return [
        rows_table(
            ("HOST", "NAME", "ROLE", "VERSION", "CLOCK SKEW", "SERVICES", "LAST SEEN"),
            rows,
            title=f"{len(rows)} hosts (* this controller's; skew and last seen from its proxies' heartbeats)",
        )
    ]


def status_view(data: dict[str, Any]) -> list[Any]:
    from mesh.debug.endpoints import config_sync, time_left

    c = data["controller"]
    header = key_value_table(
        {
            "controller": c["address"],
            "version": c["version"],
            "trust domain": c["trust_domain"],
            "uptime": f"{c['uptime_seconds']:.0f}s",
            "state version": c["state_version"],
            "config version": c["config_version"],
            "issuer expires": c["issuer_expiry"],
            "store": c.get("store", "-") + (f" (READ-ONLY: {c['read_only']})" if c.get("read_only") else ""),
            "controllers": ", ".join(c.get("controllers") or []) or c["address"],
        }
    )
    rows = []
    now = time.time()
    for service, endpoints in sorted(data["services"].items()):
        for e in endpoints:
            expiry = e.get("cert_expiry")
            rows.append(
                (
                    service + (" (gateway)" if e.get("role") == "gateway" else ""),
                    e["address"],
                    e.get("identity") or "-",
                    ", ".join(f"{k}={v}" for k, v in sorted((e.get("labels") or {}).items())) or "-",
                    e.get("mesh_version") or "-",
                    time_left(expiry - now) if expiry else "-",
                    config_sync(e, c["state_version"]),
                )
            )
    table = rows_table(
        ("SERVICE", "ENDPOINT", "IDENTITY", "LABELS", "VERSION", "CERT LEFT", "CONFIG"),
        rows,
        title=f"{len(data['services'])} services",
    )
    parts = [header, table]
    units = data.get("units") or []
    if units:
        parts.append(
            rows_table(
                ("PROCESS", "SERVICE", "STATE", "PID", "RESTARTS", "LAST EXIT", "LAST LINE"),
                [
                    (
                        u["name"],
                        u.get("service") or "-",
                        u["state"],
                        u.get("pid") or "-",
                        u["restarts"],
                        "-" if u.get("last_exit") is None else u["last_exit"],
                        (u.get("last_lines") or ["-"])[-1][:60],
                    )
                    for u in units
                ],
                title=f"{len(units)} processes run by `mesh up`",
            )
        )
    return parts


def register(app: typer.Typer) -> None:
    app.command()(status)
