"""The dashboard's HTTP server over in-memory streams: the gate on every path, pages, JSON and both event streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from mesh.dashboard._auth import Gate
from mesh.dashboard._model import Topics
from mesh.dashboard._routes import load_static
from mesh.dashboard._server import Changes, DashboardServer
from mesh.errors import ControllerError

TOKEN = "unit-test-token"
PORT = 50999
COOKIE = f"mesh_dashboard_{PORT}={TOKEN}"


class FakeLink:
    """Stands in for the controller's /v1/tap (the server's only direct use of the link)."""

    def __init__(self, items: list[dict[str, Any]], fail: str | None = None) -> None:
        self.items = items
        self.fail = fail
        self.queries: list[dict[str, str]] = []
        self.closed = trio.Event()

    @asynccontextmanager
    async def tap(self, query: dict[str, str]) -> AsyncIterator[AsyncIterator[Any]]:
        self.queries.append(query)
        if self.fail:
            raise ControllerError(self.fail, hint="start it")

        async def items() -> AsyncIterator[Any]:
            for item in self.items:
                yield item
            await trio.sleep_forever()  # a tap stays open until someone leaves

        try:
            yield items()
        finally:
            self.closed.set()


class Harness:
    def __init__(self, link: FakeLink | None = None) -> None:
        self.changes = Changes()
        self.topics = Topics(self.changes.notify)
        self.link = link or FakeLink([])
        self.server = DashboardServer(Gate(TOKEN, PORT), load_static(), self.topics, self.changes, self.link)  # type: ignore[arg-type]

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[tuple[trio.testing.MemoryStapledStream, trio.Event]]:
        client, server = trio.testing.memory_stream_pair()
        done = trio.Event()

        async def serve() -> None:
            await self.server.serve_connection(server)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield client, done
            nursery.cancel_scope.cancel()


def request(path: str, cookie: str | None = COOKIE, host: str = f"127.0.0.1:{PORT}", method: str = "GET", extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + ([f"Cookie: {cookie}"] if cookie else []) + ([extra] if extra else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_until(stream: trio.abc.Stream, marker: bytes, seen: bytearray | None = None) -> bytes:
    buffer = seen if seen is not None else bytearray()
    with trio.fail_after(5):
        while marker not in buffer:
            data = await stream.receive_some(65536)
            assert data, f"closed before {marker!r}: {bytes(buffer)!r}"
            buffer += data
    return bytes(buffer)


async def exchange(harness: Harness, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request, one complete (Content-Length) response."""
    async with harness.connection() as (client, _):
        await client.send_all(raw)
        data = await read_until(client, b"\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        buffer = bytearray(body)
        with trio.fail_after(5):
            while len(buffer) < length:
                buffer += await client.receive_some(65536)
        return int(lines[0].split()[1]), headers, bytes(buffer)


@pytest.mark.parametrize("path", ["/", "/index.html", "/static/dashboard.js", "/api/state", "/api/events", "/api/tap", "/nothing"])
async def test_every_path_needs_the_token(path: str) -> None:
    status, _, body = await exchange(Harness(), request(path, cookie=None))
    assert status == 401 and b"mesh dashboard" in body
    status, _, _ = await exchange(Harness(), request(path, cookie=f"mesh_dashboard_{PORT}=nope"))
    assert status == 403


async def test_dns_rebinding_host_is_refused() -> None:
    status, _, body = await exchange(Harness(), request("/api/state", host=f"attacker.example:{PORT}"))
    assert status == 403 and b"rebinding" in body
    status, _, _ = await exchange(Harness(), request(f"/?token={TOKEN}", cookie=None, host="attacker.example"))
    assert status == 403


async def test_token_login_then_the_page_with_a_strict_policy() -> None:
    status, headers, _ = await exchange(Harness(), request(f"/?token={TOKEN}", cookie=None))
    assert status == 303 and headers["location"] == "/"
    assert headers["set-cookie"] == f"{COOKIE}; Path=/; HttpOnly; SameSite=Strict"
    status, headers, body = await exchange(Harness(), request("/"))
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="/static/dashboard.js">' in body
    assert "default-src 'none'" in headers["content-security-policy"] and "connect-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"


async def test_state_is_every_topic_as_json() -> None:
    harness = Harness()
    harness.topics.publish("status", {"controller": {"address": "127.0.0.1:4190"}})
    harness.topics.publish("check", {"report": {"success": True}})
    status, headers, body = await exchange(harness, request("/api/state"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"check": {"report": {"success": True}}, "status": {"controller": {"address": "127.0.0.1:4190"}}}


async def test_only_reads_and_keeps_the_connection_alive() -> None:
    harness = Harness()
    async with harness.connection() as (client, _):
        await client.send_all(request("/api/state", method="POST", extra="Content-Length: 2") + b"{}")
        seen = bytearray()
        first = await read_until(client, b"only reads\n", seen)
        assert first.startswith(b"HTTP/1.1 405 ")
        await client.send_all(request("/static/icon.svg"))
        both = await read_until(client, b"</svg>\n", seen)
        assert both[len(first):].startswith(b"HTTP/1.1 200 OK") and b"image/svg+xml" in both


async def test_garbage_gets_400_and_a_close() -> None:
    harness = Harness()
    async with harness.connection() as (client, done):
        await client.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        answer = await read_until(client, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
        with trio.fail_after(5):
            await done.wait()


async def test_event_stream_sends_every_topic_then_changes_and_ends_with_the_browser() -> None:
    harness = Harness()
    harness.topics.publish("status", {"n": 1})
    harness.topics.publish("stats", {"rps": 2.5})
    async with harness.connection() as (client, done):
        await client.send_all(request("/api/events"))
        seen = bytearray()
        await read_until(client, b'data: {"rps":2.5}', seen)
        head = bytes(seen).split(b"\r\n\r\n")[0].decode().lower()
        assert "content-type: text/event-stream" in head and "transfer-encoding: chunked" in head
        assert b"retry: 2000" in seen and b"event: status" in seen
        harness.topics.publish("status", {"n": 2})
        await read_until(client, b'data: {"n":2}', seen)
        assert bytes(seen).count(b"event: stats") == 1  # unchanged topics are not sent again
        await client.send_eof()  # the browser goes away
        with trio.fail_after(5):
            await done.wait()


async def test_tap_stream_relays_the_controllers_items_with_the_filter() -> None:
    link = FakeLink([{"type": "tapping", "service": "web"}, {"type": "request", "path": "/a\n\nevent: fake", "status": 200}])
    harness = Harness(link)
    async with harness.connection() as (client, done):
        await client.send_all(request("/api/tap?service=web&path=/api&direction=inbound"))
        seen = bytearray()
        await read_until(client, b"event: request", seen)
        await read_until(client, b"\n\n", seen)  # the whole message
        assert link.queries == [{"service": "web", "path": "/api", "direction": "inbound", "max_rps": "25"}]
        assert b"event: tapping" in seen and b"\nevent: fake" not in seen  # a path cannot forge an event
        await client.send_eof()
        with trio.fail_after(5):
            await done.wait()
            await link.closed.wait()  # the controller's tap is closed with the page's


async def test_tap_refuses_a_bad_filter_before_asking_the_controller() -> None:
    link = FakeLink([])
    status, _, body = await exchange(Harness(link), request("/api/tap?direction=sideways"))
    assert status == 400 and b"direction" in body
    status, _, body = await exchange(Harness(link), request("/api/tap?colour=red"))
    assert status == 400 and b"colour" in body
    assert link.queries == []


async def test_tap_says_why_when_the_controller_refuses() -> None:
    harness = Harness(FakeLink([], fail="cannot connect to the controller"))
    async with harness.connection() as (client, _):
        await client.send_all(request("/api/tap"))
        seen = await read_until(client, b"event: failed")
        await read_until(client, b"start it", bytearray(seen))
