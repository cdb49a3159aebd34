"""Where a request goes: the outbound and inbound routers (decisions, no I/O)."""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import httptools

from mesh.net import ALPN_HTTP1, ALPN_TCP
from mesh.proxy._balancer import Balancer
from mesh.proxy._exchange import Forward, Reason, Reject, UpstreamKey, new_request_id
from mesh.proxy._policy import Fault, PolicyState, choose_subset, in_subset
from mesh.proxy.protocol.http1 import RequestHead

log = logging.getLogger("mesh.proxy")

CLIENT_ID_HEADER = b"mesh-client-id"
REQUEST_ID_HEADER = b"x-request-id"
MESH_SUFFIX = ".mesh"


@functools.lru_cache(maxsize=4096)
def split_authority(authority: bytes, default_port: int) -> tuple[str, int] | None:
    """``host[:port]`` (IPv6 in brackets) → (host, port); None when malformed."""
    text = authority.decode("latin-1").strip()
    if not text:
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        return None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            return None
        return host.lower(), int(port_text)
    return host.lower(), default_port


@functools.lru_cache(maxsize=4096)
def mesh_service_name(host: str) -> tuple[str, bool]:
    """(service name, whether ``host`` can only mean a mesh service).

    ``web.mesh`` is always a mesh name. A single label such as ``web`` is one
    too (except ``localhost``): laptops and racks do not serve plain HTTP on
    single-label host names through a sidecar. Anything with a dot, or an IP
    address, may be egress.
    """
    if host.endswith(MESH_SUFFIX):
        return host[: -len(MESH_SUFFIX)], True
    if "." in host or ":" in host or host == "localhost":
        return host, False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, True
    return host, False


