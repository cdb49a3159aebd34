"""`mesh proxy`: the sidecar's listeners, composed top-down.

outbound (127.0.0.1)  app ──plain──▶ detect ─▶ HTTP/1 loop ─▶ OutboundRouter ─▶ mTLS pool ─▶ peer
                                   ─▶ h2 preface ─▶ HTTP/2 loop (_h2_server.py) ─▶ shared mTLS h2 connection ─▶ peer
--upstream SVC=PORT   app ──any────▶ detect ─▶ HTTP/1 loop, HTTP/2 loop, or opaque relay (mesh-tcp) ─▶ peer
inbound               peer ──mTLS──▶ ALPN http/1.1 ─▶ HTTP/1 loop ─▶ InboundRouter ─▶ app pool
                                   ─▶ ALPN h2 ─▶ HTTP/2 loop ─▶ InboundRouter ─▶ app over h2c
                                   ─▶ ALPN mesh-tcp ─▶ opaque relay ─▶ app
                                   ─▶ ALPN mesh-admin ─▶ admin pages (the controller, operators, hosts)
admin (loopback only) /metrics /ready /live /config /tap
a gateway: its edge listener (an --upstream listener, HTTP only), the admin server, and an mTLS
listener that serves only ALPN mesh-admin (``admin-mtls``), where the controller reads it

``Proxy`` is the one object that owns every listener, pool, router and the admin state, and its
methods are the composition drawn above (one per arrow); it stays whole so that the picture
and the code read in the same order. What it composes lives elsewhere: the loops (``_http``,
``_h2_server``), routing, identity (``_identity``), listening (``_listeners``), the edge.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import trio

from mesh import __version__
from mesh.net import ALPN_ADMIN, ALPN_H2, ALPN_TCP, FastSocketStream, TLSStream, receive_or_eof, relay_bytes
from mesh.proxy._admin import AdminApp, tap_handler
from mesh.proxy._balancer import Balancer
from mesh.proxy._drain import Drain
from mesh.proxy._exchange import (
    ConnectFailure,
    Failure,
    Reason,
    RequestRecord,
    Timeouts,
    UpstreamKey,
    mesh_error_response,
)
from mesh.proxy._export import Telemetry, TelemetrySettings
from mesh.proxy._h2_server import H2ProxyConnection
from mesh.proxy._h2_upstream import H2Pool
from mesh.proxy._http import HttpProxyConnection
from mesh.proxy._identity import Identity, PeerTLS
from mesh.proxy._listeners import (
    accept_loop,
    bound,
    close,
    first_words,
    fmt,
    listen,
    peer_address,
    reason_label,
)
from mesh.proxy._metrics import ProxyMetrics
from mesh.proxy._observe import observe
from mesh.proxy._policy import PolicyState
from mesh.proxy._pool import ConnectionPool, open_upstream, peer_socket
from mesh.proxy._revocation import PeerConnections
from mesh.proxy._routing import InboundRouter, OutboundRouter, declared_protocol, tcp_key_for
from mesh.proxy.protocol.detect import Mode, Protocol, detect, listener_mode
from mesh.telemetry import TapHub

log = logging.getLogger("mesh.proxy")

SERVER_SPEAKS_FIRST_AFTER = 1.0  # seconds of client silence before an ``auto`` stream is opaque


class Detected(NamedTuple):
    """What the first bytes of a connection said, and when its first request head is due."""

    prefix: bytes
    protocol: Protocol
    head_deadline: float


@dataclass(frozen=True)
class ProxySettings:
    service: str
    app: tuple[str, int] | None  # None: a gateway, which has no app behind it
    inbound: tuple[str, int] = ("127.0.0.1", 0)
    outbound: tuple[str, int] = ("127.0.0.1", 0)
    admin: tuple[str, int] = ("127.0.0.1", 0)
    endpoints_file: Path | None = None
    upstreams: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # service → local listen address
    labels: Mapping[str, str] = field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    protocol: str = "auto"  # what the app behind the inbound listener speaks
    reuse_port: bool = False  # data-plane listeners shared with other workers (SO_REUSEPORT, _workers.py)
    worker: int = 0  # which of `--workers N` this process is; worker 0 alone advertises and registers
    telemetry: TelemetrySettings = TelemetrySettings()  # spans and access logs (off unless set)
    gateway: Any = None  # a gateway's edge (mesh/proxy/_gateway.py GatewaySettings); its app is None


@dataclass
class BoundAddresses:
    inbound: tuple[str, int] | None  # None: a gateway (see Proxy.run)
    outbound: tuple[str, int] | None
    admin: tuple[str, int]
    upstreams: dict[str, tuple[str, int]]
    admin_mtls: tuple[str, int] | None = None  # a gateway's admin pages over mTLS (its only mTLS listener)

    @property
    def registered(self) -> tuple[str, int] | None:
        """The listener registered with the controller: where other proxies, or the controller
        reading a gateway's pages, dial this one."""
        return self.inbound or self.admin_mtls

    edge: dict[str, tuple[str, int]] = field(default_factory=dict)  # a gateway's: "listen https", "redirect"

    def describe(self) -> str:
        """``inbound H:P, outbound H:P, admin H:P, upstream SVC H:P...`` (the listeners there are)."""
        named = [("inbound", self.inbound), ("outbound", self.outbound), ("admin", self.admin)]
        named += [("admin-mtls", self.admin_mtls)]
        named += [(f"upstream {svc}", address) for svc, address in self.upstreams.items()]
        named += list(self.edge.items())
        return ", ".join(f"{name} {fmt(address)}" for name, address in named if address is not None)


