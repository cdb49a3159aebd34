"""`mesh proxy`: the sidecar's listeners, composed top-down.

    outbound (127.0.0.1)  app ──plain──▶ detect ─▶ HTTP/1 loop ─▶ OutboundRouter ─▶ mTLS pool ─▶ peer
                                       ─▶ h2 preface ─▶ HTTP/2 loop (_h2.py) ─▶ shared mTLS h2 connection ─▶ peer
    --upstream SVC=PORT   app ──any────▶ detect ─▶ HTTP/1 loop, HTTP/2 loop, or opaque relay (mesh-tcp) ─▶ peer
    inbound               peer ──mTLS──▶ ALPN http/1.1 ─▶ HTTP/1 loop ─▶ InboundRouter ─▶ app pool
                                       ─▶ ALPN h2 ─▶ HTTP/2 loop ─▶ InboundRouter ─▶ app over h2c
                                       ─▶ ALPN mesh-tcp ─▶ opaque relay ─▶ app
    admin                 /metrics /ready /live /config /tap
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
from pathlib import Path
from typing import Any

import trio

from mesh import __version__
from mesh.errors import ProxyError
from mesh.proxy._admin import AdminApp, tap_handler
from mesh.proxy._balancer import Balancer
from mesh.proxy._conn import relay_bytes
from mesh.proxy._http import Drain, HttpProxyConnection, Limits
from mesh.proxy._metrics import ProxyMetrics
from mesh.proxy._policy import PolicyState
from mesh.proxy._observe import recorder
from mesh.proxy._h2 import H2Pool, H2ProxyConnection
from mesh.proxy._pool import ALPN_H2, ALPN_HTTP1, ALPN_TCP, ConnectionPool, UpstreamConnectError, UpstreamKey, open_upstream
from mesh.proxy._routing import InboundRouter, OutboundRouter, tcp_key_for
from mesh.proxy._socket import FastSocketStream
from mesh.proxy._tls import TLSStream
from mesh.proxy.protocol.detect import Protocol, detect
from mesh.telemetry import TapHub

log = logging.getLogger("mesh.proxy")

SERVER_SPEAKS_FIRST_AFTER = 1.0  # seconds of client silence on an --upstream listener


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
    limits: Limits = Limits()


class Identity:
    """The proxy's current credentials and the TLS contexts built from them."""

    def __init__(self, creds: Any) -> None:
        from mesh.identity import client_context, server_context

        self.creds = creds
        self.server = server_context(creds, alpn=(ALPN_HTTP1, ALPN_TCP, ALPN_H2))
        self._clients = {alpn: client_context(creds, alpn=(alpn,)) for alpn in (ALPN_HTTP1, ALPN_TCP, ALPN_H2)}

    def client(self, alpn: str) -> ssl.SSLContext:
        return self._clients[alpn]

    @property
    def trust_domain(self) -> str:
        return self.creds.identity.trust_domain


