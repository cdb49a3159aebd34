"""Telemetry fan-in: the proxies to read, and the client of their admin pages over mTLS.

Also the guarded system tasks the fan-in runs on (``_fanin.py`` says why).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import Data, EndOfMessage, ResponseHead, ResponseReader

log = logging.getLogger("mesh.controller.fanin")

CONNECT_TIMEOUT = 2.0  # to a proxy's admin pages (TCP, then the TLS handshake)
SCRAPE_TIMEOUT = 2.0  # for a whole /metrics answer
MAX_METRICS_BYTES = 8 * 1024 * 1024
MAX_TAP_LINE = 1024 * 1024


class AdminUnreachable(Exception):
    """A proxy's admin server could not be read; the message says why."""


# ------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """One proxy as the registry knows it: where it listens for mTLS, and who it must be."""

    instance: str
    service: str
    host: str
    port: int  # its inbound listener, which serves the admin pages over mTLS (ALPN mesh-admin)
    identity: str
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def version(self) -> str | None:
        return dict(self.labels).get("version")

    def describe(self) -> dict[str, Any]:
        return {"instance": self.instance, "service": self.service, "address": self.address}


def proxy_targets(state: Any) -> list[ProxyTarget]:
    """Every proxy in the registry, once (a registration and a zeroconf record of one proxy are one)."""
    targets: dict[str, ProxyTarget] = {}
    # Registrations first: their identity was proven by the proxy's certificate.
    for entry in sorted(state.entries(), key=lambda e: (e.source != "registration", e.instance)):
        endpoint = entry.endpoint
        if endpoint.address in targets:
            continue
        targets[endpoint.address] = ProxyTarget(
            instance=entry.instance,
            service=endpoint.service,
            host=endpoint.host,
            port=endpoint.port,
            identity=endpoint.expected_identity(state.trust_domain),
            labels=endpoint.labels,
        )
    return sorted(targets.values(), key=lambda t: (t.service, t.instance))


# ------------------------------------------------------------------ admin client


class AdminDialer:
    """Opens the admin pages of a proxy: mTLS to its inbound listener, ALPN ``mesh-admin``,
    the proxy's identity checked against the registry's, then one HTTP/1.1 GET."""

    def __init__(self, context: ssl.SSLContext, revoked_now: Callable[[], Iterable[str]] | None = None) -> None:
        self.context = context  # the controller's client context, ALPN mesh-admin
        # The revoked serials in force (hex), read at each connect: a revoked proxy's pages are not read.
        self._revoked_now = revoked_now

    @classmethod
    def for_credentials(cls, creds: Any, revoked_now: Callable[[], Iterable[str]] | None = None) -> AdminDialer:
        from mesh.identity import RevocationList, client_context
        from mesh.net import ALPN_ADMIN

        return cls(client_context(creds, alpn=(ALPN_ADMIN,), revoked=RevocationList()), revoked_now)

    async def connect(self, target: ProxyTarget, timeout: float) -> trio.abc.Stream:
        """An mTLS stream to ``target`` that speaks the admin pages; AdminUnreachable otherwise."""
        from mesh.identity import check_peer_identity, handshake_failure_reason
        from mesh.net import ALPN_ADMIN, TLSStream, os_reason

        where = target.address
        try:
            with trio.fail_after(timeout):
                tcp = await trio.open_tcp_stream(target.host, target.port)
        except trio.TooSlowError:
            raise AdminUnreachable(f"{where}: no connection within {timeout:g}s") from None
        except OSError as exc:
            raise AdminUnreachable(f"{where}: {os_reason(exc)}") from None
        if self._revoked_now is not None:
            from mesh.identity import serials_from

            self.context.revoked.replace(serials_from(self._revoked_now()))  # type: ignore[attr-defined]
        tls = TLSStream(tcp, self.context, server_side=False)
        try:
            with trio.fail_after(timeout):
                await tls.do_handshake()
            check_peer_identity(tls, target.identity)
            if tls.selected_alpn_protocol() != ALPN_ADMIN:
                raise AdminUnreachable(
                    f"{where}: the proxy does not serve its admin pages over mTLS (a mesh older than this controller?)"
                )
        except trio.TooSlowError:
            await _close(tls)
            raise AdminUnreachable(f"{where}: no TLS handshake within {timeout:g}s") from None
        except AdminUnreachable:
            await _close(tls)
            raise
        except Exception as exc:  # noqa: BLE001 - IdentityError, ssl and stream errors: one reason each
            await _close(tls)
            raise AdminUnreachable(f"{where}: {handshake_failure_reason(exc)}") from None
        return tls


