"""``ApiClient``: one HTTP/2 connection to the controller, shared by concurrent requests and
long-lived streams (a proxy's watch stream runs while it renews its certificate on the same
connection). The client has no background task at all: whichever caller waits for something
reads for everyone (like httpcore), so an ``ApiClient`` needs no nursery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.errors import ControllerError, IdentityError
from mesh.identity import (
    SpiffeId,
    check_peer_identity,
    handshake_failure_reason,
)
from mesh.net._api_base import (
    CLIENT_CONNECTION_WINDOW,
    CLIENT_STREAM_WINDOW,
    DEFAULT_WINDOW,
    JSON_TYPE,
    MAX_EVENT_LINE,
    NDJSON_TYPE,
    ApiResponse,
    H2ApiEndpoint,
    api_error,
    close_quietly,
    code_name,
    decode_headers,
    decode_json,
    encode_json,
)
from mesh.net._streams import os_reason
from mesh.net._tls import TLSStream

log = logging.getLogger("mesh.api")


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


class ApiClient(H2ApiEndpoint):
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
                f"{where}: {os_reason(exc)}",
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
            raise ControllerError(f"{where}: TLS handshake failed: {handshake_failure_reason(exc)}") from None
        return client

    async def _start(self) -> None:
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CLIENT_CONNECTION_WINDOW - DEFAULT_WINDOW)
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

    async def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> ApiResponse:
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
                        body=decode_json(stream.take_body()),
                        headers=tuple(h for h in stream.headers if not h[0].startswith(":")),
                    )
                finally:
                    await self._release(stream)
        except trio.TooSlowError:
            raise ControllerError(
                f"the controller at {self._address} did not answer {method} {path} within {timeout:g}s"
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
                        raise api_error(stream.status, decode_json(stream.take_body()))
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

    async def _open_stream(self, method: str, path: str, body: Any, *, streaming: bool) -> _OutboundStream:
        if not path.startswith("/"):
            raise ValueError(f"the path must start with '/': {path!r}")
        payload = encode_json(body)
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
            if await self._send_data(stream.id, payload, end_stream=True, stopped=lambda: stream.complete):
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
        if self._failure is not None or (self._goaway and stream.reset_code == ErrorCodes.REFUSED_STREAM):
            return self._lost()
        if stream.reset_code == ErrorCodes.REFUSED_STREAM:
            return ControllerError(f"the controller at {self._address} refused {what}; try again")
        name = code_name(stream.reset_code)
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
                stream.chunks.append((event.data or b"", event.flow_controlled_length if stream.streaming else 0))
        elif stream is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            stream.headers = decode_headers(event.headers or [])
        elif isinstance(event, h2.events.StreamEnded):
            stream.remote_ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset_code = event.error_code

    def _connection_terminated(self, event: h2.events.ConnectionTerminated) -> None:
        code = event.error_code
        if code not in (ErrorCodes.NO_ERROR, None):
            self._fail(f"the controller ended the connection ({code_name(code)})")
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
            raise self._fail(f"the connection broke: {exc}" if str(exc) else "the connection broke") from None

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
        await close_quietly(self._tls)


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
                    raise ControllerError(f"{self._what}: an event is larger than {MAX_EVENT_LINE} bytes")
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
            raise ControllerError(f"{self._what}: the controller sent a line that is not JSON: {exc}") from None


def _take_window_credit(stream: _OutboundStream) -> int:
    """The window still owed for ``stream``'s buffered data; owed no more after this."""
    size = sum(n for _, n in stream.chunks)
    stream.chunks = deque((data, 0) for data, _ in stream.chunks)
    return size
