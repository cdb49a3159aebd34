"""Upstream connections: open (plain or mTLS with identity check) and keep alive.

A pool holds idle HTTP/1 connections per ``UpstreamKey``. Connections that
went stale while idle are detected by the caller (EOF before any response
byte) and retried once on a fresh connection.
"""

from __future__ import annotations

import logging
import ssl
from typing import Protocol

import trio

from mesh.errors import IdentityError
from mesh.net import FastSocketStream, TLSStream, os_reason
from mesh.proxy._conn import HttpConnection
from mesh.proxy._exchange import ConnectFailure, Reason, UpstreamKey
from mesh.proxy._listeners import close
from mesh.proxy.protocol.http1 import ResponseReader

log = logging.getLogger("mesh.proxy")


class ContextProvider(Protocol):
    """The client side of mTLS toward peers: a context per ALPN, and a tally of refusals."""

    def __call__(self, alpn: str) -> ssl.SSLContext: ...

    def refused(self, reason: str) -> None:
        """A handshake with a peer, or the identity check after it, failed for ``reason``."""

    def connected(self, serial: int, stream: trio.abc.Stream) -> None:
        """A handshake with the peer whose certificate has ``serial`` succeeded over ``stream``."""


async def open_upstream(key: UpstreamKey, contexts: ContextProvider | None, timeout: float) -> trio.abc.Stream:
    """Connect (and for mTLS: handshake and check the peer's identity and that it is not revoked)."""
    from mesh.identity import check_peer, handshake_failure_reason, verified_peer

    context: ssl.SSLContext | None = None
    if key.alpn is not None:
        if contexts is None:
            raise ConnectFailure(Reason.TLS_FAILED, "this proxy has no identity to call peers with")
        context = contexts(key.alpn)  # raises ConnectFailure when this proxy may not call (revoked)
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = FastSocketStream.adopt(await trio.open_tcp_stream(key.host, key.port))
    except trio.TooSlowError:
        raise ConnectFailure(
            Reason.CONNECT_TIMEOUT, f"connecting to {key.address} timed out after {timeout:g}s"
        ) from None
    except OSError as exc:
        raise ConnectFailure(Reason.CONNECT_FAILED, f"cannot connect to {key.address}: {os_reason(exc)}") from None
    if context is None or contexts is None:
        return stream
    tls = TLSStream(stream, context, server_side=False)
    try:
        with trio.fail_after(timeout):
            await tls.do_handshake()
        if key.identity is not None:
            peer = check_peer(tls, key.identity)
        else:
            peer = verified_peer(tls)
    except trio.TooSlowError:
        await close(tls)
        contexts.refused("timeout")
        raise ConnectFailure(
            Reason.TLS_TIMEOUT, f"TLS handshake with {key.address} timed out after {timeout:g}s"
        ) from None
    except IdentityError as exc:
        await close(tls)
        log.warning("refused peer %s: %s", key.address, exc)
        contexts.refused(exc.message)
        raise ConnectFailure(Reason.IDENTITY_MISMATCH, f"{key.address}: {exc}") from None
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
        await close(tls)
        reason = handshake_failure_reason(exc)
        log.warning("TLS handshake with %s failed: %s", key.address, reason)
        contexts.refused(reason)
        raise ConnectFailure(Reason.TLS_FAILED, f"TLS handshake with {key.address} failed: {reason}") from None
    contexts.connected(peer.serial, stream)
    return tls


class UpstreamConnection(HttpConnection[ResponseReader]):
    __slots__ = ("key", "idle_since", "uses", "socket_stream")

    def __init__(self, stream: trio.abc.Stream, key: UpstreamKey) -> None:
        super().__init__(stream, ResponseReader())
        self.key = key
        self.idle_since = 0.0
        self.uses = 0
        self.socket_stream = peer_socket(stream)

    def answer_pending(self) -> None:
        """A whole request was just sent to a peer proxy: its answer takes that proxy's round trip
        to the app and back, so the next read waits for it at once (measured: the answer was there
        for ~1 % of first reads; a recv that says EAGAIN costs a system call and an exception). An
        app may answer within microseconds (nginx's answer was there for 50-85 %): read it first."""
        if self.socket_stream is not None:
            self.socket_stream.wait_first = True


def peer_socket(stream: trio.abc.Stream) -> FastSocketStream | None:
    """The socket under a connection to or from a peer proxy (mTLS), else None."""
    if isinstance(stream, TLSStream) and isinstance(stream.transport, FastSocketStream):
        return stream.transport
    return None


class ConnectionPool:
    def __init__(
        self,
        contexts: ContextProvider | None,
        *,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        max_idle_per_key: int = 64,
    ) -> None:
        self.contexts = contexts
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[UpstreamKey, list[UpstreamConnection]] = {}

    def take_idle(self, key: UpstreamKey, now: float) -> UpstreamConnection | None:
        """The most recent idle connection for ``key`` when it is still fresh at ``now`` (trio's
        clock), without waiting; None: ``acquire`` closes the stale ones and opens one."""
        idle = self._idle.get(key)
        if idle and now - idle[-1].idle_since < self.idle_timeout:
            conn = idle.pop()
            conn.uses += 1
            return conn
        return None

    async def acquire(self, key: UpstreamKey) -> UpstreamConnection:
        idle = self._idle.get(key)
        if idle:
            now = trio.current_time()
            while idle:
                conn = idle.pop()
                if now - conn.idle_since < self.idle_timeout:
                    conn.uses += 1
                    return conn
                await conn.aclose()
        stream = await open_upstream(key, self.contexts, self.connect_timeout)
        conn = UpstreamConnection(stream, key)
        conn.uses = 1
        return conn

    def keep_idle(self, conn: UpstreamConnection, reusable: bool, now: float) -> bool:
        """Put ``conn`` back, idle since ``now`` (trio's clock), when it can carry another request
        and there is room; False: the caller closes it."""
        if not reusable or conn.closed or conn.pending or not conn.reader.reusable:
            return False
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        elif len(idle) >= self.max_idle_per_key:
            return False
        conn.idle_since = now
        idle.append(conn)
        return True

    async def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        if not self.keep_idle(conn, reusable, trio.current_time()):
            await conn.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await conn.aclose()

    def __repr__(self) -> str:
        count = sum(len(v) for v in self._idle.values())
        return f"<ConnectionPool keys={len(self._idle)} idle={count}>"
