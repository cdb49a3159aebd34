"""Listening and accepting for the sidecar, and the small helpers its connections share."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import trio

from mesh.errors import ProxyError
from mesh.net import FastSocketStream, receive_or_eof

log = logging.getLogger("mesh.proxy")


async def accept_loop(
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
            nursery.start_soon(isolated, handler, FastSocketStream.adopt(stream), args)
    with trio.CancelScope(shield=True):
        await listener.aclose()


async def isolated(handler: Any, stream: FastSocketStream, args: tuple[Any, ...]) -> None:
    """A bug met by one connection is logged and ends that connection, never the proxy."""
    try:
        await handler(stream, *args)
    except Exception:  # noqa: BLE001
        log.exception(
            "internal error on a connection from %s (closed it; the proxy keeps serving)", peer_address(stream)
        )
        await close(stream)


async def listen(address: tuple[str, int], what: str, reuse_port: bool = False) -> trio.SocketListener:
    host, port = address
    try:
        if reuse_port:  # one of several workers (mesh/proxy/_workers.py): the kernel spreads connections
            return await listen_shared(host, port)
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        hint = "choose another port, or stop the process that holds it" if exc.errno == 98 else None
        raise ProxyError(f"cannot listen for {what} on {fmt(address)}: {exc.strerror or exc}", hint=hint) from None
    return listeners[0]


async def listen_shared(host: str, port: int) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
        await sock.bind((host, port))
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


def bound(listener: trio.SocketListener) -> tuple[str, int]:
    sockname = listener.socket.getsockname()
    return sockname[0], sockname[1]


def fmt(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_address(stream: FastSocketStream) -> str:
    try:
        return fmt(stream.socket.getpeername()[:2])
    except OSError:
        return "?"


# Substrings of handshake_failure_reason's lines → the `reason` label of tls_handshake_failures_total.
_REASON_LABELS = (
    ("revoked", "revoked"),
    ("timeout", "timeout"),
    ("trust domain", "trust-domain"),
    ("expired", "expired"),
    ("no client certificate", "no-client-certificate"),
    ("not issued by", "not-issued-by"),
    ("does not speak tls", "does-not-speak-tls"),
    ("version", "version"),
    ("expected spiffe://", "identity"),
    ("identity", "identity"),
)


def reason_label(reason: str) -> str:
    lowered = reason.lower()
    return next((label for key, label in _REASON_LABELS if key in lowered), "other")


async def close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(0.5):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass


async def first_words(client: trio.abc.Stream, app: trio.abc.Stream) -> tuple[bytes | None, bytes | None]:
    """What each side sends first, waiting until one of them does (b"": it closed; None: it said
    nothing yet). Both may have spoken by the time one is seen: nothing read is dropped."""
    said: dict[str, bytes] = {}

    async def listen(side: str, stream: trio.abc.Stream) -> None:
        said[side] = await receive_or_eof(stream)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen, "client", client)
        nursery.start_soon(listen, "app", app)
    return said.get("client"), said.get("app")
