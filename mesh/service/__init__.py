"""Boot-time services: the systemd units of `mesh install-service` (see ``_units`` for the design)."""

from __future__ import annotations

from mesh.service._install import Layout, Outcome, install, installed, uninstall
from mesh.service._units import (
    RESERVED_NAMES,
    ServicePlan,
    env_value,
    exec_line,
    exec_word,
    render_env,
    render_unit,
    unit_name,
)

__all__ = [
    "RESERVED_NAMES",
    "Layout",
    "Outcome",
    "ServicePlan",
    "env_value",
    "exec_line",
    "exec_word",
    "install",
    "installed",
    "render_env",
    "render_unit",
    "uninstall",
    "unit_name",
]