@dataclass
class BoundAddresses:
    inbound: tuple[str, int]
    outbound: tuple[str, int]
    admin: tuple[str, int]
    upstreams: dict[str, tuple[str, int]]


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
        base = os.environ.get("MESH_OUTLIER_EJECTION_SECONDS")  # tuning knob (tests shorten it)
        if base:
            self.policy.outliers.base = float(base)
        self.drain = Drain()
        # The provider reads self.identity at each connect, so a renewed certificate is used at once.
        self.peer_pool = ConnectionPool(lambda alpn: self.identity.client(alpn), connect_timeout=5.0)
        self.app_pool = ConnectionPool(None, connect_timeout=5.0)
        # HTTP/2: one shared connection per upstream, streams multiplexed (mTLS ALPN h2 / h2c to the app).
        self.h2_peer_pool = H2Pool(lambda alpn: self.identity.client(alpn), connect_timeout=5.0)
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

    def set_credentials(self, creds: Any) -> None:
        """Swap in a renewed certificate: new connections use it, open ones keep theirs."""
        self.identity = Identity(creds)

    def apply_policy_snapshot(self, snapshot: dict[str, Any]) -> None:
        from mesh.errors import ConfigError

        try:
            self.policy.update(snapshot)
        except (ConfigError, ValueError) as exc:  # the controller validated it; be safe anyway
            log.error("kept the previous policies: snapshot %s is invalid: %s", snapshot.get("version"), exc)
            return
        self.routes = list(snapshot.get("routes", []))
        self.policies = list(snapshot.get("policies", []))
        self.faults = list(snapshot.get("faults", []))

    def advertised_inbound(self) -> tuple[str, int]:
        """The inbound address peers should dial (a wildcard bind is not dialable)."""
        assert self.bound is not None
        host, port = self.bound.inbound
        if self.advertise_host:
            host = self.advertise_host
        elif host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return host, port

    # -- listeners -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        inbound = await _listen(s.inbound, "inbound")
        outbound = await _listen(s.outbound, "outbound")
        admin = await _listen(s.admin, "admin")
        upstream_listeners = {svc: await _listen(address, f"upstream {svc}") for svc, address in s.upstreams.items()}
        self.bound = BoundAddresses(
            _bound(inbound), _bound(outbound), _bound(admin), {svc: _bound(l) for svc, l in upstream_listeners.items()}
        )
        own = {self.bound.outbound, *self.bound.upstreams.values(), self.bound.inbound, self.bound.admin}
        self.outbound_router = OutboundRouter(
            self.registry.endpoints, self.balancer, self.identity.trust_domain, s.limits.request_timeout, own, policy=self.policy
        )
        admin_app = AdminApp(
            self.metrics.render, self.config_view, lambda: not self.drain.draining, {b"/tap": tap_handler(self.tap)}
        )

        async with trio.open_nursery() as system:
            if hasattr(self.registry, "run"):
                await system.start(self.registry.run)
            await system.start(self.h2_peer_pool.run)
            await system.start(self.h2_app_pool.run)
            async with trio.open_nursery() as connections:
                data_plane = [(inbound, self._serve_inbound, ()), (outbound, self._serve_outbound, (None,))]
                data_plane += [(l, self._serve_outbound, (svc,)) for svc, l in upstream_listeners.items()]
                accept_scopes = [
                    await connections.start(_accept_loop, listener, connections, handler, args)
                    for listener, handler, args in data_plane
                ]
                # The admin server stays up while draining, answering /ready with 503.
                await system.start(_accept_loop, admin, system, admin_app.serve_connection, ())
                task_status.started(self.bound)
                for task in self.background:
                    system.start_soon(task)
                # Signals are caught before "ready" is said: a SIGTERM sent on seeing it drains.
                signals = trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) if self.handle_signals else None
                with signals if signals is not None else contextlib.nullcontext() as received:
                    log.info(
                        "proxy %s ready: inbound %s, outbound %s, admin %s%s",
                        s.service,
                        _fmt(self.bound.inbound),
                        _fmt(self.bound.outbound),
                        _fmt(self.bound.admin),
                        "".join(f", upstream {k} {_fmt(v)}" for k, v in self.bound.upstreams.items()),
                    )
                    await self._wait_for_stop(received)
                # Withdraw first (peers stop picking us), then drain: stop accepting,
                # let in-flight requests end, then cut the rest.
                with trio.move_on_after(2):
                    for hook in self.shutdown_hooks:
                        await hook()
                log.info("draining (up to %gs)", s.limits.drain_timeout)
                for scope in accept_scopes:
                    scope.cancel()
                self.drain.start()
                connections.cancel_scope.deadline = trio.current_time() + s.limits.drain_timeout
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
        from mesh.identity import handshake_failure_reason, peer_identity

        if self.app_key is None:  # a gateway is never advertised; nobody should dial its inbound
            await _close(tcp)
            return

        metrics = self.metrics
        tls = TLSStream(tcp, self.identity.server, server_side=True)
        try:
            with trio.fail_after(self.settings.limits.head_timeout):
                await tls.do_handshake()
            caller = peer_identity(tls)  # type: ignore[arg-type]
        except trio.TooSlowError:
            metrics.tls_failures.labels("timeout").inc()
            await _close(tcp)
            return
        except Exception as exc:  # noqa: BLE001 - every handshake failure is logged and counted
            reason = handshake_failure_reason(exc)
            metrics.tls_failures.labels(_reason_label(reason)).inc()
            log.warning("inbound: refused a connection from %s: %s", _peer(tcp), reason)
            await _close(tcp)
            return
        metrics.tcp_open.labels("inbound").inc()
        try:
            alpn = tls.selected_alpn_protocol()
            if alpn == ALPN_TCP:
                await self._relay_to(tls, b"", self.app_key, "inbound")
                return
            router = InboundRouter(
                self.app_key,
                str(caller),
                caller.name,
                self.settings.limits.request_timeout,
                service=self.settings.service,
                policy=self.policy,
            )
            record = recorder(self, caller)
            if alpn == ALPN_H2:  # HTTP/2 and gRPC; the app speaks h2c (prior knowledge)
                h2conn = H2ProxyConnection(
                    tls, b"", router, self.h2_app_pool, record, self.settings.limits, self.drain
                )
                await self._serve_counted(h2conn, "inbound")
                return
            conn = HttpProxyConnection(tls, b"", router, self.app_pool, record, self.settings.limits, self.drain)
            await self._serve_counted(conn, "inbound")
        finally:
            metrics.tcp_open.labels("inbound").dec()
            await _close(tls)

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
            self.settings.limits.request_timeout,
            fixed_service=fixed_service,
            policy=self.policy,
        )

    async def _serve_outbound(self, stream: FastSocketStream, fixed_service: str | None) -> None:
        metrics = self.metrics
        metrics.tcp_open.labels("outbound").inc()
        try:
            prefix, protocol = await self._detect(stream, fixed_service)
            if protocol is Protocol.HTTP2 or protocol is Protocol.HTTP1:
                # HTTP/2 (prior knowledge h2c): per-stream routing, mTLS ALPN h2 upstream.
                connection_class, pool = (
                    (H2ProxyConnection, self.h2_peer_pool)
                    if protocol is Protocol.HTTP2
                    else (HttpProxyConnection, self.peer_pool)
                )
                conn = connection_class(
                    stream,
                    prefix,
                    self._outbound_router(fixed_service),
                    pool,
                    recorder(self),
                    self.settings.limits,
                    self.drain,
                )
                await self._serve_counted(conn, "outbound")
                return
            if fixed_service is None:
                if prefix:
                    log.info("outbound: closed a connection that speaks neither HTTP/1 nor a known protocol")
                return
            endpoints = self.registry.endpoints(fixed_service)
            if not endpoints:
                log.warning("outbound: no endpoints for %s; closing a TCP connection", fixed_service)
                return
            endpoint = self.balancer.choose(endpoints)
            await self._relay_to(stream, prefix, tcp_key_for(fixed_service, endpoint, self.identity.trust_domain), "outbound")
        finally:
            metrics.tcp_open.labels("outbound").dec()
            await _close(stream)

    async def _detect(self, stream: FastSocketStream, fixed_service: str | None) -> tuple[bytes, Protocol]:
        """Read until the protocol is known. Silence on an --upstream listener means server-speaks-first."""
        timeout = SERVER_SPEAKS_FIRST_AFTER if fixed_service is not None else self.settings.limits.head_timeout
        prefix = b""
        with trio.move_on_after(timeout):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, OSError):
                    return b"", Protocol.OPAQUE
                if not data:
                    return prefix, (detect(prefix) or Protocol.OPAQUE)
                prefix += data
                protocol = detect(prefix)
                if protocol is not None:
                    return prefix, protocol
        return prefix, Protocol.OPAQUE

    async def _relay_to(self, client: trio.abc.Stream, prefix: bytes, key: UpstreamKey, direction: str) -> None:
        pool = self.peer_pool if key.alpn else self.app_pool
        try:
            upstream = await open_upstream(key, pool.contexts, pool.connect_timeout)
        except UpstreamConnectError as exc:
            log.warning("%s: TCP relay to %s failed: %s", direction, key.address, exc.message)
            return
        try:
            sent, received = await relay_bytes(client, upstream, prefix)
            self.metrics.tcp_read.labels(direction).inc(sent)
            self.metrics.tcp_write.labels(direction).inc(received)
        finally:
            await _close(upstream)

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
            "app": _fmt(self.settings.app) if self.settings.app else None,
            "listeners": {
                "inbound": _fmt(bound.inbound) if bound else None,
                "outbound": _fmt(bound.outbound) if bound else None,
                "admin": _fmt(bound.admin) if bound else None,
                "upstreams": {k: _fmt(v) for k, v in bound.upstreams.items()} if bound else {},
            },
            "endpoints": snapshot,
            "registry_version": getattr(self.registry, "version", 0),
            "controller": {
                "address": self.control.controller.address,
                "connected": self.control.connected,
                "snapshot_version": self.control.snapshot_version,
                "config_version": self.control.config_version,
            }
            if self.control
            else None,
            "routes": self.routes,
            "policies": self.policies,
            "faults": self.faults,
            "draining": self.drain.draining,
            "uptime_seconds": round(time.time() - self.started, 1),
        }


