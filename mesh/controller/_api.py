"""The control plane's transport: a small JSON API over HTTP/2 and mTLS.

Server: ``serve_api(listener, context, handler)`` accepts TLS connections (ALPN
``h2`` required) and calls ``handler(ApiRequest)`` once per stream; the handler
returns an ``ApiResponse`` (one JSON body) or an async iterator (an NDJSON
stream: one JSON line per item, sent as soon as it is produced).

Client: ``ApiClient`` is one HTTP/2 connection shared by concurrent requests and
long-lived streams (a proxy's watch stream runs while it renews its
certificate on the same connection).

Layout, as in hypercorn: h2's sans-IO state machine holds all of the protocol;
a small trio loop per connection feeds it the bytes it reads and writes the
bytes it produces. Both ends share ``_H2Endpoint`` (writing, flow-controlled
sending, waiting for progress); the server has one reader task per connection
and one task per stream; the client has no background task at all: whichever
caller waits for something reads for everyone (like httpcore), so an
``ApiClient`` needs no nursery.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import contextlib
import json
import logging
import os
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.errors import ControllerError, IdentityError
from mesh.identity import (
    IssuedCredentials,
    SpiffeId,
    check_peer_identity,
    client_context,
    handshake_failure_reason,
    peer_identity,
    server_context,
)
from mesh.identity._tls import _verifying_context
from mesh.proxy._tls import TLSStream

log = logging.getLogger("mesh.controller")

API_ALPN: tuple[str, ...] = ("h2",)
MAX_BODY = 1024 * 1024  # request bodies; larger ones get 413 without reaching the handler
MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_SIZE = 64 * 1024
MAX_EVENT_LINE = 16 * 1024 * 1024  # one NDJSON line the client will buffer (a whole snapshot)
HANDSHAKE_TIMEOUT = 10.0
# A write that cannot finish in this long means the peer stopped reading: the
# connection is dead. (Writes are shielded from cancellation, see _H2Endpoint.)
WRITE_TIMEOUT = 10.0
ACLOSE_TIMEOUT = 5.0  # for a handler's iterator to clean up after its client left
# Client receive windows: one stream may hold 1 MiB unread (a watch stream whose
# consumer is busy) while the connection window leaves room for the others.
CLIENT_STREAM_WINDOW = 1024 * 1024
CLIENT_CONNECTION_WINDOW = 16 * 1024 * 1024
_DEFAULT_WINDOW = 65535

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
class ApiRequest:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    peer: SpiffeId | None  # from the verified client certificate; None without one
    # IP addresses of the TCP connection (None when unknown): equal when the caller is on
    # this host, which tells a registration from another host (docs/cli.md, "Several hosts").
    remote_ip: str | None = None
    local_ip: str | None = None

    def json(self) -> Any:
        """The body as JSON (``{}`` when empty); ApiError 400 when it is not JSON."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ApiError(400, f"invalid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any = None  # JSON-able; None sends no body
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[ApiRequest], Awaitable[ApiResponse | AsyncIterator[Any]]]

_INTERNAL_ERROR = ApiError(500, "internal error")


# ------------------------------------------------------------ TLS contexts


def server_context_optional_client(creds: IssuedCredentials) -> ssl.SSLContext:
    """The controller's context: mTLS as usual, but a client may come without a certificate.

    The certificate-signing endpoint must accept proxies that have none yet
    (they bring a join token); every other endpoint requires ``request.peer``.
    A certificate that *is* sent is still verified against the bundle: with
    CERT_OPTIONAL a bad one aborts the handshake.
    """
    context = server_context(creds, alpn=API_ALPN)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def bootstrap_client_context(bundle_pem: bytes) -> ssl.SSLContext:
    """For a proxy with no certificate yet: verifies the controller, presents none.

    Used once, to send a CSR with the join token. No hostname check (identities
    are URIs): pass ``expected_identity`` to ``ApiClient.connect``.
    """
    return _verifying_context(ssl.PROTOCOL_TLS_CLIENT, bundle_pem, "this mesh", API_ALPN)


