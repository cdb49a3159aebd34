"""What an injected app is told (pure): its port, its proxy, its upstreams."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from mesh.errors import ProxyError


def upstream_env_name(service: str) -> str:
    return "MESH_UPSTREAM_" + re.sub(r"[^A-Z0-9]", "_", service.upper()) + "_URL"


def build_app_env(
    base: Mapping[str, str],
    *,
    service: str,
    port: int,
    outbound: tuple[str, int],
    upstreams: Mapping[str, tuple[str, int]],
    labels: Mapping[str, str],
) -> dict[str, str]:
    proxy_url = f"http://{outbound[0]}:{outbound[1]}"
    env = dict(base)
    env.update(
        {
            "PORT": str(port),
            "HTTP_PROXY": proxy_url,
            "http_proxy": proxy_url,
            # Local calls (its own port, other local tools) do not loop through the sidecar.
            "NO_PROXY": "localhost,127.0.0.1,::1",
            "no_proxy": "localhost,127.0.0.1,::1",
            "MESH_SERVICE": service,
        }
    )
    for name, (host, local_port) in upstreams.items():
        env[upstream_env_name(name)] = f"http://{host}:{local_port}"
    for key, value in labels.items():
        env["MESH_LABEL_" + re.sub(r"[^A-Z0-9]", "_", key.upper())] = value
    return env


def default_service_name(command: Sequence[str]) -> str:
    """A service name from the command: `python -m http.server` → `http-server`, `./api` → `api`."""
    if not command:
        raise ProxyError("no command to run", hint="mesh inject [options] -- CMD ARGS...")
    name = os.path.basename(command[0])
    if "-m" in command[:-1] and re.match(r"python[0-9.]*$", name):
        name = command[command.index("-m") + 1]
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    if not name:
        raise ProxyError(f"cannot make a service name from {command[0]!r}", hint="pass --name NAME")
    return name


def parse_upstreams(items: Sequence[str]) -> dict[str, int]:
    """`ratings` (any free port) or `ratings=9001`."""
    from mesh.config import SERVICE_NAME_RULE, is_valid_service_name

    upstreams: dict[str, int] = {}
    for item in items:
        name, _, port = item.partition("=")
        name = name.strip()
        if not is_valid_service_name(name):
            raise ProxyError(f"--upstream: invalid service name {name!r}", hint=f"use {SERVICE_NAME_RULE}")
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ProxyError(f"--upstream {item}: invalid port", hint="SVC or SVC=PORT with a port 1-65535")
        upstreams[name] = int(port) if port else 0
    return upstreams
