"""The data plane: the sidecar proxy (inbound and outbound stacks, pools, balancer, admin)."""

from __future__ import annotations

from mesh.proxy._http import Limits
from mesh.proxy._pool import ALPN_ADMIN
from mesh.proxy._server import BoundAddresses, Identity, Proxy, ProxySettings
from mesh.proxy._tls import TLSStream

__all__ = ["ALPN_ADMIN", "BoundAddresses", "Identity", "Limits", "Proxy", "ProxySettings", "TLSStream"]
