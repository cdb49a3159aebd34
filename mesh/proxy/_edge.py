"""The edge of the mesh, decided apart from its I/O (sans-IO: no trio, no sockets).

A gateway takes requests from outside clients; what it decides about each is here:

- ``EdgeRoutes``: which mesh service a request goes to, by host and path prefix
  (first match wins). After that the mesh's own routes, splits, retries and
  policies apply as on any hop (``OutboundRouter.to_service``).
- ``Forwarding``: what the app learns of the outside client — ``X-Forwarded-For``,
  ``-Proto`` and ``-Host`` — and which incoming values are believed: only those
  of peers in ``--trust-forwarded`` networks; anyone else's are dropped.
- ``ClientLimits``: connections and a request rate per client address, in bounded
  memory (the clock is a parameter).
- ``EdgeRouter``: the ``Router`` of one client connection, putting these together.
- ``redirect_location``: where the plain-HTTP redirect listener sends a client.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httptools

from mesh.proxy._exchange import Forward, Reason, Reject
from mesh.proxy._routing import OutboundRouter, declared_protocol, split_authority
from mesh.proxy.protocol.http1 import RequestHead

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Headers that say who the client is and how it came. From a peer that is not trusted they are
# dropped, all of them (an app may believe any one); the gateway sets the first three itself.
X_FORWARDED_FOR = b"x-forwarded-for"
X_FORWARDED_PROTO = b"x-forwarded-proto"
X_FORWARDED_HOST = b"x-forwarded-host"
UNTRUSTED_FORWARDING = frozenset(
    {X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, b"x-forwarded-port", b"forwarded", b"x-real-ip"}
)

DEFAULT_CLIENT_CONNECTIONS = 100  # open connections per client address (0: no limit)
# Per-client state kept at most for this many clients (least recently seen forgotten first):
# about 100 bytes each, so a scan from many addresses costs at most ~2 MB.
MAX_TRACKED_CLIENTS = 16384
# IPv6 clients are counted per /64: one host gets a whole /64, and would otherwise have 2^64 addresses.
IPV6_CLIENT_PREFIX = 64


# -- routes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeRoute:
    """Requests for ``host`` (None: any; ``*.example.com``: any name below it) whose path starts with
    ``path_prefix`` (None: any) go to ``service``."""

    service: str
    host: str | None = None
    path_prefix: str | None = None

    def matches(self, host: str, path: bytes) -> bool:
        pattern = self.host
        if pattern is not None:
            if pattern.startswith("*."):
                if not (host.endswith(pattern[1:]) and len(host) > len(pattern) - 1):
                    return False
            elif host != pattern:
                return False
        return self.path_prefix is None or path.startswith(self.path_prefix.encode())

    def describe(self) -> str:
        """``HOST[/PREFIX]=SERVICE``, as ``--route`` takes it."""
        return f"{self.host or '*'}{self.path_prefix or ''}={self.service}"


def parse_route(text: str) -> EdgeRoute:
    """``--route HOST[/PREFIX]=SERVICE`` (``*`` for any host); ValueError saying what is wrong."""
    from mesh.config import GATEWAY_HOST_RULE, SERVICE_NAME_RULE, is_valid_gateway_host, is_valid_service_name

    where, equals, service = text.rpartition("=")
    if not equals or not where:
        raise ValueError(f"expected HOST[/PREFIX]=SERVICE, e.g. shop.example/api=api, found {text!r}")
    host, slash, rest = where.partition("/")
    host = host.lower()
    if not is_valid_gateway_host(host):
        raise ValueError(f"{host!r} is not a host to route: use {GATEWAY_HOST_RULE}")
    if not is_valid_service_name(service):
        raise ValueError(f"{service!r} is not a service name: use {SERVICE_NAME_RULE}")
    prefix = "/" + rest if slash else None
    if prefix is not None and (" " in prefix or not prefix.isprintable()):
        raise ValueError(f"{prefix!r} is not a path prefix (no spaces or control characters)")
    return EdgeRoute(service, None if host == "*" else host, prefix)


class EdgeRoutes:
    """The gateway's route table: the first route that matches a request wins."""

    __slots__ = ("routes",)

    def __init__(self, routes: Sequence[EdgeRoute]) -> None:
        self.routes = tuple(routes)

    def match(self, host: str, path: bytes) -> EdgeRoute | None:
        for route in self.routes:
            if route.matches(host, path):
                return route
        return None

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(route.service for route in self.routes))


