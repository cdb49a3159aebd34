"""The data plane: the sidecar proxy (inbound and outbound stacks, pools, balancer, admin).

The names below load on first use: the controller and the dashboard read HTTP/1 with
``mesh.proxy.protocol``, and the CLI parses options with ``ProxyOptions``; neither should pay
for the whole proxy to do so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.proxy._exchange import (
        Timeouts as Timeouts,
    )
    from mesh.proxy._gateway import (
        gateway_settings as gateway_settings,
    )
    from mesh.proxy._identity import (
        Identity as Identity,
    )
    from mesh.proxy._main import (
        ProxyOptions as ProxyOptions,
        build_proxy as build_proxy,
        parse_listen_address as parse_listen_address,
        run_in_workers as run_in_workers,
        run_proxy_command as run_proxy_command,
        settings_from as settings_from,
        telemetry_settings as telemetry_settings,
    )
    from mesh.proxy._options import (
        SIDECAR_OPTIONS as SIDECAR_OPTIONS,
        SidecarOption as SidecarOption,
        proxy_fields as proxy_fields,
        sidecar_interfaces as sidecar_interfaces,
        sidecar_option as sidecar_option,
        sidecar_options as sidecar_options,
    )
    from mesh.proxy._server import (
        BoundAddresses as BoundAddresses,
        Proxy as Proxy,
        ProxySettings as ProxySettings,
    )

_WHERE = {
    "BoundAddresses": "_server",
    "Identity": "_identity",
    "Proxy": "_server",
    "ProxySettings": "_server",
    "Timeouts": "_exchange",
    "gateway_settings": "_gateway",
    "SIDECAR_OPTIONS": "_options",
    "SidecarOption": "_options",
    "proxy_fields": "_options",
    "sidecar_interfaces": "_options",
    "sidecar_option": "_options",
    "sidecar_options": "_options",
    "ProxyOptions": "_main",
    "build_proxy": "_main",
    "parse_listen_address": "_main",
    "run_in_workers": "_main",
    "run_proxy_command": "_main",
    "settings_from": "_main",
    "telemetry_settings": "_main",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"mesh.proxy.{module}"), name)
