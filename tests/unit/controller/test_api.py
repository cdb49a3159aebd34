"""The controller's transport: real trio server and client over HTTP/2 + mTLS on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trio

from mesh.controller._api import MAX_BODY, ApiRequest, serve_api, server_context_optional_client
from mesh.errors import ControllerError
from mesh.home import MeshHome
from mesh.identity import (
    CertificateAuthority,
    IssuedCredentials,
    client_context,
    server_context,
    service_identity,
)
from mesh.net import ApiClient, ApiError, ApiResponse, TLSStream, api_client_context, bootstrap_client_context

pytestmark = pytest.mark.timeout(30)  # the hard stop; each test also runs under trio.fail_after

TD = "mesh.local"
CONTROLLER = service_identity(TD, "mesh-controller")
REVIEWS = service_identity(TD, "reviews")
TEST_TIMEOUT = 10


def bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run an async test under trio.fail_after, so a hang fails with a trio traceback."""

    @functools.wraps(test)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        with trio.fail_after(TEST_TIMEOUT):
            await test(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(MeshHome(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """Same trust domain, unrelated keys: its certificates must never be trusted."""
    return CertificateAuthority.init(MeshHome(tmp_path_factory.mktemp("other-home")))


@pytest.fixture(scope="module")
def server_creds(ca: CertificateAuthority) -> IssuedCredentials:
    return ca.issue(CONTROLLER)


@pytest.fixture(scope="module")
def client_creds(ca: CertificateAuthority) -> IssuedCredentials:
    return ca.issue(REVIEWS)


@pytest.fixture
def server_ctx(server_creds: IssuedCredentials) -> ssl.SSLContext:
    return server_context_optional_client(server_creds)


@pytest.fixture
def client_ctx(client_creds: IssuedCredentials) -> ssl.SSLContext:
    return api_client_context(client_creds)


class Server:
    """serve_api on an ephemeral port, in the test's nursery; ``stop()`` ends it."""

    def __init__(self, port: int, scope: trio.CancelScope) -> None:
        self.port = port
        self._scope = scope

    def stop(self) -> None:
        self._scope.cancel()


async def start_server(
    nursery: trio.Nursery, handler: Callable[[ApiRequest], Awaitable[Any]], context: ssl.SSLContext
) -> Server:
    async def run(*, task_status: trio.TaskStatus[Server]) -> None:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                await inner.start(serve_api, listener, context, handler)
                task_status.started(Server(listener.socket.getsockname()[1], scope))

    server: Server = await nursery.start(run)
    return server


async def connect(server: Server, context: ssl.SSLContext, **kwargs: Any) -> ApiClient:
    kwargs.setdefault("expected_identity", str(CONTROLLER))
    return await ApiClient.connect("127.0.0.1", server.port, context, **kwargs)


async def echo(request: ApiRequest) -> ApiResponse:
    return ApiResponse(
        200,
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "json": request.json(),
            "peer": str(request.peer) if request.peer else None,
            "content_type": request.headers.get("content-type"),
        },
        headers=(("X-Mesh-Test", "yes"),),
    )


# ------------------------------------------------------------ requests


@bounded
async def test_json_round_trip_with_the_client_identity(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = await start_server(nursery, echo, server_ctx)
    client = await connect(server, client_ctx)
    try:
        response = await client.request(
            "POST", "/v1/config?dry_run=1&name=a%20b", {"config": {"x": [1, 2]}}
        )
        assert response.status == 200
        assert response.body == {
            "method": "POST",
            "path": "/v1/config",
            "query": {"dry_run": "1", "name": "a b"},
            "json": {"config": {"x": [1, 2]}},
            "peer": "spiffe://mesh.local/svc/reviews",
            "content_type": "application/json",
        }
        assert ("x-mesh-test", "yes") in response.headers
        # No body: the handler sees {} from request.json().
        response = await client.request("GET", "/v1/status")
        assert response.body["json"] == {} and response.body["method"] == "GET"
    finally:
        await client.aclose()
    assert client.closed


@bounded
async def test_api_errors_and_empty_bodies_are_returned_not_raised(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def handler(request: ApiRequest) -> ApiResponse:
        if request.path == "/missing":
            raise ApiError(404, "no such endpoint: /missing", "see `mesh help`")
        if request.path == "/bad-json":
            request.json()
        return ApiResponse(204)

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        missing = await client.request("GET", "/missing")
        assert missing.status == 404
        assert missing.body == {"error": "no such endpoint: /missing", "hint": "see `mesh help`"}
        empty = await client.request("DELETE", "/v1/registrations/x")
        assert (empty.status, empty.body) == (204, None)


def test_request_json_parses_or_raises_400() -> None:
    def request(body: bytes) -> ApiRequest:
        return ApiRequest("POST", "/", {}, {}, body, None)

    assert request(b"").json() == {}
    assert request(b'{"a": 1}').json() == {"a": 1}
    with pytest.raises(ApiError, match="invalid JSON") as caught:
        request(b"{nope").json()
    assert caught.value.status == 400
    with pytest.raises(ApiError, match="invalid JSON"):
        request(b"\xff\xfe\x00").json()


# ------------------------------------------------------------ identities and TLS


@bounded
async def test_bootstrap_client_without_certificate_reaches_the_server_as_no_peer(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, ca: CertificateAuthority
) -> None:
    server = await start_server(nursery, echo, server_ctx)
    async with await connect(server, bootstrap_client_context(ca.bundle_pem)) as client:
        response = await client.request("POST", "/v1/certificates", {"csr": "...", "token": "t"})
    assert response.status == 200
    assert response.body["peer"] is None


@bounded
async def test_bootstrap_client_is_refused_where_certificates_are_required(
    nursery: trio.Nursery, server_creds: IssuedCredentials, ca: CertificateAuthority
) -> None:
    strict = server_context(server_creds, alpn=("h2",))
    server = await start_server(nursery, echo, strict)
    expected = "TLS handshake failed: the peer requires a client certificate and we sent none"
    with pytest.raises(ControllerError, match=expected):
        await connect(server, bootstrap_client_context(ca.bundle_pem))


@bounded
async def test_client_certificate_from_another_ca_is_refused(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.controller")
    server = await start_server(nursery, echo, server_ctx)
    foreign = other_ca.issue(REVIEWS)
    # It trusts our bundle, so only the server's verdict on its certificate can refuse it.
    impostor = IssuedCredentials(
        foreign.identity, foreign.cert_chain_pem, foreign.key_pem, ca.bundle_pem, foreign.not_after
    )
    expected = (
        f"cannot connect to the controller at 127.0.0.1:{server.port}: "
        "TLS handshake failed: the peer does not trust our certificate's CA"
    )
    with pytest.raises(ControllerError, match=expected):
        await connect(server, api_client_context(impostor))
    await wait_for_log(caplog, "refused a connection from 127.0.0.1:")
    assert "not issued by this mesh's CA" in caplog.text

    # The server goes on serving the clients it does trust.
    async with await connect(server, client_ctx) as client:
        assert (await client.request("GET", "/")).status == 200


@bounded
async def test_client_refuses_a_server_from_another_ca(
    nursery: trio.Nursery, other_ca: CertificateAuthority, client_ctx: ssl.SSLContext
) -> None:
    server = await start_server(
        nursery, echo, server_context_optional_client(other_ca.issue(CONTROLLER))
    )
    with pytest.raises(
        ControllerError,
        match="TLS handshake failed: the peer certificate was not issued by this mesh's CA",
    ):
        await connect(server, client_ctx)


@bounded
async def test_expected_identity_mismatch_is_a_controller_error(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = await start_server(nursery, echo, server_ctx)
    with pytest.raises(ControllerError) as caught:
        await connect(
            server, client_ctx, expected_identity="spiffe://mesh.local/svc/not-the-controller"
        )
    assert caught.value.message == (
        f"cannot connect to the controller at 127.0.0.1:{server.port}: "
        "peer presented spiffe://mesh.local/svc/mesh-controller, "
        "expected spiffe://mesh.local/svc/not-the-controller"
    )


@bounded
async def test_client_without_alpn_h2_is_refused(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    client_creds: IssuedCredentials,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.controller")
    server = await start_server(nursery, echo, server_ctx)
    with pytest.raises(ControllerError, match=r"did not agree to speak HTTP/2 \(ALPN h2\)"):
        await connect(server, client_context(client_creds))  # ALPN http/1.1
    await wait_for_log(caplog, "did not negotiate HTTP/2")


def test_contexts(ca: CertificateAuthority, server_creds: IssuedCredentials) -> None:
    bootstrap = bootstrap_client_context(ca.bundle_pem)
    assert bootstrap.minimum_version is ssl.TLSVersion.TLSv1_3
    assert bootstrap.verify_mode is ssl.CERT_REQUIRED and not bootstrap.check_hostname
    server = server_context_optional_client(server_creds)
    assert server.verify_mode is ssl.CERT_OPTIONAL
    assert server.minimum_version is ssl.TLSVersion.TLSv1_3


# ------------------------------------------------------------ streams


@bounded
async def test_stream_delivers_each_item_as_it_is_produced(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    first_received = trio.Event()
    produced: list[int] = []

    async def events() -> AsyncIterator[Any]:
        produced.append(1)
        yield {"type": "snapshot", "version": 1}
        # Item 2 exists only once the client holds item 1: buffering would deadlock.
        await first_received.wait()
        produced.append(2)
        yield {"type": "snapshot", "version": 2}

    async def handler(request: ApiRequest) -> Any:
        return events() if request.path == "/v1/watch" else ApiResponse(200, {"ok": True})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        received = []
        async with client.stream("GET", "/v1/watch?service=reviews") as stream:
            async for event in stream:
                received.append(event)
                if event["version"] == 1:
                    assert produced == [1]
                    first_received.set()
        assert received == [{"type": "snapshot", "version": 1}, {"type": "snapshot", "version": 2}]
        # The connection is still good after a stream that ended normally.
        assert (await client.request("GET", "/")).body == {"ok": True}


class RecordingIterator:
    """An async iterator that yields one item, then waits forever; records aclose()."""

    def __init__(self) -> None:
        self.closed = trio.Event()
        self._sent = False

    def __aiter__(self) -> RecordingIterator:
        return self

    async def __anext__(self) -> Any:
        if not self._sent:
            self._sent = True
            return {"n": 1}
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed.set()


@bounded
async def test_leaving_the_stream_early_closes_the_server_iterator(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    iterators: list[RecordingIterator] = []

    async def handler(request: ApiRequest) -> Any:
        if request.path == "/v1/watch":
            iterators.append(RecordingIterator())
            return iterators[-1]
        return ApiResponse(200, {"ok": True})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        async with client.stream("GET", "/v1/watch") as stream:
            assert await stream.__anext__() == {"n": 1}
        await iterators[0].closed.wait()  # the RST_STREAM reached the server, which closed it
        # The reset touched one stream only.
        assert (await client.request("GET", "/")).body == {"ok": True}
        assert not client.closed


@bounded
async def test_client_disconnecting_closes_the_server_iterator(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    iterator = RecordingIterator()

    async def handler(request: ApiRequest) -> Any:
        return iterator

    server = await start_server(nursery, handler, server_ctx)
    client = await connect(server, client_ctx)
    async with client.stream("GET", "/v1/watch") as stream:
        assert await stream.__anext__() == {"n": 1}
        await client.aclose()
    await iterator.closed.wait()


@bounded
async def test_twenty_concurrent_requests_on_one_connection_while_a_stream_is_open(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    in_flight = 0
    all_arrived = trio.Event()
    more_events: trio.MemorySendChannel[Any]
    more_events, event_source = trio.open_memory_channel[Any](0)

    async def handler(request: ApiRequest) -> Any:
        nonlocal in_flight
        if request.path == "/v1/watch":

            async def events() -> AsyncIterator[Any]:
                yield {"type": "hello"}
                async for event in event_source:
                    yield event

            return events()
        in_flight += 1
        if in_flight == 20:
            all_arrived.set()
        await all_arrived.wait()  # every request is in flight at once before any is answered
        return ApiResponse(200, {"n": request.json()["n"]})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        async with client.stream("GET", "/v1/watch") as stream:
            assert await stream.__anext__() == {"type": "hello"}
            results: dict[int, Any] = {}

            async def one(n: int) -> None:
                response = await client.request("POST", "/v1/ack", {"n": n})
                results[n] = (response.status, response.body)

            async with trio.open_nursery() as requests:
                for n in range(20):
                    requests.start_soon(one, n)
            assert results == {n: (200, {"n": n}) for n in range(20)}
            # The watch stream lived through it all.
            await more_events.send({"type": "snapshot", "version": 7})
            assert await stream.__anext__() == {"type": "snapshot", "version": 7}


@bounded
async def test_a_slow_stream_consumer_slows_the_producer(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    produced = 0
    item = "x" * 32 * 1024

    async def events() -> AsyncIterator[Any]:
        nonlocal produced
        for n in range(1000):  # 32 MB if nothing held it back
            produced += 1
            yield {"n": n, "pad": item}

    async def handler(request: ApiRequest) -> Any:
        return events()

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        async with client.stream("GET", "/v1/tap") as stream:
            assert (await stream.__anext__())["n"] == 0
            await trio.sleep(0.3)
            # Flow control: at most the 1 MiB stream window is in flight (~32 items).
            assert produced < 40
            count = 1
            async for event in stream:
                assert event["n"] == count
                count += 1
    assert count == 1000


@bounded
async def test_stream_with_an_error_status_raises_api_error(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def handler(request: ApiRequest) -> Any:
        raise ApiError(
            403,
            "spiffe://mesh.local/svc/reviews may not act for service 'ratings'",
            "ask as ratings",
        )

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        with pytest.raises(ApiError) as caught:
            async with client.stream("GET", "/v1/watch?service=ratings"):
                pytest.fail("the block must not run")
        assert caught.value.status == 403
        assert (
            caught.value.message
            == "spiffe://mesh.local/svc/reviews may not act for service 'ratings'"
        )
        assert caught.value.hint == "ask as ratings"
        assert not client.closed


@bounded
async def test_iterator_failing_midway_aborts_the_stream(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def events() -> AsyncIterator[Any]:
        yield {"n": 1}
        raise RuntimeError("snapshot exploded")

    async def handler(request: ApiRequest) -> Any:
        return events() if request.path == "/v1/watch" else ApiResponse(200, {"ok": True})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        async with client.stream("GET", "/v1/watch") as stream:
            assert await stream.__anext__() == {"n": 1}
            with pytest.raises(ControllerError, match=r"aborted GET /v1/watch \(INTERNAL_ERROR\)"):
                await stream.__anext__()
        assert (await client.request("GET", "/ok")).body == {"ok": True}
    assert "snapshot exploded" in caplog.text


# ------------------------------------------------------------ limits and failures


@bounded
async def test_body_over_one_mib_is_413_without_calling_the_handler(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    calls: list[str] = []

    async def handler(request: ApiRequest) -> ApiResponse:
        calls.append(request.path)
        return ApiResponse(200, {"size": len(request.body)})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        response = await client.request("POST", "/v1/config", "x" * MAX_BODY)
        assert response.status == 413
        assert "larger than 1048576 bytes" in response.body["error"]
        assert calls == []
        # Just under the limit is fine, on the same connection.
        response = await client.request("POST", "/v1/config", "x" * (MAX_BODY - 10))
        assert (response.status, response.body) == (200, {"size": MAX_BODY - 8})


@bounded
async def test_body_over_one_mib_without_content_length_is_413(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """The size is counted as DATA arrives: a client that declares nothing is stopped too."""
    calls: list[str] = []

    async def handler(request: ApiRequest) -> ApiResponse:
        calls.append(request.path)
        return ApiResponse(200)

    server = await start_server(nursery, handler, server_ctx)
    tls = TLSStream(
        await trio.open_tcp_stream("127.0.0.1", server.port), client_ctx, server_side=False
    )
    await tls.do_handshake()
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/up")]
    )
    await tls.send_all(conn.data_to_send())
    status = None
    reset = False
    sent = 0
    chunk = b"y" * 16384
    while status is None or not reset:
        while status is None and not reset and conn.local_flow_control_window(1) >= len(chunk):
            conn.send_data(1, chunk)
            sent += len(chunk)
        await tls.send_all(conn.data_to_send())
        for event in conn.receive_data(await tls.receive_some()):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.StreamReset):
                reset = True
    await tls.aclose()
    assert status == b"413" and calls == []
    assert MAX_BODY < sent < 4 * MAX_BODY  # stopped soon after the limit


@bounded
async def test_client_keeps_to_the_server_limit_of_100_concurrent_streams(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    active = peak = 0
    hundred_in_flight = trio.Event()

    async def handler(request: ApiRequest) -> ApiResponse:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 100:
            hundred_in_flight.set()
        await hundred_in_flight.wait()
        await trio.sleep(0.001)
        active -= 1
        return ApiResponse(200)

    server = await start_server(nursery, handler, server_ctx)
    statuses: list[int] = []
    async with await connect(server, client_ctx) as client:

        async def one() -> None:
            statuses.append((await client.request("GET", "/v1/status")).status)

        async with trio.open_nursery() as requests:
            for _ in range(150):  # the last 50 wait for a free stream, not for an error
                requests.start_soon(one)
    assert statuses == [200] * 150
    assert peak == 100


@bounded
async def test_a_stream_slot_freed_by_the_client_wakes_a_waiting_request(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """All 100 streams held by idle watches: leaving one lets the 101st request through."""

    async def handler(request: ApiRequest) -> Any:
        if request.path == "/v1/watch":
            return RecordingIterator()
        return ApiResponse(200, {"ok": True})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client, contextlib.AsyncExitStack() as stack:
        watches = [
            await stack.enter_async_context(client.stream("GET", "/v1/watch")) for _ in range(99)
        ]
        answered = trio.Event()

        async def late_request() -> None:
            assert (await client.request("GET", "/v1/status")).body == {"ok": True}
            answered.set()

        async with client.stream("GET", "/v1/watch") as hundredth:
            assert await hundredth.__anext__() == {"n": 1}
            nursery.start_soon(late_request)
            await trio.sleep(0.2)
            assert not answered.is_set()  # it waits for a slot (and reads the socket meanwhile)
        await answered.wait()
        assert len(watches) == 99


@bounded
async def test_header_list_over_64_kib_ends_the_connection(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = await start_server(nursery, echo, server_ctx)
    async with await connect(server, client_ctx) as client:
        with pytest.raises(ControllerError, match="lost the connection to the controller"):
            await client.request("GET", "/" + "a" * 70_000)
    async with await connect(server, client_ctx) as client:  # others are served as before
        assert (await client.request("GET", "/" + "a" * 60_000)).status == 200


@bounded
async def test_handler_exception_is_500_and_the_server_keeps_serving(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="mesh.controller")

    async def handler(request: ApiRequest) -> ApiResponse:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/not-json":
            return ApiResponse(200, {"x": object()})
        return ApiResponse(200, {"ok": True})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        boom = await client.request("GET", "/boom")
        assert (boom.status, boom.body) == (500, {"error": "internal error"})
        assert (await client.request("GET", "/not-json")).status == 500
        assert (await client.request("GET", "/fine")).body == {"ok": True}
    tracebacks = [
        r.exc_info[1] for r in caplog.records if r.name == "mesh.controller" and r.exc_info
    ]
    assert any("handler bug" in str(exc) for exc in tracebacks)  # logged with its traceback
    async with await connect(server, client_ctx) as client:  # and new connections too
        assert (await client.request("GET", "/fine")).status == 200


@bounded
async def test_request_timeout_resets_the_stream_and_cancels_the_handler(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    cancelled = trio.Event()

    async def handler(request: ApiRequest) -> ApiResponse:
        if request.path == "/slow":
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()
        return ApiResponse(200, {"ok": True})

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        with pytest.raises(ControllerError, match=r"did not answer GET /slow within 0.2s"):
            await client.request("GET", "/slow", timeout=0.2)
        await cancelled.wait()
        assert (await client.request("GET", "/fast")).body == {"ok": True}


@bounded
async def test_dead_server_is_a_controller_error(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    server = await start_server(nursery, echo, server_ctx)
    client = await connect(server, client_ctx)
    assert (await client.request("GET", "/")).status == 200
    server.stop()
    await trio.sleep(0.1)
    with pytest.raises(
        ControllerError, match=f"lost the connection to the controller at 127.0.0.1:{server.port}"
    ):
        await client.request("GET", "/")
    assert client.closed
    with pytest.raises(ControllerError, match="lost the connection"):  # and it stays an error
        await client.request("GET", "/")
    await client.aclose()

    with pytest.raises(ControllerError) as caught:
        await ApiClient.connect("127.0.0.1", server.port, client_ctx)
    assert (
        caught.value.message
        == f"cannot connect to the controller at 127.0.0.1:{server.port}: connection refused"
    )
    assert caught.value.hint and "mesh controller" in caught.value.hint


@bounded
async def test_server_dying_mid_stream_is_a_controller_error(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def handler(request: ApiRequest) -> Any:
        return RecordingIterator()

    server = await start_server(nursery, handler, server_ctx)
    async with await connect(server, client_ctx) as client:
        async with client.stream("GET", "/v1/watch") as stream:
            assert await stream.__anext__() == {"n": 1}
            server.stop()
            with pytest.raises(ControllerError, match="lost the connection to the controller"):
                await stream.__anext__()


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> None:
    """The server logs from its own task: give it the moment it needs."""
    while text not in caplog.text:
        await trio.sleep(0.01)
