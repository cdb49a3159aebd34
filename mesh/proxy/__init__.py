"""The data plane: the sidecar proxy (inbound and outbound stacks, pools, balancer, admin)."""

from __future__ import annotations

from mesh.proxy._exchange import Timeouts
from mesh.proxy._pool import ALPN_ADMIN
from mesh.proxy._server import BoundAddresses, Identity, Proxy, ProxySettings
from mesh.proxy._tls import TLSStream

__all__ = ["ALPN_ADMIN", "BoundAddresses", "Identity", "Timeouts", "Proxy", "ProxySettings", "TLSStream"]
