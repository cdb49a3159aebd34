"""The ALPN protocol ids of mesh's mTLS connections (between proxies, and to the controller)."""

from __future__ import annotations

ALPN_HTTP1 = "http/1.1"
ALPN_H2 = "h2"
ALPN_TCP = "mesh-tcp"  # opaque streams: authorised at L4, detected again by the callee
# The admin pages over mTLS, for the controller and operators (never for services).
ALPN_ADMIN = "mesh-admin"