async def _open_admin(
    dialer: AdminDialer, target: ProxyTarget, path: str, timeout: float
) -> tuple[trio.abc.Stream, ResponseReader, list[Any]]:
    """Connect, send ``GET path``, read up to the response head; returns the stream, reader and events."""
    where = target.address
    stream = await dialer.connect(target, timeout)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {where}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        reader = ResponseReader()
        reader.expect(b"GET")
        events: list[Any] = []
        with trio.fail_after(timeout):
            await stream.send_all(request.encode())
            while not any(isinstance(e, ResponseHead) for e in events):
                data = await stream.receive_some(65536)
                if not data:
                    raise AdminUnreachable(f"{where}: closed the connection without answering")
                events += reader.feed(bytes(data))
    except trio.TooSlowError:
        await _close(stream)
        raise AdminUnreachable(f"{where}: no answer within {timeout:g}s") from None
    except RemoteProtocolError as exc:
        await _close(stream)
        raise AdminUnreachable(f"{where}: invalid HTTP answer: {exc}") from None
    except (OSError, trio.BrokenResourceError) as exc:
        await _close(stream)
        raise AdminUnreachable(f"{where}: {exc or 'the connection broke'}") from None
    except BaseException:
        await _close(stream)
        raise
    return stream, reader, events


async def admin_get(
    dialer: AdminDialer, target: ProxyTarget, path: str, timeout: float = SCRAPE_TIMEOUT
) -> tuple[int, bytes]:
    """``GET path`` on a proxy's admin pages: (status, body). Raises AdminUnreachable."""
    where = target.address
    deadline = trio.current_time() + timeout
    stream, reader, events = await _open_admin(dialer, target, path, timeout)
    try:
        status = next(e.status for e in events if isinstance(e, ResponseHead))
        body = bytearray()
        with trio.move_on_at(deadline) as late:
            while True:
                for event in events:
                    if isinstance(event, Data):
                        body += event.data
                        if len(body) > MAX_METRICS_BYTES:
                            raise AdminUnreachable(f"{where}: answer larger than {MAX_METRICS_BYTES} bytes")
                    elif isinstance(event, EndOfMessage):
                        return status, bytes(body)
                data = await stream.receive_some(65536)
                events = reader.feed(bytes(data)) if data else reader.feed_eof()
                if not data and not events:
                    raise AdminUnreachable(f"{where}: closed the connection mid-answer")
        if late.cancelled_caught:
            raise AdminUnreachable(f"{where}: answer not complete within {timeout:g}s")
        raise AssertionError("unreachable")
    except RemoteProtocolError as exc:
        raise AdminUnreachable(f"{where}: invalid HTTP answer: {exc}") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise AdminUnreachable(f"{where}: {exc or 'the connection broke'}") from None
    finally:
        await _close(stream)


class AdminStream:
    """A streaming answer (``/tap``): ``await AdminStream.open(...)``, then ``lines()``, then ``aclose()``."""

    def __init__(self, where: str, stream: trio.abc.Stream, reader: ResponseReader, events: list[Any]) -> None:
        self._where = where
        self._stream = stream
        self._reader = reader
        self._events = events

    @classmethod
    async def open(
        cls, dialer: AdminDialer, target: ProxyTarget, path: str, timeout: float = CONNECT_TIMEOUT
    ) -> AdminStream:
        """Connected and answered 200; raises AdminUnreachable otherwise."""
        stream, reader, events = await _open_admin(dialer, target, path, timeout)
        head = next(e for e in events if isinstance(e, ResponseHead))
        if head.status != 200:
            await _close(stream)
            raise AdminUnreachable(f"{target.address}: {path.split('?')[0]} answered {head.status}")
        return cls(target.address, stream, reader, events[events.index(head) + 1 :])

    async def lines(self) -> AsyncIterator[Any]:
        """The JSON value of each line, until the proxy ends the stream.

        A plain async generator (no nursery, no cancel scope across its
        ``yield``): the caller iterates it in one task.
        """
        buffer = bytearray()
        events, self._events = self._events, []
        while True:
            for event in events:
                if isinstance(event, Data):
                    buffer += event.data
                elif isinstance(event, EndOfMessage):
                    return
            while (newline := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        log.debug("%s sent a line that is not JSON: %r", self._where, line[:100])
            if len(buffer) > MAX_TAP_LINE:
                raise AdminUnreachable(f"{self._where}: a line longer than {MAX_TAP_LINE} bytes")
            try:
                data = await self._stream.receive_some(65536)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                events = self._reader.feed(bytes(data))
            except RemoteProtocolError as exc:
                raise AdminUnreachable(f"{self._where}: invalid HTTP: {exc}") from None

    async def aclose(self) -> None:
        await _close(self._stream)


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _spawn_guarded(fn: Callable[[], Any], name: str) -> None:
    """A system task that can never take the controller down."""

    async def guarded() -> None:
        try:
            await fn()
        except Exception:  # noqa: BLE001 - log it; the controller goes on
            log.exception("%s failed", name)

    trio.lowlevel.spawn_system_task(guarded, name=name)
