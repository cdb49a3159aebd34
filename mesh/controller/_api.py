"""The controller's side of its JSON API over HTTP/2 and mTLS (the shared plumbing and the
client are in ``mesh.net``).

``serve_api(listener, context, handler)`` accepts TLS connections (ALPN ``h2`` required)
and calls ``handler(ApiRequest)`` once per stream; the handler returns an ``ApiResponse``
(one JSON body) or an async iterator (an NDJSON stream: one JSON line per item, sent as
soon as it is produced). One reader task per connection, one task per stream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from mesh.identity import (
    IssuedCredentials,
    SpiffeId,
    VerifiedPeer,
    handshake_failure_reason,
    server_context,
    verified_peer,
)
from mesh.net import (
    API_ALPN,
    HANDSHAKE_TIMEOUT,
    JSON_TYPE,
    MAX_HEADER_LIST_SIZE,
    NDJSON_TYPE,
    ApiError,
    ApiResponse,
    H2ApiEndpoint,
    TLSStream,
    close_quietly,
    decode_headers,
    encode_json,
    header_dict,
)

log = logging.getLogger("mesh.controller")

MAX_BODY = 1024 * 1024  # request bodies; larger ones get 413 without reaching the handler
MAX_CONCURRENT_STREAMS = 100
ACLOSE_TIMEOUT = 5.0  # for a handler's iterator to clean up after its client left


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
    peer_serial: int | None = None  # the client certificate's serial (revoked ones are refused)

    def json(self) -> Any:
        """The body as JSON (``{}`` when empty); ApiError 400 when it is not JSON."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ApiError(400, f"invalid JSON: {exc}") from None


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


async def _serve_connection(tcp: trio.SocketStream, context: ssl.SSLContext, handler: Handler) -> None:
    address = _remote_address(tcp)
    tls = TLSStream(tcp, context, server_side=True)
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await tls.do_handshake()
        if tls.selected_alpn_protocol() != "h2":
            raise _NotHttp2
        # No certificate is allowed (CERT_OPTIONAL); one that was sent is verified.
        # A revoked certificate is refused by the handler, with a reason the caller can read.
        peer = verified_peer(tls) if tls.getpeercert(binary_form=True) else None
    except trio.TooSlowError:
        log.warning("refused a connection from %s: the TLS handshake timed out", address)
        await close_quietly(tls)
        return
    except _NotHttp2:
        log.warning("refused a connection from %s: it did not negotiate HTTP/2 (ALPN h2)", address)
        await close_quietly(tls)
        return
    except Exception as exc:  # noqa: BLE001 - every handshake failure is logged with its reason
        log.warning("refused a connection from %s: %s", address, handshake_failure_reason(exc))
        await close_quietly(tls)
        return
    log.debug("connection from %s (%s)", address, peer.identity if peer else "no client certificate")
    await _ServerConnection(tls, address, peer, handler, _ips(tcp)).run()


class _NotHttp2(Exception):
    pass


@dataclass(slots=True, eq=False)
class _InboundStream:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    remote_ended: bool = False
    rejected: bool = False  # answered by the transport (413); the handler never sees it
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class _ServerConnection(H2ApiEndpoint):
    def __init__(
        self,
        tls: TLSStream,
        address: str,
        peer: VerifiedPeer | None,
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
                log.info("closing the connection from %s: HTTP/2 protocol error: %s", self._address, exc)
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
        headers = decode_headers(event.headers or [])
        pseudo = dict(h for h in headers if h[0].startswith(":"))
        stream = _InboundStream(pseudo.get(":method", ""), pseudo.get(":path", "/"), headers)
        self._streams[event.stream_id] = stream
        declared = header_dict(headers).get("content-length", "")
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
            headers=header_dict(stream.headers),
            body=bytes(stream.body),
            peer=self._peer.identity if self._peer else None,
            remote_ip=self._ips[0],
            local_ip=self._ips[1],
            peer_serial=self._peer.serial if self._peer else None,
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

    async def _send_rejection(self, stream_id: int, stream: _InboundStream, error: ApiError) -> None:
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

    async def _call_handler(self, request: ApiRequest) -> tuple[list[tuple[str, str]], bytes] | AsyncIterator[Any]:
        """The handler's answer, encoded; or its iterator. Never raises (but Cancelled)."""
        try:
            outcome: Any = self._handler(request)
            if not isinstance(outcome, AsyncIterator):  # an async generator handler is fine too
                outcome = await outcome
            if isinstance(outcome, AsyncIterator):
                return outcome
            if not isinstance(outcome, ApiResponse):
                raise TypeError(f"the handler returned {type(outcome).__name__}, not ApiResponse or an async iterator")
            return _encode_response(outcome)  # here, so a body json.dumps refuses is a 500
        except ApiError as error:
            return _encode_response(error.to_response())
        except Exception:  # noqa: BLE001 - a handler bug is a 500, logged; the server goes on
            log.exception(
                "%s %s from %s failed",
                request.method,
                request.path,
                (self._peer.identity if self._peer else self._address),
            )
            return _encode_response(_INTERNAL_ERROR.to_response())

    async def _send_response(self, stream_id: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self._h2.send_headers(stream_id, headers, end_stream=not payload)
        await self._flush()
        if payload:
            await self._send_data(stream_id, payload, end_stream=True, stopped=self._gone(stream_id))

    async def _send_event_stream(self, stream_id: int, request: ApiRequest, events: AsyncIterator[Any]) -> None:
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
                (self._peer.identity if self._peer else self._address),
            )
            await self._reset_quietly(stream_id, ErrorCodes.INTERNAL_ERROR)
        finally:
            await _close_iterator(events, f"{request.method} {request.path}")

    def _gone(self, stream_id: int) -> Callable[[], bool]:
        return lambda: stream_id not in self._streams

    async def _reset_quietly(self, stream_id: int, code: ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
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
    payload = encode_json(response.body)
    headers = [(":status", str(response.status)), ("content-length", str(len(payload)))]
    if payload:
        headers.append(("content-type", JSON_TYPE))
    headers.extend((name.lower(), value) for name, value in response.headers)
    return headers, payload
