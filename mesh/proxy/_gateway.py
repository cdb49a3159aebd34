"""`mesh gateway`: the edge listeners, the I/O around the decisions of ``_edge.py``.

    outside client ─TLS 1.2/1.3 (SNI → certificate, ALPN)─▶ h2: HTTP/2 loop ───┐
                                                          ▶ http/1.1: HTTP/1 loop ─┼─▶ EdgeRouter ─▶ mTLS ─▶ service
    outside client ─plain (no --tls-cert)─▶ detect ─▶ HTTP/1 or HTTP/2 loop ───┘
    outside client ─plain, --http-redirect─▶ 308 https://HOST[:PORT]/TARGET

Before a byte is read, a client address over its connection limit is closed. Every
request then meets the ``EdgeRouter``: its rate limit (429 with ``Retry-After``), the
gateway's routes (404 ``no-route``), the forwarding headers, and the mesh's own
routing. The loops are the sidecar's (``_http.py``, ``_h2_server.py``): every head and
body deadline, header limit and HTTP/2 budget applies to these connections as to any;
the TLS handshake itself has to fit in the first request head's deadline.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from mesh.errors import ProxyError
from mesh.net import ALPN_H2, ALPN_HTTP1, TLSStream, receive_or_eof
from mesh.proxy._edge import (
    DEFAULT_CLIENT_CONNECTIONS,
    ClientLimits,
    EdgeClient,
    EdgeRoute,
    EdgeRouter,
    EdgeRoutes,
    LimitSettings,
    TrustedNetworks,
    client_key,
    parse_ip,
    parse_route,
    redirect_location,
)
from mesh.proxy._edge_tls import EXPIRY_WARNING, EdgeCertificates
from mesh.proxy._exchange import Failure, Reason
from mesh.proxy._listeners import close, fmt
from mesh.proxy._server import Detected
from mesh.proxy.protocol.detect import Mode, Protocol
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import RequestHead, RequestReader, simple_response

if TYPE_CHECKING:
    from mesh.proxy._server import Proxy

log = logging.getLogger("mesh.proxy")

CERTIFICATE_POLL = 1.0  # seconds between looks at the certificate files (a stat per file)
EXPIRY_REMINDER = 24 * 3600.0  # a certificate close to its end is logged again once a day
DIRECTION = "outbound"  # the gateway's traffic is its outbound traffic, as before it had TLS


@dataclass(frozen=True)
class GatewaySettings:
    """Everything about a gateway's edge, parsed and checked (certificates loaded)."""

    listen: tuple[str, int]
    routes: tuple[EdgeRoute, ...]
    certificates: EdgeCertificates | None = None  # None: plain HTTP
    http_redirect: tuple[str, int] | None = None
    trusted: TrustedNetworks = field(default_factory=TrustedNetworks)
    limits: LimitSettings = LimitSettings()

    @property
    def scheme(self) -> str:
        return "https" if self.certificates is not None else "http"


def gateway_settings(
    *,
    listen: tuple[str, int],
    to: str | None,
    routes: Sequence[str] = (),
    tls_cert: Sequence[str | Path] = (),
    tls_key: Sequence[str | Path] = (),
    http_redirect: tuple[str, int] | None = None,
    trust_forwarded: Sequence[str] = (),
    client_connections: int = DEFAULT_CLIENT_CONNECTIONS,
    client_rps: float = 0.0,
    client_burst: int = 0,
) -> GatewaySettings:
    """The options of `mesh gateway`, checked: a ProxyError naming the option that is wrong (or the
    IdentityError of a certificate that cannot be served)."""
    from mesh.config import is_valid_cidr

    table: list[EdgeRoute] = []
    for text in routes:
        try:
            table.append(parse_route(text))
        except ValueError as exc:
            raise ProxyError(
                f"--route {text}: {exc}", hint="e.g. --route shop.example/api=api --route shop.example=web"
            ) from None
    if to is not None:
        table.append(EdgeRoute(to))  # --to: everything no other route took
    if not table:
        raise ProxyError(
            "a gateway needs somewhere to send requests", hint="give --to SERVICE, or --route HOST[/PREFIX]=SERVICE"
        )
    if len(tls_cert) != len(tls_key):
        raise ProxyError(
            f"{len(tls_cert)} --tls-cert but {len(tls_key)} --tls-key: they go in pairs",
            hint="give each certificate its key, in the same order: --tls-cert a.pem --tls-key a.key --tls-cert "
            "b.pem --tls-key b.key",
        )
    if http_redirect is not None and not tls_cert:
        raise ProxyError(
            "--http-redirect sends clients to HTTPS, but the gateway has no certificate",
            hint="give --tls-cert and --tls-key, or leave out --http-redirect",
        )
    if http_redirect is not None and http_redirect == listen and listen[1] != 0:
        raise ProxyError(
            f"--http-redirect {fmt(http_redirect)} is the --listen address",
            hint="give the redirect listener a port of its own",
        )
    bad = [cidr for cidr in trust_forwarded if not is_valid_cidr(cidr)]
    if bad:
        raise ProxyError(
            f"--trust-forwarded {bad[0]}: not a network",
            hint="write networks like 10.0.0.0/8, 192.0.2.7/32 or 2001:db8::/32",
        )
    if client_connections < 0 or not 0 <= client_rps < float("inf") or client_burst < 0:
        raise ProxyError("--client-connections, --client-rps and --client-burst are 0 (no limit) or more, and finite")
    certificates = (
        EdgeCertificates(list(zip(map(Path, tls_cert), map(Path, tls_key), strict=True))) if tls_cert else None
    )
    return GatewaySettings(
        listen=listen,
        routes=tuple(table),
        certificates=certificates,
        http_redirect=http_redirect,
        trusted=TrustedNetworks(trust_forwarded),
        limits=LimitSettings(client_connections, client_rps, client_burst),
    )