class OutboundRouter:
    """App → mesh. Mesh services go to a peer proxy over mTLS; other hosts go out directly."""

    direction = "outbound"

    def __init__(
        self,
        endpoints: Callable[[str], tuple[Any, ...]],  # Registry.endpoints
        balancer: Balancer,
        trust_domain: str,
        timeout: float,
        own_addresses: Collection[tuple[str, int]] = (),
        fixed_service: str | None = None,
        policy: PolicyState | None = None,
        tunnels: bool = True,
    ) -> None:
        self._endpoints = endpoints
        self._balancer = balancer
        self._trust_domain = trust_domain
        self._timeout = timeout
        self._own = set(own_addresses)
        self.fixed_service = fixed_service
        self.policy = policy or PolicyState(trust_domain)
        self.tunnels = tunnels  # CONNECT: on for apps' listeners, off at the edge (a gateway)
        self._keys: dict[tuple[Any, str], UpstreamKey] = {}

    def route(self, head: RequestHead) -> Forward | Reject:
        target = head.target
        connect = head.method == b"CONNECT"
        if connect and not self.tunnels:
            return Reject(405, Reason.BAD_REQUEST, "this listener does not carry CONNECT tunnels")
        if connect:
            authority, path = target, b""
            default_port = 443
        elif target.startswith(b"http://"):
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                return Reject(400, Reason.BAD_REQUEST, "invalid request target")
            host = b"[" + url.host + b"]" if b":" in url.host else url.host
            authority = host + (b":%d" % url.port if url.port is not None else b"")
            path = (url.path or b"/") + (b"?" + url.query if url.query else b"")
            default_port = 80
        elif target.startswith(b"https://"):
            return Reject(
                400, Reason.BAD_REQUEST, "an https:// URL cannot be proxied as plain HTTP; clients use CONNECT for it"
            )
        else:
            authority = head.header(b"host") or b""
            path = target
            default_port = 80

        if self.fixed_service is not None:
            service, is_mesh = self.fixed_service, True
            host_port: tuple[str, int] | None = None
        else:
            host_port = split_authority(authority, default_port)
            if host_port is None:
                return Reject(
                    400, Reason.BAD_REQUEST, "request has no valid host to route to (Host header or absolute URL)"
                )
            service, is_mesh = mesh_service_name(host_port[0])

        endpoints = self._endpoints(service)
        if endpoints:
            return self._to_mesh(head, service, path, endpoints, connect)
        if is_mesh:
            return Reject(503, Reason.NO_ENDPOINTS, f"no endpoints for service {service!r}", service)
        assert host_port is not None
        if _normalise_loopback(host_port) in self._own:
            return Reject(400, Reason.LOOP, "request addressed to this proxy itself")
        return Forward(
            UpstreamKey(host_port[0], host_port[1], None, None),
            "egress",
            path,
            add_headers=self._request_id(head),
            timeout=self._timeout,
            tunnel=connect,
        )

    def to_service(self, head: RequestHead, service: str, path: bytes) -> Forward | Reject:
        """A request the gateway's own routes sent to ``service``: the mesh's routes, splits,
        faults and outlier ejection apply as on any hop."""
        endpoints = self._endpoints(service)
        if not endpoints:
            return Reject(503, Reason.NO_ENDPOINTS, f"no endpoints for service {service!r}", service)
        return self._to_mesh(head, service, path, endpoints, False)

    def _to_mesh(
        self, head: RequestHead, service: str, path: bytes, endpoints: tuple[Any, ...], connect: bool
    ) -> Forward | Reject:
        """Route (first match), fault, split subset, outlier ejection, then one endpoint."""
        state = self.policy
        policies = state.current
        route = None
        if policies.routes.get(service) and not connect:
            headers = {k.lower(): v for k, v in head.headers}
            route = policies.route_for(service, head.method, path, headers)
        fault = policies.faults.get(service)
        if fault is None and route is not None and route.config.fault is not None:
            f = route.config.fault
            fault = Fault(f.delay, f.delay_percent, f.abort_status, f.abort_percent)
        delay = 0.0
        if fault is not None:
            delay, abort = fault.decide(state.rng)
            if abort is not None:
                return Reject(abort, Reason.FAULT_INJECTED, f"fault injected for {service} by mesh policy", service)
        subset = choose_subset(route, state.rng) if route is not None else None
        candidates = in_subset(endpoints, subset) if subset else endpoints
        if not candidates:
            wanted = ",".join(f"{k}={v}" for k, v in (subset or {}).items())
            return Reject(503, Reason.NO_ENDPOINTS, f"no endpoints of {service!r} with {wanted}", service)
        healthy = state.outliers.available(candidates)
        if not healthy:
            if all(state.outliers.down(e.address) for e in candidates):
                return Reject(
                    503,
                    Reason.NO_HEALTHY_ENDPOINTS,
                    f"no endpoint of {service!r} accepts connections now (it is tried again shortly)",
                    service,
                )
            return Reject(503, Reason.CIRCUIT_OPEN, f"every endpoint of {service!r} is ejected after failures", service)
        endpoint = self._balancer.choose(healthy)
        self._balancer.start(endpoint.address)
        key = self._key(endpoint, service, ALPN_TCP if connect else ALPN_HTTP1)
        return Forward(
            key,
            service,
            path,
            add_headers=self._request_id(head),
            timeout=route.config.timeout if route is not None else self._timeout,
            endpoint=endpoint.address,
            tunnel=connect,
            route=route.name if route is not None else None,
            retry=route.config.retries if route is not None and route.config.retries.attempts else None,
            candidates=tuple(healthy) if not isinstance(healthy, tuple) else healthy,
            delay=delay,
        )

    def _key(self, endpoint: Any, service: str, alpn: str) -> UpstreamKey:
        """The pool key of ``endpoint``, kept per endpoint (a frozen dataclass and an f-string per request showed)."""
        cache_key = (endpoint, alpn)
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) > 4096:  # endpoints come and go: never grow without bound
                self._keys.clear()
            identity = endpoint.identity or f"spiffe://{self._trust_domain}/svc/{service}"
            key = self._keys[cache_key] = UpstreamKey(endpoint.host, endpoint.port, alpn, identity)
        return key

    def retry_to(self, forward: Forward) -> Forward | None:
        """Another attempt for the failed ``forward``, on another endpoint when there is one, within the budget."""
        if forward.retry is None or not self.policy.budget(forward.peer_service, forward.retry).try_withdraw():
            return None
        self._failed(forward)
        healthy = self.policy.outliers.available(forward.candidates)
        others = [e for e in healthy if e.address != forward.endpoint]
        return self._attempt_on(forward, others or healthy or forward.candidates)

    def failover_to(self, forward: Forward) -> Forward | None:
        """After a failure to connect (nothing was sent), another endpoint, if the service has one.

        Outside retry policies and budgets: the request never left, so sending it elsewhere is
        always safe — a dead or foreign endpoint costs a caller one failed handshake, not an error.
        """
        if forward.endpoint is not None:
            self.policy.outliers.unreachable(forward.endpoint)  # its next callers go elsewhere, or get a fast 503
        others = [e for e in self.policy.outliers.available(forward.candidates) if e.address != forward.endpoint]
        if not others:
            return None
        self._failed(forward)
        return self._attempt_on(forward, others)

    def _failed(self, forward: Forward) -> None:
        """An attempt given up for another: a failure for outlier detection, and no latency sample
        (its time says nothing of the endpoint's speed)."""
        if forward.endpoint is not None:
            self._balancer.abandon(forward.endpoint)
            self._record_outcome(forward, success=False)

    def _attempt_on(self, forward: Forward, endpoints: Sequence[Any]) -> Forward:
        endpoint = self._balancer.choose(endpoints)
        self._balancer.start(endpoint.address)
        key = self._key(endpoint, forward.peer_service, forward.key.alpn)  # type: ignore[arg-type]
        return replace(forward, key=key, endpoint=endpoint.address, delay=0.0)

    def requested(self, forward: Forward) -> None:
        """One effective request (retries spend budget earned by these)."""
        if forward.retry is not None:
            self.policy.budget(forward.peer_service, forward.retry).record_request()

    @staticmethod
    def _request_id(head: RequestHead) -> list[tuple[bytes, bytes]]:
        if head.header(REQUEST_ID_HEADER) is None:
            return [(b"x-request-id", new_request_id())]
        return []

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        if forward.endpoint is None:
            return
        if success is None:  # the client went away: no latency sample, no strike
            self._balancer.abandon(forward.endpoint)
            return
        self._balancer.finish(forward.endpoint, started, success)
        self._record_outcome(forward, success)

    def _record_outcome(self, forward: Forward, success: bool) -> None:
        if forward.endpoint is not None and forward.candidates:
            if self.policy.outliers.record(forward.endpoint, success, forward.candidates):
                log.warning("ejected %s of %s after consecutive failures", forward.endpoint, forward.peer_service)