def api_client_context(creds: IssuedCredentials) -> ssl.SSLContext:
    """The usual mTLS client context, speaking HTTP/2 (ALPN h2) to the controller."""
    return client_context(creds, alpn=API_ALPN)


# ------------------------------------------------------------ shared HTTP/2 plumbing


class _H2Endpoint(ABC):
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
                    await _close_quietly(self._tls)
                    raise trio.BrokenResourceError(f"the peer read nothing for {WRITE_TIMEOUT:g}s")

    async def _flush_unless_writing(self) -> None:
        if not self._write_lock.locked():
            await self._flush()

    async def _send_data(
        self, stream_id: int, data: bytes, *, end_stream: bool, stopped: Callable[[], bool]
    ) -> bool:
        """Send ``data`` as the peer's flow-control windows allow; False if ``stopped()`` first."""
        view = memoryview(data)
        while view:
            await self._wait_until(
                lambda: stopped() or self._h2.local_flow_control_window(stream_id) > 0
            )
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


def _decode_headers(raw: Any) -> list[tuple[str, str]]:
    # h2 runs with header_encoding=None: names and values arrive as bytes.
    return [
        (
            name.decode("ascii", "replace") if isinstance(name, bytes) else name,
            value.decode("utf-8", "replace") if isinstance(value, bytes) else value,
        )
        for name, value in raw
    ]


def _header_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers:
        if name.startswith(":"):
            continue
        result[name] = f"{result[name]}, {value}" if name in result else value
    return result


def _encode_json(body: Any) -> bytes:
    return b"" if body is None else json.dumps(body).encode()


def _decode_json(payload: bytes) -> Any:
    """A response body: JSON when it parses, else the text (a proxy's error page, say)."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")


# ------------------------------------------------------------ server


async def serve_api(
    listener: trio.SocketListener,
    context: ssl.SSLContext,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``listener`` until cancelled: one task per connection and per stream."""

    async def serve_connection(tcp: trio.SocketStream) -> None:
        try:
            await _serve_connection(tcp, context, handler)
        except Exception:  # noqa: BLE001 - one broken connection must not stop the server
            log.exception("a connection failed unexpectedly")

    await trio.serve_listeners(serve_connection, [listener], task_status=task_status)


def _ips(tcp: trio.SocketStream) -> tuple[str | None, str | None]:
    """(the peer's IP, our IP) of a connection."""
    try:
        return str(tcp.socket.getpeername()[0]), str(tcp.socket.getsockname()[0])
    except (OSError, ValueError, IndexError):
        return None, None


def _remote_address(tcp: trio.SocketStream) -> str:
    try:
        host, port = tcp.socket.getpeername()[:2]
    except (OSError, ValueError):
        return "an unknown peer"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve_connection(
    tcp: trio.SocketStream, context: ssl.SSLContext, handler: Handler
) -> None:
    address = _remote_address(tcp)
    tls = TLSStream(tcp, context, server_side=True)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await tls.do_handshake()
        if tls.selected_alpn_protocol() != "h2":
            raise _NotHttp2
        # No certificate is allowed (CERT_OPTIONAL); one that was sent is verified.
        peer = peer_identity(tls) if tls.getpeercert(binary_form=True) else None
    except trio.TooSlowError:
        log.warning("refused a connection from %s: the TLS handshake timed out", address)
        await _close_quietly(tls)
        return
    except _NotHttp2:
        log.warning("refused a connection from %s: it did not negotiate HTTP/2 (ALPN h2)", address)
        await _close_quietly(tls)
        return
    except Exception as exc:  # noqa: BLE001 - every handshake failure is logged with its reason
        log.warning("refused a connection from %s: %s", address, handshake_failure_reason(exc))
        await _close_quietly(tls)
        return
    log.debug("connection from %s (%s)", address, peer or "no client certificate")
    await _ServerConnection(tls, address, peer, handler, _ips(tcp)).run()


