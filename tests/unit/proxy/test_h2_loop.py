"""The HTTP/2 loop in-process: an h2 client over a memory stream, scripted h2 upstreams, a mock clock.

The same steps of the attempt plan as the HTTP/1 loop (tests/unit/proxy/test_http_loop.py):
an answer relayed, the response deadline, failover on a connect failure, REFUSED_STREAM
replayed on another connection, a policy's refusal, the idle timeout and drain — without a
socket or a real second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import trio
import trio.testing

from mesh.proxy._drain import Drain
from mesh.proxy._exchange import ConnectFailure, Reason, Reject, RequestRecord, Timeouts, UpstreamKey
from mesh.proxy._h2_server import H2ProxyConnection
from mesh.proxy._h2_upstream import H2Pool
from tests.unit.proxy._scripted import ONE, TWO, ScriptedRouter

REQUEST = [(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "web")]


class Peer:
    """One side of an HTTP/2 connection over a memory stream, driven by hand."""

    def __init__(self, stream: trio.abc.Stream, *, client: bool) -> None:
        self.stream = stream
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client, header_encoding="utf-8"))
        self.h2.initiate_connection()

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def events(self) -> list[h2.events.Event]:
        """The next events; [] when the other side closed."""
        data = await self.stream.receive_some()
        if not data:
            return []
        events = self.h2.receive_data(data)
        await self.flush()
        return events


# What a scripted upstream does with one connection.
Script = Callable[[Peer], Awaitable[None]]


def answer(status: str = "200", body: bytes = b"ok") -> Script:
    async def script(up: Peer) -> None:
        await up.flush()
        while True:
            events = await up.events()
            if not events and up.stream is not None:
                return
            for event in events:
                if isinstance(event, h2.events.StreamEnded):
                    up.h2.send_headers(event.stream_id, [(":status", status), ("content-length", str(len(body)))])
                    up.h2.send_data(event.stream_id, body, end_stream=True)
                    await up.flush()

    return script


def refuse_streams() -> Script:
    async def script(up: Peer) -> None:
        await up.flush()
        while events := await up.events():
            for event in events:
                if isinstance(event, h2.events.RequestReceived):
                    up.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    await up.flush()

    return script


def silent() -> Script:
    async def script(up: Peer) -> None:
        await up.flush()
        while await up.events():
            pass

    return script


@dataclass
class Upstreams:
    """Scripted connections per key, opened in place of sockets (``H2Pool.open_stream``)."""

    nursery: trio.Nursery
    scripts: dict[UpstreamKey, list[Script]]
    refuse: set[UpstreamKey] = field(default_factory=set)
    opened: list[UpstreamKey] = field(default_factory=list)

    async def open(self, key: UpstreamKey, contexts: object, timeout: float) -> trio.abc.Stream:
        if key in self.refuse:
            raise ConnectFailure(Reason.CONNECT_FAILED, f"cannot connect to {key.address}: connection refused")
        self.opened.append(key)
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.scripts[key].pop(0), Peer(theirs, client=False))
        return ours


@dataclass
class Run:
    responses: dict[int, tuple[list[tuple[str, str]], bytes]]  # stream → (headers, body)
    resets: dict[int, int]
    goaway: bool
    records: list[RequestRecord]
    upstreams: Upstreams
    elapsed: float  # when the client got every answer, or the connection ended


def run(
    scripts: dict[UpstreamKey, list[Script]],
    *,
    streams: int = 1,
    router: ScriptedRouter | None = None,
    timeouts: Timeouts = Timeouts(),
    refuse: set[UpstreamKey] | None = None,
    wait_for_close: bool = False,
    drain_after: float | None = None,
) -> Run:
    """Serve one h2 client in-process on a mock clock; what the client saw."""
    records: list[RequestRecord] = []
    result: dict[str, object] = {}

    async def main() -> None:
        started = trio.current_time()
        drain = Drain()
        async with trio.open_nursery() as upstream_tasks:
            pool = H2Pool(None)
            upstreams = Upstreams(upstream_tasks, scripts, refuse or set())
            pool.open_stream = upstreams.open  # type: ignore[method-assign,assignment]
            await upstream_tasks.start(pool.run)
            ours, theirs = trio.testing.memory_stream_pair()
            conn = H2ProxyConnection(
                theirs, b"", router or ScriptedRouter(), pool, records.append, timeouts, drain  # type: ignore[arg-type]
            )
            client = Peer(ours, client=True)
            got: dict[int, tuple[list[tuple[str, str]], bytes]] = {}
            resets: dict[int, int] = {}
            goaway = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.serve)
                ids = []
                for _ in range(streams):
                    stream_id = client.h2.get_next_available_stream_id()
                    client.h2.send_headers(stream_id, REQUEST, end_stream=True)
                    ids.append(stream_id)
                await client.flush()
                if drain_after is not None:
                    await trio.sleep(drain_after)
                    drain.start()
                heads: dict[int, list[tuple[str, str]]] = {}
                bodies: dict[int, bytes] = {}
                while wait_for_close or len(got) + len(resets) < streams:
                    events = await client.events()
                    if not events:
                        break
                    for event in events:
                        if isinstance(event, h2.events.ResponseReceived):
                            heads[event.stream_id] = list(event.headers)
                        elif isinstance(event, h2.events.DataReceived):
                            bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                            client.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                        elif isinstance(event, h2.events.StreamEnded):
                            got[event.stream_id] = (heads.get(event.stream_id, []), bodies.get(event.stream_id, b""))
                        elif isinstance(event, h2.events.StreamReset):
                            resets[event.stream_id] = event.error_code
                        elif isinstance(event, h2.events.ConnectionTerminated):
                            goaway = True
                    await client.flush()
                result["elapsed"] = trio.current_time() - started
                await ours.aclose()
            result.update(responses=got, resets=resets, goaway=goaway, upstreams=upstreams)
            upstream_tasks.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return Run(
        result["responses"], result["resets"], result["goaway"], records, result["upstreams"], result["elapsed"]  # type: ignore[arg-type]
    )


def status(response: tuple[list[tuple[str, str]], bytes]) -> str:
    return dict(response[0])[":status"]


def test_an_answer_is_relayed_on_every_stream() -> None:
    got = run({ONE: [answer()]}, streams=3)
    assert sorted(got.responses) == [1, 3, 5]
    assert all(status(r) == "200" and r[1] == b"ok" for r in got.responses.values())
    assert got.upstreams.opened == [ONE]  # one upstream connection carries the three streams
    assert [r.status for r in got.records] == [200, 200, 200]


def test_no_response_head_within_the_timeout_is_a_504() -> None:
    got = run({ONE: [silent()]})  # the route's timeout: 5 s (ScriptedRouter)
    (response,) = got.responses.values()
    assert status(response) == "504" and dict(response[0])["x-mesh-error"] == "timeout"
    assert 5.0 <= got.elapsed < 5.5


def test_a_connect_failure_fails_over_to_the_other_endpoint() -> None:
    got = run({TWO: [answer()]}, refuse={ONE})
    (response,) = got.responses.values()
    assert status(response) == "200" and got.upstreams.opened == [TWO]
    # Both refuse: the client gets the 502 of the last attempt.
    got = run({}, refuse={ONE, TWO})
    (response,) = got.responses.values()
    assert status(response) == "502" and dict(response[0])["x-mesh-error"] == "connect-failed"


def test_a_refused_stream_is_replayed_on_another_connection() -> None:
    got = run({ONE: [refuse_streams(), answer()]})
    (response,) = got.responses.values()
    assert status(response) == "200" and response[1] == b"ok"
    assert got.upstreams.opened == [ONE, ONE]


def test_a_policy_refusal_is_answered_without_an_upstream() -> None:
    reject = Reject(403, Reason.FORBIDDEN, "spiffe://t/svc/a may not call web")
    got = run({}, router=ScriptedRouter(reject=reject))
    (response,) = got.responses.values()
    assert status(response) == "403" and dict(response[0])["x-mesh-error"] == "forbidden"
    assert got.upstreams.opened == []


def test_an_idle_connection_ends_with_goaway_and_draining_ends_it_at_once() -> None:
    got = run({ONE: [answer()]}, timeouts=Timeouts(idle_timeout=30.0), wait_for_close=True)
    assert got.goaway and status(got.responses[1]) == "200"
    assert 30.0 <= got.elapsed < 30.5
    got = run({ONE: [answer()]}, timeouts=Timeouts(idle_timeout=30.0), wait_for_close=True, drain_after=1.0)
    assert got.goaway and got.elapsed < 1.5
