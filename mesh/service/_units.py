"""systemd units for mesh (pure): what `mesh install-service` writes, as text.

One unit per mesh process that a host keeps running:

- ``mesh-controller.service``: `mesh controller`, the control plane alone;
- ``mesh-up.service``: `mesh up CONFIG`, the controller and the services of a mesh.toml;
- ``mesh-NAME.service``: `mesh inject --name NAME … -- CMD`, an app and its sidecar.

An injected app and its sidecar are one process tree (`mesh inject` runs the
sidecar in its own process and the app as its child), so they are one unit, and
the unit says so rather than pretending to be two services that systemd orders:

- ``Type=notify``: `mesh inject` tells systemd READY=1 only once its sidecar has its
  identity and listeners *and* the app answers (its health path, else its port) and
  the service is advertised. Units ordered ``After=`` it start when it can be called.
- ``KillMode=mixed``: systemd's SIGTERM goes to `mesh inject` alone, which withdraws
  the service, passes the signal to the app, waits for the app to drain and exit,
  then drains the sidecar. Whatever is left when it exits (or after
  ``TimeoutStopSec``) is killed.
- ``SuccessExitStatus=143``: an app without a SIGTERM handler dies of it, and
  `mesh inject` exits 128+15 like a shell: a clean stop, not a failure.

`mesh up` runs its services the same way (SIGTERM to `mesh up` alone; it stops the
services, then the controller). Every unit starts ``After=`` the local controller
units, if this host has them, so a service's first certificate request finds its
controller, and stops before them, so its withdrawal reaches it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CONTROLLER_UNITS = ("mesh-controller.service", "mesh-up.service")
RESERVED_NAMES = ("controller", "up")

STOP_TIMEOUT_SECONDS = 45  # the app's drain, then the sidecar's (10 s by default), with room
START_EXTRA_SECONDS = 30  # beyond the app's --ready-timeout: identity, first certificate

# An ExecStart= word that needs no quotes (its `%` already doubled): no whitespace, quote,
# backslash, `;` or `$`.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True)
class ServicePlan:
    """One unit to write: which mesh command, run how, by whom."""

    kind: str  # "controller" | "up" | "inject"
    name: str  # "controller", "up", or the injected service's name
    mesh: Sequence[str]  # how to run this mesh (mesh.self_command.mesh_command())
    args: Sequence[str]  # the command and its options, after `mesh`
    home: Path  # MESH_HOME of the service
    user: bool  # a --user unit (the user's own manager) rather than a system one
    env_file: Path  # where the unit's environment file lives on the host
    path: str  # PATH the services run with: the installer's, so commands resolve as they did
    working_directory: Path | None = None
    ready_timeout: float = 30.0
    version: str = ""

    @property
    def unit(self) -> str:
        return unit_name(self.name)


def unit_name(name: str) -> str:
    return f"mesh-{name}.service"


def exec_word(arg: str) -> str:
    """One argument of an ExecStart= line (systemd.service(5), "Command lines"): `%` and `$`
    doubled (no specifier, no variable is expanded), quoted when it holds anything else."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _no_specifiers(path: str) -> str:
    """A path setting: taken as it is, but `%` would start a specifier."""
    return path.replace("%", "%%")


def exec_line(argv: Sequence[str]) -> str:
    return " ".join(exec_word(arg) for arg in argv)


def env_value(value: str) -> str:
    """A value of an EnvironmentFile= line, double-quoted: `\\`, `"`, `$` and backticks escaped."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def _description(plan: ServicePlan) -> str:
    if plan.kind == "controller":
        return "mesh controller (control plane, CA, registry)"
    if plan.kind == "up":
        return "mesh up: the controller and the services of a mesh.toml"
    return f"mesh service {plan.name}: the app and its sidecar (mesh inject)"


def render_unit(plan: ServicePlan) -> str:
    command = [*plan.mesh, *plan.args]
    unit = [
        "[Unit]",
        f"Description={_description(plan)}",
        "Documentation=man:systemd.service(5)",
    ]
    after = [] if plan.user else ["network-online.target"]
    if plan.kind == "inject":
        after += list(CONTROLLER_UNITS)  # ordering only: a host without them starts as well
    if not plan.user:
        unit.append("Wants=network-online.target")
    if after:
        unit.append("After=" + " ".join(after))
    service = [
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"EnvironmentFile={_no_specifiers(str(plan.env_file))}",
    ]
    if plan.working_directory is not None:
        service.append(f"WorkingDirectory={_no_specifiers(str(plan.working_directory))}")
    service += [
        f"ExecStart={exec_line(command)}",
        "KillMode=mixed",
        f"TimeoutStartSec={int(plan.ready_timeout) + START_EXTRA_SECONDS}s",
        f"TimeoutStopSec={STOP_TIMEOUT_SECONDS}s",
        "Restart=on-failure",
        "RestartSec=2s",
    ]
    if plan.kind == "inject":
        service.append("SuccessExitStatus=143")
    install = ["[Install]", f"WantedBy={'default.target' if plan.user else 'multi-user.target'}"]
    header = [
        f"# Written by `mesh install-service {plan.kind}`{f' (mesh {plan.version})' if plan.version else ''}.",
        f"# `mesh uninstall-service {plan.name}` removes it; `systemctl{' --user' if plan.user else ''} edit "
        f"{plan.unit}` adds to it.",
    ]
    return "\n".join([*header, *unit, "", *service, "", *install]) + "\n"


def render_env(plan: ServicePlan) -> str:
    lines = [
        f'# Environment of {plan.unit} (and of the app it runs): KEY="VALUE" lines.',
        "# Yours to edit: `mesh install-service --force` keeps this file; restart the unit to apply.",
        f"MESH_HOME={env_value(str(plan.home))}",
        f"PATH={env_value(plan.path)}",
        'PYTHONUNBUFFERED="1"',
    ]
    return "\n".join(lines) + "\n"
