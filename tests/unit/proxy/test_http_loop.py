"""The HTTP/1 loop in-process: a memory stream for the client, scripted upstreams, a mock clock.

Every deadline (head, body stall, response, idle), drain, and every step of the attempt plan
(retry, failover, stale replay) is exercised here without a socket or a real second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from mesh.config import RetryPolicy
from mesh.proxy._drain import Drain
from mesh.proxy._exchange import ConnectFailure, Reason, Reject, RequestRecord, Timeouts, UpstreamKey
from mesh.proxy._http import HttpProxyConnection
from mesh.proxy._pool import UpstreamConnection
from tests.unit.proxy._scripted import ONE, TWO, ScriptedRouter

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# What a scripted upstream does with one connection: read the request, then answer (or not).
Script = Callable[[trio.testing.MemoryReceiveStream, trio.testing.MemorySendStream], Awaitable[None]]


async def read_request(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


def answer(response: bytes, *, close: bool = False) -> Script:
    async def script(up_in: trio.abc.ReceiveStream, up_out: trio.abc.SendStream) -> None:
        await read_request(up_in)
        await up_out.send_all(response)
        if close:
            await up_out.aclose()
        else:
            await trio.sleep_forever()

    return script


def silent() -> Script:
    async def script(up_in: trio.abc.ReceiveStream, up_out: trio.abc.SendStream) -> None:
        await read_request(up_in)
        await trio.sleep_forever()

    return script


def hang_up() -> Script:
    async def script(up_in: trio.abc.ReceiveStream, up_out: trio.abc.SendStream) -> None:
        await up_out.aclose()

    return script


@dataclass
class ScriptedPool:
    """A ConnectionPool whose connections are memory streams to scripted upstreams, per key."""

    nursery: trio.Nursery
    scripts: dict[UpstreamKey, list[Script]]
    refuse: set[UpstreamKey] = field(default_factory=set)
    stale: list[UpstreamConnection] = field(default_factory=list)  # handed out first, as if pooled
    opened: list[UpstreamKey] = field(default_factory=list)
    contexts: None = None
    connect_timeout: float = 5.0

    def take_idle(self, key: UpstreamKey, now: float) -> UpstreamConnection | None:
        return None  # every connection comes from acquire (the stale ones first)

    def keep_idle(self, conn: UpstreamConnection, reusable: bool, now: float) -> bool:
        return False  # the loop closes it, as release does

    async def acquire(self, key: UpstreamKey) -> UpstreamConnection:
        if self.stale:
            return self.stale.pop(0)
        if key in self.refuse:
            raise ConnectFailure(Reason.CONNECT_FAILED, f"cannot connect to {key.address}: connection refused")
        self.opened.append(key)
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.scripts[key].pop(0), theirs, theirs)
        conn = UpstreamConnection(ours, key)
        conn.uses = 1
        return conn

    async def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        await conn.aclose()


@dataclass
class Run:
    answer: bytes
    records: list[RequestRecord]
    router: ScriptedRouter
    pool: ScriptedPool
    elapsed: float


def run(
    client_bytes: list[bytes],
    scripts: dict[UpstreamKey, list[Script]] | None = None,
    *,
    router: ScriptedRouter | None = None,
    timeouts: Timeouts = Timeouts(),
    refuse: set[UpstreamKey] | None = None,
    stale: bool = False,
    hang_up_after: int | None = None,
    drain_after: float | None = None,
) -> Run:
    """Serve one client connection in-process on a mock clock; what the client read."""
    router = router or ScriptedRouter()
    records: list[RequestRecord] = []
    received = bytearray()
    result: dict[str, object] = {}

    async def main() -> None:
        started = trio.current_time()
        client, server = trio.testing.memory_stream_pair()
        drain = Drain()
        async with trio.open_nursery() as upstreams:
            pool = ScriptedPool(upstreams, scripts or {}, refuse or set())
            if stale:
                ours, theirs = trio.testing.memory_stream_pair()
                await theirs.aclose()  # died while idle in the pool
                conn = UpstreamConnection(ours, ONE)
                conn.uses = 2
                pool.stale.append(conn)
            result["pool"] = pool
            conn_ = HttpProxyConnection(server, b"", router, pool, records.append, timeouts, drain)  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn_.serve)
                for piece in client_bytes:
                    await client.send_all(piece)
                if drain_after is not None:
                    await trio.sleep(drain_after)
                    drain.start()
                while True:
                    data = await client.receive_some()
                    if not data:
                        break
                    received.extend(data)
                    if hang_up_after is not None and len(received) >= hang_up_after:
                        break
                # When the proxy's side ended (or the client hung up), as a client closes its own.
                result["elapsed"] = trio.current_time() - started
                await client.aclose()
            upstreams.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return Run(bytes(received), records, router, result["pool"], result["elapsed"])  # type: ignore[arg-type]


GET = b"GET /x HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"


def is_ok(answer: bytes) -> bool:
    """The app's 200 "ok", as the proxy relays it (it says Connection: close to a closing client)."""
    return answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")


