"""`mesh inject`: an app behind its own sidecar, supervised as one unit; and the services
`mesh up` keeps running. Names load on first use (the CLI's option parsing needs the address
planning, not the supervisor)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.inject._env import (
        build_app_env as build_app_env,
        default_service_name as default_service_name,
        parse_upstreams as parse_upstreams,
        upstream_env_name as upstream_env_name,
    )
    from mesh.inject._fleet import (
        demo_units as demo_units,
        units_from_config as units_from_config,
    )
    from mesh.inject._reach import (
        check_advertise as check_advertise,
        controller_advertise as controller_advertise,
        plan_reach as plan_reach,
        zeroconf_interfaces as zeroconf_interfaces,
    )
    from mesh.inject._run import (
        InjectOptions as InjectOptions,
        exit_status as exit_status,
        free_port as free_port,
        run_inject_command as run_inject_command,
        run_injected as run_injected,
    )
    from mesh.inject._up import (
        UpPlan as UpPlan,
        run_up as run_up,
    )

_WHERE = {
    "build_app_env": "_env",
    "default_service_name": "_env",
    "parse_upstreams": "_env",
    "upstream_env_name": "_env",
    "demo_units": "_fleet",
    "units_from_config": "_fleet",
    "check_advertise": "_reach",
    "controller_advertise": "_reach",
    "plan_reach": "_reach",
    "zeroconf_interfaces": "_reach",
    "InjectOptions": "_run",
    "exit_status": "_run",
    "free_port": "_run",
    "run_inject_command": "_run",
    "run_injected": "_run",
    "UpPlan": "_up",
    "run_up": "_up",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"mesh.inject.{module}"), name)