class Gateway:
    """The edge of one gateway process: its listeners' handlers, limits and certificates."""

    def __init__(self, proxy: Proxy, settings: GatewaySettings) -> None:
        self.proxy = proxy
        self.settings = settings
        self.routes = EdgeRoutes(settings.routes)
        self.limits = ClientLimits(settings.limits)
        self.https_port = settings.listen[1]  # the bound port, once known (for redirects)
        registry = proxy.metrics.registry
        self.refused = registry.counter(
            "gateway_refused_connections_total",
            "Connections the gateway closed before reading a byte (reason: client-connections).",
            ("reason",),
        )
        self.redirects = registry.counter("gateway_redirects_total", "Requests answered 308 by the redirect listener.")
        tracked = registry.gauge("gateway_tracked_clients", "Client addresses the per-client limits hold state for.")
        tracked.set_function(lambda: self.limits.tracked)
        if settings.certificates is not None:
            expiry = registry.gauge(
                "gateway_tls_cert_expiry_timestamp_seconds",
                "Expiry of each certificate the gateway serves (Unix time).",
                ("cert",),
            )
            for index, certificate in enumerate(settings.certificates.certificates):
                expiry.labels(str(certificate.cert_path)).set_function(self._expiry_of(index))

    def _expiry_of(self, index: int) -> Any:
        certificates = self.settings.certificates
        assert certificates is not None
        return lambda: certificates.certificates[index].not_after.timestamp()

    def listeners(self) -> list[tuple[tuple[str, int], str, Any]]:
        """(address, name in the ready line, connection handler) of each edge listener."""
        out = [(self.settings.listen, f"listen {self.settings.scheme}", self.serve_client)]
        if self.settings.http_redirect is not None:
            out.append((self.settings.http_redirect, "redirect", self.serve_redirect))
        return out

    def bound(self, addresses: dict[str, tuple[str, int]]) -> None:
        self.https_port = addresses[f"listen {self.settings.scheme}"][1]

    def view(self) -> dict[str, Any]:
        """The gateway's part of the admin server's ``/config``."""
        settings = self.settings
        certificates = settings.certificates.certificates if settings.certificates is not None else []
        return {
            "scheme": settings.scheme,
            "routes": [route.describe() for route in self.routes.routes],
            "certificates": [
                {
                    "cert": str(c.cert_path),
                    "names": list(c.names),
                    "not_after": c.not_after.isoformat(),
                    "fingerprint": c.fingerprint,
                }
                for c in certificates
            ],
            "http_redirect": fmt(settings.http_redirect) if settings.http_redirect else None,
            "trust_forwarded": [str(n) for n in settings.trusted.networks],
            "client_limits": {
                "connections": settings.limits.connections,
                "requests_per_second": settings.limits.requests_per_second,
                "burst": settings.limits.bucket_size if settings.limits.requests_per_second else 0,
            },
        }

    # -- connections ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _admitted(self, tcp: Any) -> AsyncIterator[EdgeClient | None]:
        """The client of a new connection, counted against its limit until the block ends; None when
        it is over its limit (or gone): the caller closes it at once. Trusted peers are not counted
        (a proxy in front carries many clients on its connections)."""
        client = self._client_of(tcp)
        key = client_key(client.peer) if client is not None and not client.trusted else None
        if key is not None and not self.limits.connection_opened(key):
            self.refused.labels("client-connections").inc()
            log.debug("gateway: closed a connection from %s: %d open already", key, self.settings.limits.connections)
            client = key = None
        try:
            yield client
        finally:
            if key is not None:
                self.limits.connection_closed(key)

    def _client_of(self, tcp: Any) -> EdgeClient | None:
        try:
            peer = parse_ip(tcp.socket.getpeername()[0])
        except OSError:
            return None  # gone before we looked
        if peer is None:
            return None
        scheme = b"https" if self.settings.certificates is not None else b"http"
        return EdgeClient.of(peer, scheme, self.settings.trusted)

    async def serve_client(self, tcp: Any) -> None:
        stream: trio.abc.Stream = tcp
        async with self._admitted(tcp) as client:
            try:
                if client is not None:
                    stream = await self._serve_client(tcp, client)
            finally:
                await close(stream)

    async def _serve_client(self, tcp: Any, client: EdgeClient) -> trio.abc.Stream:
        """Serve the connection; returns the stream to close (the TLS one, once there is one)."""
        proxy = self.proxy
        head_deadline = trio.current_time() + proxy.settings.timeouts.head_timeout
        protocol: Protocol | None = None
        stream: trio.abc.Stream = tcp
        if self.settings.certificates is not None:
            tls = TLSStream(tcp, self.settings.certificates.context, server_side=True)
            stream = tls
            if not await self._handshake(tls, head_deadline, client):
                return stream
            alpn = tls.selected_alpn_protocol()
            protocol = Protocol.HTTP2 if alpn == ALPN_H2 else Protocol.HTTP1 if alpn == ALPN_HTTP1 else None
        router = EdgeRouter(self.routes, proxy.outbound_router, client, self.limits)
        proxy.metrics.tcp_open.labels(DIRECTION).inc()
        try:
            if protocol is None:  # plain HTTP, or TLS without ALPN: the first bytes say which
                detected = await proxy._detect(stream, Mode.HTTP, DIRECTION)
                if detected is None:
                    return stream
            else:
                detected = Detected(b"", protocol, head_deadline)
            await proxy._serve_http(stream, detected, router, client, DIRECTION)
        finally:
            proxy.metrics.tcp_open.labels(DIRECTION).dec()
        return stream

    async def _handshake(self, tls: TLSStream, deadline: float, client: EdgeClient) -> bool:
        """The TLS handshake, within the first head's deadline; failures counted by OpenSSL's reason."""
        reason = None
        with trio.move_on_at(deadline) as scope:
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                cause = exc.__cause__
                if isinstance(cause, ssl.SSLError):
                    reason = (cause.reason or "tls-error").lower().replace("_", "-")
                else:
                    reason = "closed"
        if scope.cancelled_caught:
            reason = "timeout"
        if reason is None:
            return True
        self.proxy.metrics.tls_failures.labels("edge", reason).inc()
        log.debug("gateway: TLS handshake with %s failed: %s", client.peer, reason)
        return False

    async def serve_redirect(self, tcp: Any) -> None:
        """Read one request head and answer 308 to its https:// twin; then close."""
        async with self._admitted(tcp) as client:
            try:
                if client is not None:
                    await self._redirect(tcp)
            finally:
                await close(tcp)

    async def _redirect(self, tcp: Any) -> None:
        head = await self._read_head(tcp)
        if head is None:
            return
        location = redirect_location(head, self.https_port)
        if location is None:
            failure = Failure(Reason.BAD_REQUEST, 400, "the request names no valid host to redirect to")
            await self.proxy._answer_local(tcp, DIRECTION, failure)
            return
        response = simple_response(
            308,
            b"moved to " + location + b"\n",
            [(b"Location", location)],
            keep_alive=False,
            http10=head.http_version == b"1.0",
            head_request=head.method == b"HEAD",
        )
        with trio.move_on_after(self.proxy.settings.timeouts.head_timeout):
            try:
                await tcp.send_all(response)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
        self.redirects.inc()

    async def _read_head(self, tcp: Any) -> RequestHead | None:
        """The first request head within the head deadline; None when the client got an error or left."""
        reader = RequestReader()
        with trio.move_on_after(self.proxy.settings.timeouts.head_timeout):
            while True:
                data = await receive_or_eof(tcp)
                if not data:
                    return None
                try:
                    events = reader.feed(data)
                except RemoteProtocolError as exc:
                    reason = Reason.HEADER_TOO_LARGE if exc.status == 431 else Reason.BAD_REQUEST
                    await self.proxy._answer_local(tcp, DIRECTION, Failure(reason, exc.status, str(exc)))
                    return None
                for event in events:
                    if isinstance(event, RequestHead):
                        return event
        await self.proxy._answer_local(
            tcp, DIRECTION, Failure(Reason.HEAD_TIMEOUT, 408, "request head not received in time")
        )
        return None

    # -- certificates -----------------------------------------------------------------

    async def keep_certificates(self) -> None:
        """Reload changed certificate files; say once a day when one is close to its end."""
        certificates = self.settings.certificates
        if certificates is None:
            return
        reminded = -EXPIRY_REMINDER
        while True:
            for note in certificates.reload():
                log.log(logging.WARNING if note.refused else logging.INFO, "gateway: %s", note.message)
            now = trio.current_time()
            if now - reminded >= EXPIRY_REMINDER:
                for certificate in certificates.expiring(EXPIRY_WARNING):
                    log.warning(
                        "gateway: the certificate for %s (%s) expires on %s: renew it; the gateway reloads it when "
                        "the file changes",
                        certificate.label,
                        certificate.cert_path,
                        certificate.not_after.strftime("%Y-%m-%d %H:%M UTC"),
                    )
                reminded = now
            await trio.sleep(CERTIFICATE_POLL)