def _normalise_loopback(host_port: tuple[str, int]) -> tuple[str, int]:
    host, port = host_port
    return ("127.0.0.1", port) if host in ("localhost", "127.0.0.1") else host_port


class InboundRouter:
    """Peer proxy → local app, telling the app who called."""

    direction = "inbound"

    def __init__(
        self,
        app: UpstreamKey,
        caller_id: str,
        caller_service: str,
        timeout: float,
        service: str = "",
        policy: PolicyState | None = None,
    ) -> None:
        self._app = app
        self._caller_id = caller_id
        self._caller = [(b"mesh-client-id", caller_id.encode())]
        self._caller_service = caller_service
        self._timeout = timeout
        self._service = service
        self._policy = policy

    def route(self, head: RequestHead) -> Forward | Reject:
        target = head.target
        if head.method == b"CONNECT":
            # Callers' proxies carry CONNECT tunnels as opaque streams (ALPN mesh-tcp), policed and
            # detected as such; an HTTP CONNECT arriving here would be a raw pipe to the app.
            return Reject(405, Reason.BAD_REQUEST, "CONNECT is not accepted from peers", self._caller_service)
        if target.startswith(b"http://") or target.startswith(b"https://"):
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                return Reject(400, Reason.BAD_REQUEST, "invalid request target")
            target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
        state = self._policy
        if state is not None:
            # The callee decides who may call it, and how fast: enforced here, not at the caller.
            if not state.current.authorize(self._service, self._caller_id):
                return Reject(
                    403, Reason.FORBIDDEN, f"{self._caller_id} may not call {self._service}", self._caller_service
                )
            route = None
            if state.current.routes.get(self._service):
                headers = {k.lower(): v for k, v in head.headers}
                route = state.current.route_for(self._service, head.method, target, headers)
            if not state.admit(self._service, self._caller_id, route):
                return Reject(429, Reason.RATE_LIMITED, f"rate limit of {self._service} reached", self._caller_service)
        return Forward(
            self._app,
            self._caller_service,
            target,
            add_headers=self._caller,
            drop_headers=frozenset({CLIENT_ID_HEADER}),
            timeout=self._timeout,
        )

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        pass

    def requested(self, forward: Forward) -> None:
        pass

    def retry_to(self, forward: Forward) -> Forward | None:
        return None  # the caller's proxy retries; the callee's never multiplies them

    def failover_to(self, forward: Forward) -> Forward | None:
        return None  # one app behind an inbound proxy: nowhere else to go


def declared_protocol(endpoints: Sequence[Any]) -> str:
    """The protocol a service's endpoints declare, when they agree; else (or with none) "auto"."""
    protocols = {getattr(e, "protocol", "auto") for e in endpoints}
    return protocols.pop() if len(protocols) == 1 else "auto"


def tcp_key_for(service: str, endpoint: object, trust_domain: str) -> UpstreamKey:
    identity = getattr(endpoint, "identity", None) or f"spiffe://{trust_domain}/svc/{service}"
    return UpstreamKey(endpoint.host, endpoint.port, ALPN_TCP, identity)  # type: ignore[attr-defined]