class _NotHttp2(Exception):
    pass


async def _close_quietly(stream: trio.abc.AsyncResource) -> None:
    quietly = contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)
    with trio.CancelScope(shield=True), quietly:
        await stream.aclose()


@dataclass(slots=True, eq=False)
class _InboundStream:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    remote_ended: bool = False
    rejected: bool = False  # answered by the transport (413); the handler never sees it
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class _ServerConnection(_H2Endpoint):
    def __init__(
        self,
        tls: TLSStream,
        address: str,
        peer: SpiffeId | None,
        handler: Handler,
        ips: tuple[str | None, str | None] = (None, None),
    ) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        super().__init__(tls, config)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        self._address = address
        self._ips = ips
        self._peer = peer
        self._handler = handler
        self._streams: dict[int, _InboundStream] = {}
        self._nursery: trio.Nursery | None = None
        self._goaway_received = False

    async def _wait_until(self, ready: Callable[[], object]) -> None:
        # Only the reader changes what stream tasks wait for (windows); if the
        # connection dies, the nursery is cancelled and so is this wait.
        while not ready():
            await self._progress.wait()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    self._h2.initiate_connection()
                    await self._flush()
                    await self._read_loop()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client went away; its streams end with it
                finally:
                    nursery.cancel_scope.cancel()
                    # Inside the nursery: closing wakes stream tasks stuck in a write.
                    await self._close_transport()
        finally:
            self._streams.clear()

    async def _read_loop(self) -> None:
        while not self._goaway_received:
            data = await self._tls.receive_some()
            if not data:
                return
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                log.info(
                    "closing the connection from %s: HTTP/2 protocol error: %s", self._address, exc
                )
                await self._flush()  # h2 queued the GOAWAY that says why
                return
            for event in events:
                self._dispatch(event)
            self._notify_progress()
            await self._flush_unless_writing()

    # -- events --------------------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request_started(event)
        elif isinstance(event, h2.events.DataReceived):
            self._request_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._request_complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream.scope.cancel()  # the handler, or the iterator feeding the stream
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway_received = True

    def _request_started(self, event: h2.events.RequestReceived) -> None:
        headers = _decode_headers(event.headers or [])
        pseudo = dict(h for h in headers if h[0].startswith(":"))
        stream = _InboundStream(pseudo.get(":method", ""), pseudo.get(":path", "/"), headers)
        self._streams[event.stream_id] = stream
        declared = _header_dict(headers).get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            self._reject(event.stream_id, stream, _body_too_large())

    def _request_data(self, event: h2.events.DataReceived) -> None:
        # Hand the window back at once: the body is bounded, and so is what we keep.
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is None or stream.rejected:
            return
        if len(stream.body) + len(event.data or b"") > MAX_BODY:
            stream.body.clear()
            self._reject(event.stream_id, stream, _body_too_large())
            return
        stream.body += event.data or b""

    def _request_complete(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.remote_ended = True
        if stream.rejected:
            return
        path, _, query = stream.target.partition("?")
        request = ApiRequest(
            method=stream.method,
            path=path,
            query=dict(parse_qsl(query, keep_blank_values=True)),
            headers=_header_dict(stream.headers),
            body=bytes(stream.body),
            peer=self._peer,
            remote_ip=self._ips[0],
            local_ip=self._ips[1],
        )
        stream.body = bytearray()
        self._start_stream_task(stream_id, stream, self._answer, request)

    def _reject(self, stream_id: int, stream: _InboundStream, error: ApiError) -> None:
        stream.rejected = True
        self._start_stream_task(stream_id, stream, self._send_rejection, stream, error)

    # -- stream tasks ----------------------------------------------------------------

    def _start_stream_task(
        self,
        stream_id: int,
        stream: _InboundStream,
        work: Callable[..., Awaitable[None]],
        *args: Any,
    ) -> None:
        async def run() -> None:
            try:
                with stream.scope:
                    await work(stream_id, *args)
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                h2.exceptions.StreamClosedError,
            ):
                pass  # the stream or the whole connection went away meanwhile
            except h2.exceptions.ProtocolError:
                if self._h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
                    log.exception("stream %d from %s failed", stream_id, self._address)
                # else: the client closed the connection before the answer: nothing to do
            except Exception:  # noqa: BLE001 - one bad stream must not take the others down
                log.exception("stream %d from %s failed", stream_id, self._address)
                await self._reset_quietly(stream_id, ErrorCodes.INTERNAL_ERROR)
            finally:
                if self._streams.get(stream_id) is stream:
                    del self._streams[stream_id]

        assert self._nursery is not None
        self._nursery.start_soon(run)

    async def _send_rejection(
        self, stream_id: int, stream: _InboundStream, error: ApiError
    ) -> None:
        await self._send_response(stream_id, *_encode_response(error.to_response()))
        if not stream.remote_ended:
            # We answered before the body ended: tell the client to stop sending.
            self._h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
            await self._flush()

    async def _answer(self, stream_id: int, request: ApiRequest) -> None:
        outcome = await self._call_handler(request)
        if isinstance(outcome, tuple):
            await self._send_response(stream_id, *outcome)
        else:
            await self._send_event_stream(stream_id, request, outcome)

    async def _call_handler(
        self, request: ApiRequest
    ) -> tuple[list[tuple[str, str]], bytes] | AsyncIterator[Any]:
        """The handler's answer, encoded; or its iterator. Never raises (but Cancelled)."""
        try:
            outcome: Any = self._handler(request)
            if not isinstance(outcome, AsyncIterator):  # an async generator handler is fine too
                outcome = await outcome
            if isinstance(outcome, AsyncIterator):
                return outcome
            if not isinstance(outcome, ApiResponse):
                raise TypeError(
                    f"the handler returned {type(outcome).__name__}, "
                    "not ApiResponse or an async iterator"
                )
            return _encode_response(outcome)  # here, so a body json.dumps refuses is a 500
        except ApiError as error:
            return _encode_response(error.to_response())
        except Exception:  # noqa: BLE001 - a handler bug is a 500, logged; the server goes on
            log.exception(
                "%s %s from %s failed", request.method, request.path, self._peer or self._address
            )
            return _encode_response(_INTERNAL_ERROR.to_response())

    async def _send_response(
        self, stream_id: int, headers: list[tuple[str, str]], payload: bytes
    ) -> None:
        self._h2.send_headers(stream_id, headers, end_stream=not payload)
        await self._flush()
        if payload:
            await self._send_data(
                stream_id, payload, end_stream=True, stopped=self._gone(stream_id)
            )

    async def _send_event_stream(
        self, stream_id: int, request: ApiRequest, events: AsyncIterator[Any]
    ) -> None:
        try:
            self._h2.send_headers(stream_id, [(":status", "200"), ("content-type", NDJSON_TYPE)])
            await self._flush()
            gone = self._gone(stream_id)
            # Each item is flushed before the next is asked for: nothing piles up
            # here, and a slow client slows the producer down (flow control).
            while True:
                try:
                    item = await events.__anext__()
                except StopAsyncIteration:
                    break
                line = json.dumps(item).encode() + b"\n"
                if not await self._send_data(stream_id, line, end_stream=False, stopped=gone):
                    return
            self._h2.end_stream(stream_id)
            await self._flush()
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            h2.exceptions.StreamClosedError,
        ):
            raise
        except Exception:  # noqa: BLE001 - the status is sent; all we can do is abort the stream
            log.exception(
                "the stream of %s %s to %s failed",
                request.method,
                request.path,
                self._peer or self._address,
            )
            await self._reset_quietly(stream_id, ErrorCodes.INTERNAL_ERROR)
        finally:
            await _close_iterator(events, f"{request.method} {request.path}")

    def _gone(self, stream_id: int) -> Callable[[], bool]:
        return lambda: stream_id not in self._streams

    async def _reset_quietly(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(
            h2.exceptions.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._h2.reset_stream(stream_id, code)
            await self._flush()


async def _close_iterator(events: AsyncIterator[Any], what: str) -> None:
    """``aclose()`` the handler's iterator, even when we are being cancelled (client left)."""
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    with trio.CancelScope(shield=True):
        with trio.move_on_after(ACLOSE_TIMEOUT) as slow:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - cleanup trouble is logged, not raised
                log.exception("closing the stream of %s failed", what)
        if slow.cancelled_caught:
            log.warning("the stream of %s took over %gs to close", what, ACLOSE_TIMEOUT)


def _body_too_large() -> ApiError:
    return ApiError(413, f"the request body is larger than {MAX_BODY} bytes")


def _encode_response(response: ApiResponse) -> tuple[list[tuple[str, str]], bytes]:
    payload = _encode_json(response.body)
    headers = [(":status", str(response.status)), ("content-length", str(len(payload)))]
    if payload:
        headers.append(("content-type", JSON_TYPE))
    headers.extend((name.lower(), value) for name, value in response.headers)
    return headers, payload


# ------------------------------------------------------------ client


@dataclass(slots=True, eq=False)
class _OutboundStream:
    id: int
    streaming: bool  # received data is acknowledged when consumed, not when it arrives
    local_ended: bool = False
    remote_ended: bool = False
    reset_code: int | None = None
    headers: list[tuple[str, str]] | None = None
    chunks: deque[tuple[bytes, int]] = field(default_factory=deque)  # (data, flow-controlled size)

    @property
    def complete(self) -> bool:
        return self.remote_ended or self.reset_code is not None

    @property
    def open(self) -> bool:
        return self.reset_code is None and not (self.local_ended and self.remote_ended)

    @property
    def status(self) -> int:
        assert self.headers is not None
        return int(dict(self.headers).get(":status", "0"))

    def take_body(self) -> bytes:
        body = b"".join(data for data, _ in self.chunks)
        self.chunks.clear()
        return body


class ApiClient(_H2Endpoint):
    """One HTTP/2 connection to the controller, shared by concurrent requests."""

    def __init__(self, tls: TLSStream, host: str, port: int) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        super().__init__(tls, config)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: CLIENT_STREAM_WINDOW,
            },
        )
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._read_lock = trio.Lock()
        self._streams: dict[int, _OutboundStream] = {}
        self._slot_waiters = 0
        self._settings_received = False
        self._failure: str | None = None  # why the connection is unusable
        self._goaway: str | None = None  # the server is closing: no new streams
        self._closed = False

    # -- connecting ------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        context: ssl.SSLContext,
        expected_identity: SpiffeId | str | None = None,
        timeout: float = 5.0,
    ) -> ApiClient:
        """Connect, handshake (ALPN h2), check the controller's identity, exchange SETTINGS."""
        where = f"cannot connect to the controller at {host}:{port}"
        try:
            with trio.fail_after(timeout):
                tcp = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise ControllerError(f"{where}: timed out after {timeout:g}s") from None
        except OSError as exc:
            raise ControllerError(
                f"{where}: {_os_reason(exc)}",
                hint="is the controller running? start it with `mesh controller` or `mesh up`",
            ) from None
        client = cls(TLSStream(tcp, context, server_side=False), host, port)
        try:
            with trio.fail_after(timeout):
                await client._tls.do_handshake()
                if client._tls.selected_alpn_protocol() != "h2":
                    raise ControllerError(
                        f"{where}: it did not agree to speak HTTP/2 (ALPN h2)",
                        hint="is something other than the mesh controller listening there?",
                    )
                if expected_identity is not None:
                    check_peer_identity(client._tls, expected_identity)
                await client._start()
        except ControllerError:
            await client._abort()
            raise
        except trio.TooSlowError:
            await client._abort()
            raise ControllerError(f"{where}: no answer within {timeout:g}s") from None
        except IdentityError as exc:
            await client._abort()
            raise ControllerError(f"{where}: {exc.message}", hint=exc.hint) from None
        except h2.exceptions.ProtocolError as exc:
            await client._abort()
            raise ControllerError(f"{where}: HTTP/2 protocol error: {exc}") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError) as exc:
            await client._abort()
            raise ControllerError(
                f"{where}: TLS handshake failed: {handshake_failure_reason(exc)}"
            ) from None
        return client

    async def _start(self) -> None:
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CLIENT_CONNECTION_WINDOW - _DEFAULT_WINDOW)
        await self._flush()
        # Wait for the server's SETTINGS: with TLS 1.3 the server judges our
        # certificate after our side of the handshake is done, so a refusal
        # arrives here (as an alert) and is reported as a handshake failure.
        while not self._settings_received:
            data = await self._tls.receive_some()
            if not data:
                raise trio.BrokenResourceError("the controller closed the connection")
            for event in self._h2.receive_data(data):
                self._dispatch(event)
        await self._flush()

    # -- public API ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed or self._failure is not None or self._goaway is not None

    async def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> ApiResponse:
        """One request and its whole response. Non-2xx is returned; a dead connection raises."""
        try:
            with trio.fail_after(timeout):
                stream = await self._open_stream(method, path, body, streaming=False)
                try:
                    await self._wait_until(lambda: stream.complete)
                    if not stream.remote_ended or stream.headers is None:
                        raise self._stream_failure(stream, f"{method} {path}")
                    return ApiResponse(
                        status=stream.status,
                        body=_decode_json(stream.take_body()),
                        headers=tuple(h for h in stream.headers if not h[0].startswith(":")),
                    )
                finally:
                    await self._release(stream)
        except trio.TooSlowError:
            raise ControllerError(
                f"the controller at {self._address} did not answer {method} {path} "
                f"within {timeout:g}s"
            ) from None

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """An NDJSON stream: ``async with client.stream(...) as events: async for e in events``.

        Leaving the block resets the stream if it is still open (the server's
        iterator is closed). A non-200 answer raises ApiError with the server's
        message. ``timeout`` bounds only the wait for the response status.
        """
        what = f"{method} {path}"
        try:
            with trio.fail_after(timeout):
                stream = await self._open_stream(method, path, body, streaming=True)
        except trio.TooSlowError:
            raise ControllerError(
                f"the controller at {self._address} did not accept {what} within {timeout:g}s"
            ) from None
        try:
            try:
                with trio.fail_after(timeout):
                    await self._wait_until(lambda: stream.headers is not None or stream.complete)
                    if stream.headers is None:
                        raise self._stream_failure(stream, what)
                    if stream.status != 200:
                        # The error body is small: take it whole.
                        stream.streaming = False
                        await self._acknowledge(stream, _take_window_credit(stream))
                        await self._wait_until(lambda: stream.complete)
                        raise _api_error(stream.status, _decode_json(stream.take_body()))
            except trio.TooSlowError:
                raise ControllerError(
                    f"the controller at {self._address} did not answer {what} within {timeout:g}s"
                ) from None
            yield _EventStream(self, stream, what)
        finally:
            await self._release(stream)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._failure = self._failure or "the client was closed"
        await self._close_transport()
        self._notify_progress()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._streams)} streams"
        return f"<ApiClient {self._address} {state}>"

    # -- streams -----------------------------------------------------------------------

    async def _open_stream(
        self, method: str, path: str, body: Any, *, streaming: bool
    ) -> _OutboundStream:
        if not path.startswith("/"):
            raise ValueError(f"the path must start with '/': {path!r}")
        payload = _encode_json(body)
        await self._wait_for_stream_slot()
        if self._failure is not None or self._goaway is not None:
            raise self._lost()
        stream_id = self._h2.get_next_available_stream_id()
        headers = [
            (":method", method.upper()),
            (":scheme", "https"),
            (":authority", self._address),
            (":path", path),
            ("accept", NDJSON_TYPE if streaming else JSON_TYPE),
        ]
        if payload:
            headers += [("content-type", JSON_TYPE), ("content-length", str(len(payload)))]
        stream = _OutboundStream(stream_id, streaming, local_ended=not payload)
        self._streams[stream_id] = stream
        try:
            self._h2.send_headers(stream_id, headers, end_stream=not payload)
            await self._send_pending()
            if payload:
                await self._send_body(stream, payload)
        except BaseException:
            await self._release(stream)
            raise
        return stream

    def _has_free_stream_slot(self) -> bool:
        return self._h2.open_outbound_streams < self._h2.remote_settings.max_concurrent_streams

    async def _wait_for_stream_slot(self) -> None:
        """Keep to the server's MAX_CONCURRENT_STREAMS (100): beyond it h2 ends the connection."""
        if self._has_free_stream_slot():
            return
        self._slot_waiters += 1
        try:
            await self._wait_until(self._has_free_stream_slot)
        finally:
            self._slot_waiters -= 1

    async def _send_body(self, stream: _OutboundStream, payload: bytes) -> None:
        try:
            # Stops early when the server has answered already (a 413, say).
            if await self._send_data(
                stream.id, payload, end_stream=True, stopped=lambda: stream.complete
            ):
                stream.local_ended = True
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._fail(f"the connection broke: {exc}") from None

    async def _release(self, stream: _OutboundStream) -> None:
        """Forget a stream; reset it (CANCEL) if it is still open, so the server stops too."""
        self._streams.pop(stream.id, None)
        unread = sum(size for _, size in stream.chunks)
        stream.chunks.clear()
        if self._failure is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                if stream.open:
                    self._h2.reset_stream(stream.id, ErrorCodes.CANCEL)
                    stream.reset_code = ErrorCodes.CANCEL
                if unread:  # what the reader never consumed still holds the connection window
                    self._h2.acknowledge_received_data(unread, stream.id)
                if self._slot_waiters:
                    # A slot is free, but a waiter may be the task blocked reading
                    # the socket: the server's PING ACK wakes it to see the slot.
                    self._h2.ping(b"slotfree")
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                with contextlib.suppress(ControllerError):
                    await self._send_pending()
        self._notify_progress()  # a stream slot is free

    async def _acknowledge(self, stream: _OutboundStream, size: int) -> None:
        """Give back ``size`` bytes of receive window for data taken from ``stream``."""
        if size and self._failure is None:
            self._h2.acknowledge_received_data(size, stream.id)
            await self._send_pending()

    def _stream_failure(self, stream: _OutboundStream, what: str) -> ControllerError:
        if self._failure is not None or (
            self._goaway and stream.reset_code == ErrorCodes.REFUSED_STREAM
        ):
            return self._lost()
        if stream.reset_code == ErrorCodes.REFUSED_STREAM:
            return ControllerError(f"the controller at {self._address} refused {what}; try again")
        name = _code_name(stream.reset_code)
        return ControllerError(f"the controller at {self._address} aborted {what} ({name})")

    # -- reading: whoever waits reads for everyone ---------------------------------------

    async def _wait_until(self, ready: Callable[[], object]) -> None:
        while not ready():
            if self._failure is not None:
                raise self._lost()
            if self._read_lock.locked():
                await self._progress.wait()  # the reader wakes us after each batch
                continue
            async with self._read_lock:
                if ready():
                    return
                try:
                    await self._receive()
                finally:
                    # Also when cancelled: a waiter must take over reading.
                    self._notify_progress()

    async def _receive(self) -> None:
        try:
            data = await self._tls.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(f"the connection broke: {exc}" if str(exc) else "the connection broke")
            return
        if not data:
            self._fail("the controller closed the connection")
            return
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(f"HTTP/2 protocol error: {exc}")
            return
        for event in events:
            self._dispatch(event)
        if not self._write_lock.locked():
            with contextlib.suppress(ControllerError):
                await self._send_pending()  # SETTINGS/PING acks, window updates

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings_received = True
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self._connection_terminated(event)
            return
        stream_id = getattr(event, "stream_id", None)
        stream = self._streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.DataReceived):
            if stream is None or not stream.streaming:
                # Whole responses are kept anyway; a forgotten stream's data is dropped.
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None:
                stream.chunks.append(
                    (event.data or b"", event.flow_controlled_length if stream.streaming else 0)
                )
        elif stream is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            stream.headers = _decode_headers(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            stream.remote_ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset_code = event.error_code

    def _connection_terminated(self, event: h2.events.ConnectionTerminated) -> None:
        code = event.error_code
        if code not in (ErrorCodes.NO_ERROR, None):
            self._fail(f"the controller ended the connection ({_code_name(code)})")
            return
        # Streams up to last_stream_id may still be answered; later ones never will.
        self._goaway = "the controller closed the connection"
        last = event.last_stream_id or 0
        for stream in self._streams.values():
            if stream.id > last and not stream.complete:
                stream.reset_code = ErrorCodes.REFUSED_STREAM

    # -- failures ------------------------------------------------------------------------

    async def _send_pending(self) -> None:
        try:
            await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise self._fail(
                f"the connection broke: {exc}" if str(exc) else "the connection broke"
            ) from None

    def _fail(self, reason: str) -> ControllerError:
        if self._failure is None:
            self._failure = reason
            log.debug("connection to the controller at %s lost: %s", self._address, reason)
        self._notify_progress()
        return self._lost()

    def _lost(self) -> ControllerError:
        if self._closed:
            return ControllerError(f"the connection to the controller at {self._address} is closed")
        why = self._failure or self._goaway
        return ControllerError(
            f"lost the connection to the controller at {self._address}: {why}",
            hint="is the controller still running? connect again",
        )

    async def _abort(self) -> None:
        self._closed = True
        self._failure = self._failure or "the connection was not established"
        await _close_quietly(self._tls)


class _EventStream:
    """The items of an NDJSON response, one JSON value per line, as they arrive."""

    def __init__(self, client: ApiClient, stream: _OutboundStream, what: str) -> None:
        self._client = client
        self._stream = stream
        self._what = what
        self._buffer = bytearray()

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                if line.strip():
                    return self._parse(line)
                continue
            if stream.chunks:
                size = 0
                while stream.chunks:
                    data, flow_size = stream.chunks.popleft()
                    self._buffer += data
                    size += flow_size
                if len(self._buffer) > MAX_EVENT_LINE:
                    raise ControllerError(
                        f"{self._what}: an event is larger than {MAX_EVENT_LINE} bytes"
                    )
                await self._client._acknowledge(stream, size)
                continue
            if stream.remote_ended:
                if self._buffer.strip():  # a last line without its newline
                    line, self._buffer = bytes(self._buffer), bytearray()
                    return self._parse(line)
                raise StopAsyncIteration
            if stream.reset_code is not None:
                raise self._client._stream_failure(stream, self._what)
            await self._client._wait_until(lambda: stream.chunks or stream.complete)

    def _parse(self, line: bytes) -> Any:
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ControllerError(
                f"{self._what}: the controller sent a line that is not JSON: {exc}"
            ) from None


def _os_reason(exc: OSError) -> str:
    """ "connection refused": trio wraps each address's failure; the errno says it best."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        group = getattr(cause, "exceptions", None)
        cause = group[0] if group else cause.__cause__ or cause.__context__
    return str(exc)


def _take_window_credit(stream: _OutboundStream) -> int:
    """The window still owed for ``stream``'s buffered data; owed no more after this."""
    size = sum(n for _, n in stream.chunks)
    stream.chunks = deque((data, 0) for data, _ in stream.chunks)
    return size


def _code_name(code: int | None) -> str:
    if code is None:
        return "no response"
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _api_error(status: int, body: Any) -> ApiError:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        hint = body.get("hint")
        return ApiError(status, body["error"], hint if isinstance(hint, str) else None)
    return ApiError(
        status, f"the controller answered {status}" + (f": {body}" if isinstance(body, str) else "")
    )