def request_host_and_path(head: RequestHead) -> tuple[str, bytes] | None:
    """The host a request names (lower-case, no port, no trailing dot; "" when it names none, as an
    HTTP/1.0 request may) and its origin-form target; None when the host is malformed. An
    absolute-form target wins over Host (RFC 9112 3.2.2)."""
    target = head.target
    authority: bytes | None
    lowered = target[:8].lower()
    if lowered.startswith(b"http://") or lowered.startswith(b"https://"):
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return None
        authority = b"[" + url.host + b"]" if url.host and b":" in url.host else url.host or b""
        path = (url.path or b"/") + (b"?" + url.query if url.query else b"")
    else:
        authority = head.header(b"host")
        if authority is None:
            return "", target
        path = target
    parts = split_authority(authority, 0)
    if parts is None:
        return None
    return parts[0].rstrip("."), path


# -- who the client is --------------------------------------------------------------------


class TrustedNetworks:
    """Peers whose ``X-Forwarded-*`` headers are believed (``--trust-forwarded CIDR``)."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(c, strict=True) for c in cidrs)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: IPAddress | None) -> bool:
        return address is not None and any(address.version == n.version and address in n for n in self.networks)


def parse_ip(text: str) -> IPAddress | None:
    """An address as a peer or an ``X-Forwarded-For`` entry gives it (``[v6]``, ``v4:port`` too)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(address: IPAddress) -> str:
    """What per-client limits count by: the address, or its /64 for IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class EdgeClient:
    """One client connection at the edge: the peer, how it came, and whether it is trusted."""

    peer: IPAddress
    scheme: bytes  # b"https" on the TLS listener, b"http" on a plain one
    networks: TrustedNetworks  # --trust-forwarded
    trusted: bool  # the peer is in ``networks``: its X-Forwarded-* are believed

    @classmethod
    def of(cls, peer: IPAddress, scheme: bytes, networks: TrustedNetworks) -> EdgeClient:
        return cls(peer, scheme, networks, peer in networks)

    def address(self, head: RequestHead | None) -> IPAddress:
        """The outside client of a request: the peer, or, when the peer is trusted, the last address of
        ``X-Forwarded-For`` that is not (walking from the right, as each trusted hop appended one)."""
        if not self.trusted or head is None:
            return self.peer
        return forwarded_client(self.peer, _forwarded_for(head), self.networks)


def _forwarded_for(head: RequestHead) -> list[bytes]:
    return [v for k, v in head.headers if k.lower() == X_FORWARDED_FOR]


def forwarded_client(peer: IPAddress, values: Sequence[bytes], trusted: TrustedNetworks) -> IPAddress:
    client = peer
    entries = [e for value in values for e in value.decode("latin-1").split(",")]
    for entry in reversed(entries):
        address = parse_ip(entry)
        if address is None:  # "unknown", obfuscated or garbage: the hop that added it is the client
            return client
        client = address
        if address not in trusted:
            return client
    return client


def forwarding_headers(
    client: EdgeClient, head: RequestHead, authority: bytes
) -> tuple[list[tuple[bytes, bytes]], frozenset[bytes]]:
    """(headers to add, headers to drop) for the app: who called, over what, for which host.

    From an untrusted peer every incoming forwarding header is dropped and the gateway's own are
    set. A trusted peer's ``X-Forwarded-For`` is kept with the peer appended, and its
    ``X-Forwarded-Proto``/``-Host`` are kept when present (it saw the client; we did not).
    """
    peer = str(client.peer).encode()
    if not client.trusted:
        return (
            [(X_FORWARDED_FOR, peer), (X_FORWARDED_PROTO, client.scheme), (X_FORWARDED_HOST, authority)],
            UNTRUSTED_FORWARDING,
        )
    chain = b", ".join(v.strip() for v in _forwarded_for(head) if v.strip())
    add = [(X_FORWARDED_FOR, chain + b", " + peer if chain else peer)]
    if head.header(X_FORWARDED_PROTO) is None:
        add.append((X_FORWARDED_PROTO, client.scheme))
    if head.header(X_FORWARDED_HOST) is None:
        add.append((X_FORWARDED_HOST, authority))
    return add, frozenset({X_FORWARDED_FOR})


# -- per-client limits --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Per client address: open connections (0: no limit) and requests per second with a burst
    (0: no limit; burst 0: one second's worth, at least 1)."""

    connections: int = DEFAULT_CLIENT_CONNECTIONS
    requests_per_second: float = 0.0
    burst: int = 0

    @property
    def bucket_size(self) -> int:
        return self.burst or max(1, math.ceil(self.requests_per_second))


