"""The data plane: the sidecar proxy (inbound and outbound stacks, pools, balancer, admin)."""

from __future__ import annotations

from mesh.proxy._http import Limits
from mesh.proxy._server import BoundAddresses, Identity, Proxy, ProxySettings

__all__ = ["BoundAddresses", "Identity", "Limits", "Proxy", "ProxySettings"]