def test_a_partial_head_gets_408_at_the_head_timeout() -> None:
    got = run([b"GET /x HTTP/1.1\r\nHost: web\r\n"], timeouts=Timeouts(head_timeout=10.0))
    assert got.answer.startswith(b"HTTP/1.1 408 ") and b"x-mesh-error: head-timeout" in got.answer
    assert 10.0 <= got.elapsed < 10.5
    assert [r.mesh_error for r in got.records] == ["head-timeout"]


def test_a_stalled_body_gets_408_and_a_slow_app_504() -> None:
    post = b"POST /x HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\n0123456789"
    got = run([post], {ONE: [silent()]}, timeouts=Timeouts(body_timeout=7.0))
    assert got.answer.startswith(b"HTTP/1.1 408 ") and b"x-mesh-error: body-timeout" in got.answer
    assert 7.0 <= got.elapsed < 7.5
    # The response timeout counts from the end of the body: a whole request, an app that never answers.
    got = run([GET], {ONE: [silent()]})
    assert got.answer.startswith(b"HTTP/1.1 504 ") and b"x-mesh-error: timeout" in got.answer
    assert 5.0 <= got.elapsed < 5.5


def test_an_idle_keepalive_connection_closes_and_draining_ends_it_at_once() -> None:
    keep = b"GET /x HTTP/1.1\r\nHost: web\r\n\r\n"
    got = run([keep], {ONE: [answer(OK)]}, timeouts=Timeouts(idle_timeout=30.0))
    assert got.answer == OK and 30.0 <= got.elapsed < 30.5
    got = run([keep], {ONE: [answer(OK)]}, timeouts=Timeouts(idle_timeout=30.0), drain_after=1.0)
    assert got.answer == OK and got.elapsed < 1.5


def test_a_route_retry_goes_to_the_other_endpoint() -> None:
    failing = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    router = ScriptedRouter(RetryPolicy(attempts=2, on=("5xx",)))
    got = run([GET], {ONE: [answer(failing)], TWO: [answer(OK)]}, router=router)
    assert is_ok(got.answer)
    assert got.pool.opened == [ONE, TWO]
    assert got.records[0].retries == 1 and got.records[0].status == 200
    assert router.finished_with == [("10.0.0.2:80", True)]


def test_a_connect_failure_fails_over_once_without_a_retry_policy() -> None:
    got = run([GET], {TWO: [answer(OK)]}, refuse={ONE})
    assert is_ok(got.answer) and got.pool.opened == [TWO]
    # Both refuse: the one failover spent, the client gets the 502 of the last attempt.
    got = run([GET], {}, refuse={ONE, TWO})
    assert got.answer.startswith(b"HTTP/1.1 502 ") and b"x-mesh-error: connect-failed" in got.answer


def test_a_pooled_connection_that_died_while_idle_is_replayed_once() -> None:
    got = run([GET], {ONE: [answer(OK)]}, stale=True)
    assert is_ok(got.answer) and got.pool.opened == [ONE]
    # A fresh connection that closes without answering is not replayed (it may have been processed).
    got = run([GET], {ONE: [hang_up()]})
    assert got.answer.startswith(b"HTTP/1.1 502 ") and b"x-mesh-error: upstream-closed" in got.answer


def test_a_client_that_hangs_up_mid_response_is_client_reset_and_no_verdict() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 200_000

    async def slow_body(up_in: trio.abc.ReceiveStream, up_out: trio.abc.SendStream) -> None:
        await read_request(up_in)
        await up_out.send_all(big)
        await trio.sleep(1)
        await up_out.send_all(b"x" * 100_000)
        await trio.sleep_forever()

    router = ScriptedRouter()
    got = run([GET], {ONE: [slow_body]}, router=router, hang_up_after=100_000)
    assert got.records[0].mesh_error == "client-reset" and got.records[0].status == 200
    assert router.finished_with == [("10.0.0.1:80", None)]  # no strike, no latency sample


def test_a_reject_keeps_the_connection_for_the_next_request_but_never_after_connect() -> None:
    reject = Reject(403, Reason.FORBIDDEN, "client may not call web", "client")
    two = b"GET /a HTTP/1.1\r\nHost: web\r\n\r\nGET /b HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
    got = run([two], router=ScriptedRouter(reject=reject))
    assert got.answer.count(b"HTTP/1.1 403 ") == 2
    connect = b"CONNECT web:80 HTTP/1.1\r\nHost: web\r\n\r\nGET /c HTTP/1.1\r\nHost: web\r\n\r\n"
    got = run([connect], router=ScriptedRouter(reject=reject))
    assert got.answer.count(b"HTTP/1.1 403 ") == 1  # what follows a refused CONNECT is not read as HTTP


def test_a_whole_request_before_bytes_that_do_not_parse_is_answered_first() -> None:
    got = run([b"GET /a HTTP/1.1\r\nHost: web\r\n\r\nNOT HTTP\r\n\r\n"], {ONE: [answer(OK)]})
    assert got.answer.startswith(OK)
    assert b"HTTP/1.1 400 " in got.answer[len(OK) :]


def test_head_gets_a_mesh_error_without_a_body() -> None:
    reject = Reject(503, Reason.NO_ENDPOINTS, "no endpoints for service 'web'", "web")
    got = run([b"HEAD /x HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"], router=ScriptedRouter(reject=reject))
    head, _, body = got.answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Content-Length: " in head and body == b""
