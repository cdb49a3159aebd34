"""Writing and removing the units of `mesh install-service` (the I/O around ``_units``).

Files: the unit in ``/etc/systemd/system`` (``--user``: ``~/.config/systemd/user``) and its
environment file in ``/etc/mesh`` (``~/.config/mesh``), 0600 since users put secrets there.
``root`` prefixes every path written (like ``systemctl --root`` or a package's DESTDIR)
while the unit still names the paths of the running host.

systemctl is asked to reload, enable and start only where systemd runs (PID 1 for system
units, the user's manager for --user units); elsewhere the result says what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import HomeError, ServiceError
from mesh.home import atomic_write
from mesh.service._units import ServicePlan, render_env, render_unit, unit_name

HEADER = "# Written by `mesh install-service"


@dataclass(frozen=True)
class Layout:
    """Where units and environment files live on this host, for system or --user units."""

    unit_dir: Path
    env_dir: Path
    user: bool

    @classmethod
    def for_host(cls, user: bool) -> Layout:
        if not user:
            return cls(Path("/etc/systemd/system"), Path("/etc/mesh"), user=False)
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return cls(config / "systemd" / "user", config / "mesh", user=True)

    def env_file(self, unit: str) -> Path:
        return self.env_dir / (unit.removesuffix(".service") + ".env")


@dataclass(frozen=True)
class Outcome:
    unit: str
    written: list[str]
    kept: list[str]
    removed: list[str]
    systemctl: list[str]  # commands run, with their result
    todo: list[str]  # what the user still has to run

    def view(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("unit", "written", "kept", "removed", "systemctl", "todo")}


def _under(root: Path | None, path: Path) -> Path:
    return root / path.relative_to(path.anchor) if root is not None else path


def _systemctl(user: bool) -> list[str] | None:
    """The systemctl to ask, when a systemd manager is there to answer; else None."""
    if shutil.which("systemctl") is None:
        return None
    if user:
        runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        return ["systemctl", "--user"] if Path(runtime, "systemd").is_dir() else None
    return ["systemctl"] if Path("/run/systemd/system").is_dir() else None


def _run(command: list[str], done: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ServiceError(
            f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()}",
            hint=f"see `journalctl{' --user' if '--user' in command else ''} -u {command[-1]}`",
        )
    done.append(" ".join(command))


def install(plan: ServicePlan, layout: Layout, *, root: Path | None, force: bool, start: bool) -> Outcome:
    unit_path = _under(root, layout.unit_dir / plan.unit)
    env_path = _under(root, plan.env_file)
    if unit_path.exists() and not force:
        raise ServiceError(
            f"{unit_path} exists",
            hint=f"`mesh uninstall-service {plan.name}` removes it, or --force writes it again (its "
            "environment file is kept)",
        )
    written, kept = [], []
    try:
        for directory in (unit_path.parent, env_path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        if env_path.exists():
            kept.append(str(env_path))
        else:
            atomic_write(env_path, render_env(plan), mode=0o600)
            written.append(str(env_path))
        atomic_write(unit_path, render_unit(plan), mode=0o644)
    except (PermissionError, HomeError) as exc:
        raise ServiceError(
            f"cannot write {unit_path.parent} or {env_path.parent}: {exc}",
            hint="system units need root (sudo mesh install-service …); --user writes your own units",
        ) from None
    written.append(str(unit_path))
    manager = None if root is not None else _systemctl(layout.user)
    ran: list[str] = []
    todo: list[str] = []
    prefix = "systemctl --user" if layout.user else "systemctl"
    if manager is None:
        todo.append(f"{prefix} daemon-reload && {prefix} enable --now {plan.unit}")
    else:
        _run([*manager, "daemon-reload"], ran)
        if start:
            _run([*manager, "enable", "--now", plan.unit], ran)
        else:
            todo.append(f"{prefix} enable --now {plan.unit}")
    if layout.user:
        todo.append(f"loginctl enable-linger {os.environ.get('USER', '$USER')}  # start at boot, not at login")
    return Outcome(plan.unit, written, kept, [], ran, todo)


def installed(layout: Layout, root: Path | None) -> list[str]:
    """The units mesh wrote in ``layout`` (by their header)."""
    directory = _under(root, layout.unit_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("mesh-*.service")):
        try:
            if path.read_text(errors="replace").startswith(HEADER):
                found.append(path.name)
        except OSError:
            continue
    return found


def uninstall(name: str, layout: Layout, *, root: Path | None, dry_run: bool) -> Outcome:
    unit = name if name.endswith(".service") else unit_name(name)
    unit_path = _under(root, layout.unit_dir / unit)
    if unit not in installed(layout, root):
        others = installed(layout, root)
        where = "--user " if layout.user else ""
        raise ServiceError(
            f"no unit {unit} written by `mesh install-service` in {unit_path.parent}",
            hint=("installed: " + ", ".join(others))
            if others
            else f"`mesh install-service {where}...` writes one"
            + ("" if layout.user else "; --user for a user's units"),
        )
    env_path = _under(root, layout.env_file(unit))
    removed = [str(p) for p in (unit_path, env_path) if p.exists()]
    manager = None if root is not None or dry_run else _systemctl(layout.user)
    ran: list[str] = []
    if dry_run:
        return Outcome(unit, [], [], removed, [], [])
    if manager is not None:
        _run([*manager, "disable", "--now", unit], ran)  # waits for the stop: the app drains first
    for path in (unit_path, env_path):
        path.unlink(missing_ok=True)
    if manager is not None:
        _run([*manager, "daemon-reload"], ran)
    return Outcome(unit, [], [], removed, ran, [])