class Proxy:
    def __init__(self, settings: ProxySettings, identity: Identity, registry: Any) -> None:
        self.settings = settings
        self.identity = identity
        self.registry = registry
        self.metrics = ProxyMetrics()
        self.tap = TapHub(on_drop=self.metrics.tap_dropped.inc)  # /tap listeners; idle costs one check
        self.metrics.tap_listeners.set_function(lambda: self.tap.listeners)
        self.metrics.cert_expiry.set_function(lambda: self.identity.creds.not_after.timestamp())
        self.balancer = Balancer()
        self.policy = PolicyState(identity.trust_domain)
        self.peers = PeerConnections()  # open mTLS connections by peer serial, cut when revoked
        base = os.environ.get("MESH_OUTLIER_EJECTION_SECONDS")  # tuning knob (tests shorten it)
        if base:
            self.policy.outliers.base = float(base)
        self.drain = Drain()
        peer_tls = PeerTLS(self)
        self.peer_pool = ConnectionPool(peer_tls, connect_timeout=5.0)
        self.app_pool = ConnectionPool(None, connect_timeout=5.0)
        # HTTP/2: one shared connection per upstream, streams multiplexed (mTLS ALPN h2 / h2c to the app).
        self.h2_peer_pool = H2Pool(peer_tls, connect_timeout=5.0)
        self.h2_app_pool = H2Pool(None, connect_timeout=5.0)
        self.app_key = UpstreamKey(settings.app[0], settings.app[1], None, None) if settings.app else None
        self.started = time.time()
        self.bound: BoundAddresses | None = None
        self.handle_signals = True
        self._stop = trio.Event()
        # Set once the app accepts connections: only then do we advertise and register.
        self.app_ready = trio.Event()
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []  # run before draining
        self.background: list[Callable[[], Awaitable[None]]] = []  # started once listening
        self.routes: list[dict[str, Any]] = []
        self.policies: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.control: Any = None  # ControlLink when a controller is known
        self.advertise_host: str | None = None
        self.zeroconf_instance: str | None = None  # the DNS-SD instance it advertises under, if any
        self._admin_over_mtls = self._admin_app(query_values=True)  # see _serve_admin_over_mtls
        # Tracing and access logs: None when neither is on, and then they cost nothing per request.
        self.telemetry: Telemetry | None = None
        if settings.telemetry.enabled:
            self.telemetry = Telemetry(
                settings.telemetry, self.metrics, settings.service, str(identity.creds.identity), dict(settings.labels)
            )
            self.background += self.telemetry.tasks
        self._admin_for_hosts = self._admin_app(query_values=False)
        self.gateway: Any = None  # the edge of a gateway (mesh/proxy/_gateway.py)
        if settings.gateway is not None:
            from mesh.proxy._gateway import Gateway

            self.gateway = Gateway(self, settings.gateway)

    def set_credentials(self, creds: Any, received_at: datetime | None = None) -> None:
        """Swap in a renewed certificate: new connections use it, open ones keep theirs."""
        self.identity = Identity(creds, received_at, self.identity.revoked)

    def apply_revocations(self, listed: Any) -> None:
        """The revoked serials of a snapshot: refused at every handshake from now on, and the
        open connections of newly revoked peers cut at once (docs/security.md, Revocation)."""
        from mesh.identity import serials_from

        identity = self.identity
        added = identity.revoked.replace(serials_from(listed))
        if not added:
            return
        if identity.serial in added:
            log.error(
                "this proxy's certificate (%s, %x) was revoked by an operator: every peer refuses it and the "
                "controller renews it no more; restart the service for a new certificate",
                identity.creds.identity,
                identity.serial,
            )
            cut = self.peers.cut_all()
        else:
            cut = self.peers.cut(added)
        log.warning(
            "%d certificate(s) revoked (%s): closed %d open connection(s) with them",
            len(added),
            ", ".join(f"{serial:x}" for serial in sorted(added)),
            cut,
        )
        self.metrics.revoked_closed.inc(cut)

    def apply_policy_snapshot(self, snapshot: dict[str, Any]) -> None:
        from mesh.errors import ConfigError

        self.apply_revocations(snapshot.get("revoked"))
        try:
            self.policy.update(snapshot)
        except (ConfigError, ValueError) as exc:  # the controller validated it; be safe anyway
            log.error("kept the previous policies: snapshot %s is invalid: %s", snapshot.get("version"), exc)
            return
        self.routes = list(snapshot.get("routes", []))
        self.policies = list(snapshot.get("policies", []))
        self.faults = list(snapshot.get("faults", []))

    def advertised_inbound(self) -> tuple[str, int]:
        """The inbound address peers should dial (a wildcard bind is not dialable); a gateway's
        admin-over-mTLS listener, which the controller dials."""
        assert self.bound is not None and self.bound.registered is not None
        host, port = self.bound.registered
        if self.advertise_host:
            host = self.advertise_host
        elif host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return host, port

    # -- listeners -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        # A gateway (no app) listens only where outside traffic comes in (its upstream listener):
        # an outbound listener would let any process of the host call every service as the
        # gateway, and nobody calls a gateway's inbound.
        gateway = s.app is None
        shared = s.reuse_port
        inbound = None if gateway else await listen(s.inbound, "inbound", shared)
        outbound = None if gateway else await listen(s.outbound, "outbound", shared)
        admin = await listen(s.admin, "admin")
        # A gateway's admin pages over mTLS: where a sidecar's inbound listener would be, ALPN mesh-admin only
        # (with --workers, worker 0's; the others', like their admin, on a port of their own).
        admin_mtls = await listen(s.inbound, "admin over mTLS") if gateway else None
        upstream_listeners = {
            svc: await listen(address, f"upstream {svc}", shared) for svc, address in s.upstreams.items()
        }
        edge_listeners = [
            (name, await listen(address, f"the gateway ({name})", shared), handler)
            for address, name, handler in (self.gateway.listeners() if self.gateway else ())
        ]
        self.bound = BoundAddresses(
            bound(inbound) if inbound else None,
            bound(outbound) if outbound else None,
            bound(admin),
            {svc: bound(listener) for svc, listener in upstream_listeners.items()},
            bound(admin_mtls) if admin_mtls else None,
            {name: bound(listener) for name, listener, _ in edge_listeners},
        )
        if self.gateway:
            self.gateway.bound(self.bound.edge)
            self.background.append(self.gateway.keep_certificates)
        listening = [self.bound.outbound, *self.bound.upstreams.values(), self.bound.inbound, self.bound.admin]
        own = {address for address in listening if address is not None}
        self.outbound_router = OutboundRouter(
            self.registry.endpoints,
            self.balancer,
            self.identity.trust_domain,
            s.timeouts.request_timeout,
            own,
            policy=self.policy,
        )
        admin_app = self._admin_app(query_values=False)

        async with trio.open_nursery() as system:
            if hasattr(self.registry, "run"):
                await system.start(self.registry.run)
            await system.start(self.h2_peer_pool.run)
            await system.start(self.h2_app_pool.run)
            async with trio.open_nursery() as connections:
                data_plane: list[tuple[Any, Callable[..., Awaitable[None]], tuple[Any, ...]]] = [
                    (inbound, self._serve_inbound, ()),
                    (outbound, self._serve_outbound, (None,)),
                    (admin_mtls, self._serve_inbound, ()),  # answers ALPN mesh-admin only, see there
                ]
                data_plane = [entry for entry in data_plane if entry[0] is not None]
                data_plane += [(listener, self._serve_outbound, (svc,)) for svc, listener in upstream_listeners.items()]
                data_plane += [(listener, handler, ()) for _, listener, handler in edge_listeners]
                accept_scopes = [
                    await connections.start(accept_loop, listener, connections, handler, args)
                    for listener, handler, args in data_plane
                ]
                # The admin server stays up while draining, answering /ready with 503.
                await system.start(accept_loop, admin, system, admin_app.serve_connection, ())
                task_status.started(self.bound)
                for task in self.background:
                    system.start_soon(task)
                # Signals are caught before "ready" is said: a SIGTERM sent on seeing it drains.
                signals = trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) if self.handle_signals else None
                with signals if signals is not None else contextlib.nullcontext() as received:
                    log.info("proxy %s ready: %s", s.service, self.bound.describe())
                    await self._wait_for_stop(received)
                # Withdraw first (peers stop picking us), then drain: stop accepting,
                # let in-flight requests end, then cut the rest.
                with trio.move_on_after(2):
                    for hook in self.shutdown_hooks:
                        await hook()
                log.info("draining (up to %gs)", s.timeouts.drain_timeout)
                for scope in accept_scopes:
                    scope.cancel()
                self.drain.start()
                connections.cancel_scope.deadline = trio.current_time() + s.timeouts.drain_timeout
            await self.peer_pool.aclose()
            await self.app_pool.aclose()
            system.cancel_scope.cancel()
        log.info("proxy %s stopped", s.service)

    def stop(self) -> None:
        """Begin a graceful shutdown (as SIGTERM does)."""
        self._stop.set()

    async def _wait_for_stop(self, signals: AsyncIterator[int] | None) -> None:
        async with trio.open_nursery() as nursery:

            async def on_signal(received: AsyncIterator[int]) -> None:
                async for signum in received:
                    log.info("received %s", signal.Signals(signum).name)
                    self._stop.set()
                    return

            if signals is not None:
                nursery.start_soon(on_signal, signals)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    # -- connection handlers -----------------------------------------------

    async def _serve_inbound(self, tcp: FastSocketStream) -> None:
        from mesh.identity import handshake_failure_reason, verified_peer

        metrics = self.metrics
        tls = TLSStream(tcp, self.identity.server, server_side=True)
        try:
            with trio.fail_after(self.settings.timeouts.head_timeout):
                await tls.do_handshake()
            peer = verified_peer(tls)
            caller = peer.identity
        except trio.TooSlowError:
            metrics.tls_failures.labels("inbound", "timeout").inc()
            await close(tcp)
            return
        except Exception as exc:  # noqa: BLE001 - every handshake failure is logged and counted
            reason = handshake_failure_reason(exc)
            metrics.tls_failures.labels("inbound", reason_label(reason)).inc()
            log.warning("inbound: refused a connection from %s: %s", peer_address(tcp), reason)
            await close(tcp)
            return
        self.peers.track(peer.serial, tcp.socket)
        if tls.selected_alpn_protocol() == ALPN_ADMIN:  # the controller, operators, hosts; never app traffic
            await self._serve_admin_over_mtls(tls, caller)
            return
        if self.app_key is None or caller.kind == "host":
            # A gateway has no app: its mTLS listener is for its admin pages only. A host identity
            # reads the mesh; it calls no service.
            if self.app_key is None:
                why = "a gateway serves only its admin pages over mTLS"
            else:
                why = "host identities call no service"
            alpn = tls.selected_alpn_protocol()
            log.warning("inbound: refused %s from %s (ALPN %s): %s", caller, peer_address(tcp), alpn, why)
            metrics.tls_failures.labels("inbound", "not-allowed").inc()
            await close(tls)
            return
        metrics.tcp_open.labels("inbound").inc()
        try:
            alpn = tls.selected_alpn_protocol()
            router = InboundRouter(
                self.app_key,
                str(caller),
                caller.name,
                self.settings.timeouts.request_timeout,
                service=self.settings.service,
                policy=self.policy,
            )
            if alpn != ALPN_TCP:
                protocol = Protocol.HTTP2 if alpn == ALPN_H2 else Protocol.HTTP1
                head_deadline = trio.current_time() + self.settings.timeouts.head_timeout
                await self._serve_http(tls, Detected(b"", protocol, head_deadline), router, caller, "inbound")
                return
            # Opaque bytes from a peer: authorised by the caller's identity before any reaches the
            # app; then, unless the app is declared tcp, what the bytes are is checked here again
            # (the caller's side guessed): HTTP is served as HTTP, policy and all.
            if not self._admit_tcp(caller, tcp):
                return
            mode = listener_mode(self.settings.protocol)
            if mode is Mode.OPAQUE:
                await self._relay_to(tls, b"", self.app_key, "inbound")
                return
            detected = await self._detect(tls, mode, "inbound")
            if detected is None:
                return
            if detected.protocol is not Protocol.OPAQUE:
                await self._serve_http(tls, detected, router, caller, "inbound")
            elif detected.prefix:  # the client spoke first, and not HTTP
                await self._relay_to(tls, detected.prefix, self.app_key, "inbound")
            else:  # a silent client: whoever speaks first decides
                await self._relay_first_speaker(tls, router, caller)
        finally:
            metrics.tcp_open.labels("inbound").dec()
            await close(tls)

    def _admit_tcp(self, caller: Any, tcp: FastSocketStream) -> bool:
        """L4 policy for an opaque stream: the caller's identity, and the policy's rate limit
        counted per connection. Denied: logged, counted, and not a byte reaches the app."""
        service = self.settings.service
        caller_id = str(caller)
        if self.policy.current.authorize(service, caller_id) and self.policy.admit(service, caller_id, None):
            return True
        self.metrics.tcp_denied.labels("inbound", caller.name).inc()
        log.warning(
            "inbound: refused an opaque TCP stream from %s (%s): the policy of %s does not allow it",
            caller_id,
            peer_address(tcp),
            service,
        )
        return False

    async def _relay_first_speaker(self, tls: TLSStream, router: InboundRouter, caller: Any) -> None:
        """A silent client on an ``auto`` service: the app speaking first makes it opaque (a
        server-speaks-first protocol); the client speaking first is detected again, so HTTP
        sent after a pause is still parsed, policed and stripped of forged headers."""
        assert self.app_key is not None
        try:
            app = await open_upstream(self.app_key, None, self.app_pool.connect_timeout)
        except ConnectFailure as exc:
            log.warning("inbound: TCP relay to %s failed: %s", self.app_key.address, exc.message)
            return
        try:
            client_said, app_said = await first_words(tls, app)
            if app_said is not None or not client_said or detect(client_said) is Protocol.OPAQUE:
                await self._count_relay(tls, app, client_said or b"", app_said or b"", "inbound")
                return
        finally:
            await close(app)  # for HTTP too: the HTTP loop takes pooled connections of its own
        detected = await self._detect(tls, Mode.HTTP, "inbound", client_said)
        if detected is not None:
            await self._serve_http(tls, detected, router, caller, "inbound")

    def _admin_app(self, *, query_values: bool) -> AdminApp:
        tap = tap_handler(self.tap, query_values=query_values)
        return AdminApp(self.metrics.render, self.config_view, lambda: not self.drain.draining, {b"/tap": tap})

    async def _serve_admin_over_mtls(self, tls: TLSStream, caller: Any) -> None:
        """The admin pages for the controller (its fan-in reads proxies on every host here, where the
        loopback admin server cannot be reached), for operators, and for joined hosts (`mesh check
        --proxy` there), which get query values redacted as on the loopback admin server; any other
        caller is refused."""
        from mesh.identity import CONTROLLER_SERVICE

        if caller.kind == "host":
            app = self._admin_for_hosts
        elif caller.kind == "operator" or (caller.kind == "svc" and caller.name == CONTROLLER_SERVICE):
            app = self._admin_over_mtls
        else:
            log.warning(
                "inbound: refused admin access (ALPN %s) to %s: only the controller, operators and hosts",
                ALPN_ADMIN,
                caller,
            )
            self.metrics.tls_failures.labels("inbound", "admin-not-allowed").inc()
            await close(tls)
            return
        try:
            await app.serve_connection(tls)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the reader went away
        finally:
            await close(tls)

    async def _serve_counted(self, conn: Any, direction: str) -> None:
        """Serve an HTTP/1 or HTTP/2 connection; its bytes are counted once it ends."""
        try:
            await conn.serve()
        finally:
            self.metrics.tcp_read.labels(direction).inc(conn.client.received)
            self.metrics.tcp_write.labels(direction).inc(conn.client.sent)

    def _outbound_router(self, fixed_service: str | None) -> OutboundRouter:
        """The shared router, or one pinned to the service of an --upstream listener."""
        if fixed_service is None:
            return self.outbound_router
        return OutboundRouter(
            self.registry.endpoints,
            self.balancer,
            self.identity.trust_domain,
            self.settings.timeouts.request_timeout,
            fixed_service=fixed_service,
            policy=self.policy,
            tunnels=self.settings.app is not None,  # the edge carries no CONNECT tunnels
        )

    async def _serve_outbound(self, stream: FastSocketStream, fixed_service: str | None) -> None:
        metrics = self.metrics
        metrics.tcp_open.labels("outbound").inc()
        try:
            mode = self._outbound_mode(fixed_service)
            if mode is Mode.OPAQUE:  # declared tcp: no detection, no wait (server-speaks-first works)
                await self._relay_to_service(stream, b"", fixed_service)
                return
            detected = await self._detect(stream, mode, "outbound")
            if detected is None:
                return
            if detected.protocol is Protocol.OPAQUE:
                await self._relay_to_service(stream, detected.prefix, fixed_service)
                return
            await self._serve_http(stream, detected, self._outbound_router(fixed_service), None, "outbound")
        finally:
            metrics.tcp_open.labels("outbound").dec()
            await close(stream)

    def _outbound_mode(self, fixed_service: str | None) -> Mode:
        """HTTP only on the shared outbound listener and on a gateway; an --upstream listener
        follows what its service's endpoints declare."""
        if fixed_service is None or self.settings.app is None:
            return Mode.HTTP
        return listener_mode(declared_protocol(self.registry.endpoints(fixed_service)))

    async def _serve_http(
        self, stream: trio.abc.Stream, detected: Detected, router: Any, caller: Any, direction: str
    ) -> None:
        timeouts = self.settings.timeouts
        router, record = observe(self, router, caller)
        inbound = direction == "inbound"
        conn: HttpProxyConnection | H2ProxyConnection
        if detected.protocol is Protocol.HTTP2:
            # Inbound, the app speaks h2c (prior knowledge); outbound, mTLS ALPN h2 per stream.
            h2_pool = self.h2_app_pool if inbound else self.h2_peer_pool
            conn = H2ProxyConnection(stream, detected.prefix, router, h2_pool, record, timeouts, self.drain)
            conn.http1_pool = self.app_pool if inbound else self.peer_pool
        else:
            pool = self.app_pool if inbound else self.peer_pool
            conn = HttpProxyConnection(stream, detected.prefix, router, pool, record, timeouts, self.drain)
            conn.head_deadline = detected.head_deadline
            if inbound:
                conn.peer_socket = peer_socket(stream)
        await self._serve_counted(conn, direction)

    async def _relay_to_service(self, stream: FastSocketStream, prefix: bytes, fixed_service: str | None) -> None:
        assert fixed_service is not None  # HTTP-only listeners never relay opaque bytes
        endpoints = self.registry.endpoints(fixed_service)
        if not endpoints:
            log.warning("outbound: no endpoints for %s; closing a TCP connection", fixed_service)
            return
        endpoint = self.balancer.choose(endpoints)
        await self._relay_to(
            stream, prefix, tcp_key_for(fixed_service, endpoint, self.identity.trust_domain), "outbound"
        )

    async def _detect(
        self, stream: trio.abc.Stream, mode: Mode, direction: str, prefix: bytes = b""
    ) -> Detected | None:
        """Read until the protocol is known; None when the connection is done (answered or gone).

        On an HTTP listener a client gets ``head_timeout`` for its first head from now: silence
        or a partial head is answered 408, bytes that are not HTTP 400. On an ``auto`` listener a
        client silent for ``SERVER_SPEAKS_FIRST_AFTER`` is opaque (the server may speak first),
        but one whose bytes started to look like HTTP is HTTP from then on, with the same deadline.
        """
        now = trio.current_time()
        head_deadline = now + self.settings.timeouts.head_timeout
        silence_deadline = now + SERVER_SPEAKS_FIRST_AFTER if mode is Mode.AUTO else head_deadline
        protocol = detect(prefix) if prefix else None
        while protocol is None:
            data = None
            with trio.move_on_at(head_deadline if prefix else silence_deadline):
                data = await receive_or_eof(stream)
            if data is None:  # the deadline passed
                if mode is Mode.AUTO and not prefix:
                    return Detected(b"", Protocol.OPAQUE, head_deadline)
                await self._answer_local(
                    stream, direction, Failure(Reason.HEAD_TIMEOUT, 408, "request head not received in time")
                )
                return None
            if not data:  # the client closed (or half-closed)
                if prefix or mode is Mode.HTTP:
                    return None
                return Detected(b"", Protocol.OPAQUE, head_deadline)
            prefix += data
            protocol = detect(prefix)
        if protocol is Protocol.OPAQUE and mode is Mode.HTTP:
            await self._answer_local(
                stream, direction, Failure(Reason.BAD_REQUEST, 400, "this listener speaks HTTP only")
            )
            return None
        return Detected(prefix, protocol, head_deadline)

    async def _answer_local(self, stream: trio.abc.Stream, direction: str, failure: Failure) -> None:
        """A mesh-made HTTP/1 answer before any request was read; the caller then closes."""
        self.metrics.record(RequestRecord(direction, "", b"", b"", b"", failure.status, 0.0, failure.reason))
        with trio.move_on_after(1):
            try:
                await stream.send_all(mesh_error_response(failure, keep_alive=False))
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                pass

    async def _relay_to(self, client: trio.abc.Stream, prefix: bytes, key: UpstreamKey, direction: str) -> None:
        pool = self.peer_pool if key.alpn else self.app_pool
        try:
            upstream = await open_upstream(key, pool.contexts, pool.connect_timeout)
        except ConnectFailure as exc:
            log.warning("%s: TCP relay to %s failed: %s", direction, key.address, exc.message)
            return
        try:
            await self._count_relay(client, upstream, prefix, b"", direction)
        finally:
            await close(upstream)

    async def _count_relay(
        self,
        client: trio.abc.Stream,
        upstream: trio.abc.Stream,
        client_first: bytes,
        upstream_first: bytes,
        direction: str,
    ) -> None:
        sent, received = await relay_bytes(client, upstream, client_first, upstream_first)
        self.metrics.tcp_read.labels(direction).inc(sent)
        self.metrics.tcp_write.labels(direction).inc(received)

    # -- admin views ---------------------------------------------------------

    def config_view(self) -> dict[str, Any]:
        bound = self.bound
        snapshot = {
            svc: [
                {"address": e.address, "identity": e.identity, "labels": dict(e.labels)}
                for e in self.registry.endpoints(svc)
            ]
            for svc in sorted(self.registry.services())
        }
        creds = self.identity.creds
        return {
            "service": self.settings.service,
            "version": __version__,
            "identity": str(creds.identity),
            "certificate_expiry": creds.not_after.isoformat(),
            "labels": dict(self.settings.labels),
            "app": fmt(self.settings.app) if self.settings.app else None,
            "listeners": {
                "inbound": fmt(bound.inbound) if bound and bound.inbound else None,
                "outbound": fmt(bound.outbound) if bound and bound.outbound else None,
                "admin": fmt(bound.admin) if bound else None,
                "admin_mtls": fmt(bound.admin_mtls) if bound and bound.admin_mtls else None,
                "upstreams": {k: fmt(v) for k, v in bound.upstreams.items()} if bound else {},
            },
            "endpoints": snapshot,
            "registry_version": getattr(self.registry, "version", 0),
            "controller": self.control.describe() if self.control else None,
            "routes": self.routes,
            "policies": self.policies,
            "faults": self.faults,
            "gateway": self.gateway.view() if self.gateway else None,
            "draining": self.drain.draining,
            "telemetry": self.telemetry.describe() if self.telemetry is not None else None,
            "uptime_seconds": round(time.time() - self.started, 1),
        }