class ClientLimits:
    """Connections and request rate per client key, in bounded memory.

    Connection counts exist only while a client has connections open (so they are bounded by the
    open connections). Token buckets are kept for at most ``max_clients`` clients, the least
    recently seen forgotten first: a forgotten client starts again with a full bucket, which is
    what it would have after a quiet second anyway at any rate worth setting.
    """

    __slots__ = ("settings", "max_clients", "_clock", "_open", "_buckets")

    def __init__(
        self,
        settings: LimitSettings,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.max_clients = max_clients
        self._clock = clock
        self._open: dict[str, int] = {}
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def rated(self) -> bool:
        """Whether requests are limited at all (else ``request`` need not be asked)."""
        return bool(self.settings.requests_per_second)

    @property
    def tracked(self) -> int:
        return len(self._buckets) + len(self._open)

    def connection_opened(self, key: str) -> bool:
        """Count a new connection of ``key``; False (not counted) when it has too many open."""
        limit = self.settings.connections
        count = self._open.get(key, 0)
        if limit and count >= limit:
            return False
        self._open[key] = count + 1
        return True

    def connection_closed(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def request(self, key: str) -> float | None:
        """Spend a token of ``key``'s bucket: None when the request may go, else the seconds until
        one may (for ``Retry-After``)."""
        rate = self.settings.requests_per_second
        if not rate:
            return None
        now = self._clock()
        size = self.settings.bucket_size
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(size), now]
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(float(size), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return None
        return (1.0 - bucket[0]) / rate


def retry_after(seconds: float) -> bytes:
    """``Retry-After`` in whole seconds, never 0 (RFC 9110 10.2.3)."""
    return b"%d" % max(1, math.ceil(seconds))


# -- the router of one edge connection ------------------------------------------------------


class EdgeRouter:
    """Outside client → mesh service: the edge's routes, the client's limits, forwarding headers,
    then the mesh's own routing (``mesh``: the gateway's ``OutboundRouter``)."""

    direction = "outbound"

    __slots__ = ("routes", "mesh", "client", "limits")

    def __init__(self, routes: EdgeRoutes, mesh: OutboundRouter, client: EdgeClient, limits: ClientLimits) -> None:
        self.routes = routes
        self.mesh = mesh
        self.client = client
        self.limits = limits

    def route(self, head: RequestHead) -> Forward | Reject:
        if head.method == b"CONNECT":
            return Reject(405, Reason.BAD_REQUEST, "the gateway does not carry CONNECT tunnels")
        wait = self.limits.request(client_key(self.client.address(head))) if self.limits.rated else None
        if wait is not None:
            return Reject(
                429,
                Reason.RATE_LIMITED,
                "too many requests from this client address; slow down",
                headers=((b"retry-after", retry_after(wait)),),
            )
        named = request_host_and_path(head)
        if named is None:
            return Reject(400, Reason.BAD_REQUEST, "the request names no valid host (Host header or absolute URL)")
        host, path = named
        route = self.routes.match(host, path)
        if route is None:
            return Reject(404, Reason.NO_ROUTE, f"no gateway route for host {host!r} and path {_show(path)!r}")
        decision = self.mesh.to_service(head, route.service, path)
        if isinstance(decision, Forward):
            authority = head.header(b"host") or host.encode()
            add, drop = forwarding_headers(self.client, head, authority)
            decision.add_headers = [*decision.add_headers, *add]
            decision.drop_headers = decision.drop_headers | drop
            decision.downgrade = head.http_version == b"2.0" and needs_http1(head, decision.candidates)
        return decision

    # The attempts of a request are the mesh router's business (retries, failover, feedback).

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        self.mesh.finished(forward, started, success)

    def requested(self, forward: Forward) -> None:
        self.mesh.requested(forward)

    def retry_to(self, forward: Forward) -> Forward | None:
        return self.mesh.retry_to(forward)

    def failover_to(self, forward: Forward) -> Forward | None:
        return self.mesh.failover_to(forward)


def needs_http1(head: RequestHead, endpoints: Sequence[Any]) -> bool:
    """Whether an HTTP/2 request goes on as HTTP/1.1: unless it is gRPC or the service's endpoints
    declare http2 or grpc, its app is taken to speak HTTP/1.1 (most apps; an h2c app declares it)."""
    if (head.header(b"content-type") or b"").startswith(b"application/grpc"):
        return False
    return declared_protocol(endpoints) not in ("http2", "grpc")


def _show(path: bytes) -> str:
    return path.partition(b"?")[0][:200].decode("latin-1")


# -- the plain-HTTP listener that only redirects ----------------------------------------------


def redirect_location(head: RequestHead, https_port: int) -> bytes | None:
    """``https://HOST[:PORT]/TARGET`` for a request to the redirect listener (the HTTPS listener's
    port, left out when it is 443); None when the request names no valid host name or address."""
    from mesh.config import is_valid_gateway_host

    named = request_host_and_path(head)
    if named is None or not named[1].startswith(b"/"):
        return None
    host, path = named
    if parse_ip(host) is not None:
        host = f"[{host}]" if ":" in host else host
    elif not host or host.startswith("*") or not is_valid_gateway_host(host):
        return None
    port = b"" if https_port == 443 else b":%d" % https_port
    return b"https://" + host.encode("ascii") + port + path
