"""The controller's HTTP/1.1 client for etcd's JSON gateway: idle keep-alive connections per
member, JSON in and out, over ``mesh.net``'s small HTTP/1.1 client (why that client and not
httpx: its module docstring).

Why not the controller's own HTTP/2 client (``mesh.net.ApiClient``): etcd serves the JSON
gateway over HTTP/1.1 on plain ports (it routes HTTP/2 there to gRPC only).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from mesh.net import HttpConnection, HttpFailure

__all__ = ["HttpFailure", "HttpPool"]

JSON_HEADERS = {"Content-Type": "application/json"}


class HttpPool:
    """Idle keep-alive connections per member."""

    def __init__(self, tls: ssl.SSLContext | None, connect_timeout: float = 2.0, idle_per_host: int = 4) -> None:
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.idle_per_host = idle_per_host
        self._idle: dict[tuple[str, int], list[HttpConnection]] = {}

    async def post(
        self, host: str, port: int, path: str, payload: Any, headers: dict[str, str], timeout: float
    ) -> tuple[int, Any]:
        """POST JSON, return ``(status, JSON answer)``; HttpFailure when the member cannot be used."""
        body = json.dumps(payload).encode()
        connection = self._take(host, port)
        try:
            with trio.fail_after(timeout):
                if connection is None:
                    connection = await HttpConnection.open(host, port, self.tls, self.connect_timeout)
                status, data = await connection.post(path, body, {**JSON_HEADERS, **headers})
        except trio.TooSlowError:
            if connection is not None:
                await connection.aclose()
            raise HttpFailure(f"{host}:{port}: no answer within {timeout:g}s") from None
        except BaseException:
            if connection is not None:
                await connection.aclose()
            raise
        self._give_back(host, port, connection)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            raise HttpFailure(f"{host}:{port}: the answer is not JSON ({data[:80]!r})") from None

    @asynccontextmanager
    async def stream(
        self, host: str, port: int, path: str, payload: Any, headers: dict[str, str]
    ) -> AsyncIterator[AsyncIterator[tuple[int, Any]]]:
        """A streamed POST: yields ``(status, JSON object)`` per line, on a connection of its own."""
        connection = await HttpConnection.open(host, port, self.tls, self.connect_timeout)

        async def objects() -> AsyncIterator[tuple[int, Any]]:
            async for status, line in connection.lines(path, json.dumps(payload).encode(), {**JSON_HEADERS, **headers}):
                try:
                    yield status, json.loads(line)
                except ValueError:
                    raise HttpFailure(f"{host}:{port}: a streamed line is not JSON ({line[:80]!r})") from None

        try:
            yield objects()
        finally:
            await connection.aclose()

    def _take(self, host: str, port: int) -> HttpConnection | None:
        idle = self._idle.get((host, port))
        return idle.pop() if idle else None

    def _give_back(self, host: str, port: int, connection: HttpConnection) -> None:
        idle = self._idle.setdefault((host, port), [])
        if connection.reusable and len(idle) < self.idle_per_host:
            idle.append(connection)
        else:
            connection.close_now()

    async def forget(self, host: str, port: int) -> None:
        """Close the idle connections to a member that failed (the next call dials afresh)."""
        for connection in self._idle.pop((host, port), []):
            await connection.aclose()

    async def aclose(self) -> None:
        for key in list(self._idle):
            await self.forget(*key)
