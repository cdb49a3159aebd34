"""The control plane's JSON API over HTTP/2 and mTLS: what its client and its server share.

Layout, as in hypercorn: h2's sans-IO state machine holds all of the protocol;
a small trio loop per connection feeds it the bytes it reads and writes the
bytes it produces. Both ends share ``H2ApiEndpoint`` (writing, flow-controlled
sending, waiting for progress). The server is ``mesh.controller``'s
(``serve_api``); the client (``ApiClient``, in ``_api_client.py``) is what
proxies, the CLI and the dashboard talk to it with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.identity import (
    IssuedCredentials,
    bundle_client_context,
    client_context,
)
from mesh.net._tls import TLSStream

log = logging.getLogger("mesh.api")

API_ALPN: tuple[str, ...] = ("h2",)
MAX_HEADER_LIST_SIZE = 64 * 1024
MAX_EVENT_LINE = 16 * 1024 * 1024  # one NDJSON line the client will buffer (a whole snapshot)
HANDSHAKE_TIMEOUT = 10.0
# A write that cannot finish in this long means the peer stopped reading: the
# connection is dead. (Writes are shielded from cancellation, see H2ApiEndpoint.)
WRITE_TIMEOUT = 10.0
# Client receive windows: one stream may hold 1 MiB unread (a watch stream whose
# consumer is busy) while the connection window leaves room for the others.
CLIENT_STREAM_WINDOW = 1024 * 1024
CLIENT_CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW = 65535

JSON_TYPE = "application/json"
NDJSON_TYPE = "application/x-ndjson"


# ------------------------------------------------------------ messages


class ApiError(Exception):
    """An error answer: raised by handlers (or the transport), sent as ``{"error", "hint"}``.

    Deliberately not a ``ControllerError``: a caller that reconnects on a lost
    connection must not also "retry" a 403 (``ApiClient.stream`` raises this).
    """

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_response(self) -> ApiResponse:
        body: dict[str, str] = {"error": self.message}
        if self.hint:
            body["hint"] = self.hint
        return ApiResponse(self.status, body)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any = None  # JSON-able; None sends no body
    headers: tuple[tuple[str, str], ...] = ()


def bootstrap_client_context(bundle_pem: bytes) -> ssl.SSLContext:
    """For a proxy with no certificate yet: verifies the controller, presents none.

    Used once, to send a CSR with the join token. No hostname check (identities
    are URIs): pass ``expected_identity`` to ``ApiClient.connect``.
    """
    return bundle_client_context(bundle_pem, API_ALPN)


def api_client_context(creds: IssuedCredentials) -> ssl.SSLContext:
    """The usual mTLS client context, speaking HTTP/2 (ALPN h2) to the controller."""
    return client_context(creds, alpn=API_ALPN)


# ------------------------------------------------------------ shared HTTP/2 plumbing


class H2ApiEndpoint(ABC):
    """One side of an HTTP/2 connection: h2's state machine over a TLSStream.

    Any task may queue frames (h2 calls are synchronous) and then ``_flush``;
    one task writes at a time, and it writes until h2 has nothing left, so a
    task that finds the writer busy may skip flushing: its frames go out with
    the writer's. That is how the reader never blocks behind a stuck writer.
    """

    def __init__(self, tls: TLSStream, config: h2.config.H2Configuration) -> None:
        self._tls = tls
        self._h2 = h2.connection.H2Connection(config=config)
        self._write_lock = trio.Lock()
        self._progress = trio.Event()

    def _notify_progress(self) -> None:
        """Wake every ``_wait_until``: something they wait for may have changed."""
        self._progress.set()
        self._progress = trio.Event()

    @abstractmethod
    async def _wait_until(self, ready: Callable[[], object]) -> None: ...

    async def _flush(self) -> None:
        async with self._write_lock:
            while data := self._h2.data_to_send():
                # A cancelled write would leave half a TLS record on the wire and
                # break every stream of the connection (a client resetting one
                # stream must not do that), so the write is shielded and bounded.
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(WRITE_TIMEOUT) as stuck:
                        await self._tls.send_all(data)
                if stuck.cancelled_caught:
                    # Part of a record may be out: the connection is finished.
                    # Closing it wakes the reader, which tears everything down.
                    await close_quietly(self._tls)
                    raise trio.BrokenResourceError(f"the peer read nothing for {WRITE_TIMEOUT:g}s")

    async def _flush_unless_writing(self) -> None:
        if not self._write_lock.locked():
            await self._flush()

    async def _send_data(self, stream_id: int, data: bytes, *, end_stream: bool, stopped: Callable[[], bool]) -> bool:
        """Send ``data`` as the peer's flow-control windows allow; False if ``stopped()`` first."""
        view = memoryview(data)
        while view:
            await self._wait_until(lambda: stopped() or self._h2.local_flow_control_window(stream_id) > 0)
            if stopped():
                return False
            window = self._h2.local_flow_control_window(stream_id)
            size = min(window, self._h2.max_outbound_frame_size, len(view))
            last = size == len(view)
            self._h2.send_data(stream_id, bytes(view[:size]), end_stream=end_stream and last)
            view = view[size:]
            await self._flush()
        if not data and end_stream:
            self._h2.end_stream(stream_id)
            await self._flush()
        return True

    async def _close_transport(self) -> None:
        """Best effort GOAWAY, then close; never raises, never waits long."""
        with trio.CancelScope(shield=True):
            try:
                self._h2.close_connection()
                with trio.move_on_after(0.5):
                    await self._flush()
            except (
                h2.exceptions.ProtocolError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
            ):
                pass
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self._tls.aclose()


def decode_headers(raw: Any) -> list[tuple[str, str]]:
    # h2 runs with header_encoding=None: names and values arrive as bytes.
    return [
        (
            name.decode("ascii", "replace") if isinstance(name, bytes) else name,
            value.decode("utf-8", "replace") if isinstance(value, bytes) else value,
        )
        for name, value in raw
    ]


def header_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers:
        if name.startswith(":"):
            continue
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


def encode_json(body: Any) -> bytes:
    return b"" if body is None else json.dumps(body).encode()


def decode_json(payload: bytes) -> Any:
    """A response body: JSON when it parses, else the text (a proxy's error page, say)."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")


# ------------------------------------------------------------ server


async def close_quietly(stream: trio.abc.AsyncResource) -> None:
    quietly = contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)
    with trio.CancelScope(shield=True), quietly:
        await stream.aclose()


def code_name(code: int | None) -> str:
    if code is None:
        return "no response"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def api_error(status: int, body: Any) -> ApiError:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        hint = body.get("hint")
        return ApiError(status, body["error"], hint if isinstance(hint, str) else None)
    return ApiError(status, f"the controller answered {status}" + (f": {body}" if isinstance(body, str) else ""))
