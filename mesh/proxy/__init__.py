"""The data plane: the sidecar proxy (inbound and outbound stacks, pools, balancer, admin).

The names below load on first use: the controller and the dashboard read HTTP/1 with
``mesh.proxy.protocol`` and must not pay for the whole proxy to do so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.proxy._exchange import Timeouts
    from mesh.proxy._server import BoundAddresses, Identity, Proxy, ProxySettings

__all__ = ["BoundAddresses", "Identity", "Proxy", "ProxySettings", "Timeouts"]


def __getattr__(name: str) -> Any:
    if name == "Timeouts":
        from mesh.proxy._exchange import Timeouts

        return Timeouts
    if name in __all__:
        from mesh.proxy import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