async def _accept_loop(
    listener: trio.SocketListener,
    nursery: trio.Nursery,
    handler: Any,
    args: tuple[Any, ...],
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept until cancelled through the scope handed to ``task_status``; then close the listener."""
    with trio.CancelScope() as scope:
        task_status.started(scope)
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                break
            except OSError as exc:  # EMFILE and friends: back off, keep serving
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.05)
                continue
            nursery.start_soon(_isolated, handler, FastSocketStream.adopt(stream), args)
    with trio.CancelScope(shield=True):
        await listener.aclose()


async def _isolated(handler: Any, stream: FastSocketStream, args: tuple[Any, ...]) -> None:
    """A bug met by one connection is logged and ends that connection, never the proxy."""
    try:
        await handler(stream, *args)
    except Exception:  # noqa: BLE001
        log.exception("internal error on a connection from %s (closed it; the proxy keeps serving)", _peer(stream))
        await _close(stream)


async def _listen(address: tuple[str, int], what: str) -> trio.SocketListener:
    host, port = address
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        hint = "choose another port, or stop the process that holds it" if exc.errno == 98 else None
        raise ProxyError(f"cannot listen for {what} on {_fmt(address)}: {exc.strerror or exc}", hint=hint) from None
    return listeners[0]


def _bound(listener: trio.SocketListener) -> tuple[str, int]:
    sockname = listener.socket.getsockname()
    return sockname[0], sockname[1]


def _fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(stream: FastSocketStream) -> str:
    try:
        return _fmt(stream.socket.getpeername()[:2])
    except OSError:
        return "?"


def _reason_label(reason: str) -> str:
    lowered = reason.lower()
    for key in ("expired", "no client certificate", "not issued by", "does not speak tls", "version", "identity"):
        if key in lowered:
            return key.replace(" ", "-")
    return "other"


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(0.5):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
