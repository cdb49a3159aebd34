"""`mesh inject`: an app behind its own sidecar, supervised as one unit."""

from __future__ import annotations

from mesh.inject._env import build_app_env, default_service_name, parse_upstreams, upstream_env_name
from mesh.inject._run import InjectOptions, exit_status, free_port, run_inject_command, run_injected

__all__ = [
    "InjectOptions",
    "build_app_env",
    "default_service_name",
    "exit_status",
    "free_port",
    "parse_upstreams",
    "run_inject_command",
    "run_injected",
    "upstream_env_name",
]
