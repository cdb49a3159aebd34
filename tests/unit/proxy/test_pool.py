"""The HTTP/1 pool's fast paths: an idle connection taken and put back without waiting."""

from __future__ import annotations

import trio
import trio.testing

from mesh.proxy._exchange import UpstreamKey
from mesh.proxy._pool import ConnectionPool, UpstreamConnection

KEY = UpstreamKey("127.0.0.1", 9, None, None)


def _stream() -> trio.abc.Stream:
    return trio.testing.MemorySendStream()  # type: ignore[return-value]


def test_an_idle_connection_is_taken_while_fresh_and_only_then() -> None:
    pool = ConnectionPool(None, idle_timeout=60.0)
    conn = UpstreamConnection(_stream(), KEY)
    assert pool.keep_idle(conn, True, now=100.0)
    assert pool.take_idle(KEY, now=159.0) is conn
    assert conn.uses == 1
    assert pool.take_idle(KEY, now=159.0) is None  # taken: nothing idle left
    assert pool.keep_idle(conn, True, now=100.0)
    assert pool.take_idle(KEY, now=160.0) is None  # stale: acquire() closes it and opens another
    assert pool.take_idle(UpstreamKey("127.0.0.1", 10, None, None), now=100.0) is None


def test_a_connection_that_cannot_carry_another_request_is_not_kept() -> None:
    pool = ConnectionPool(None, max_idle_per_key=1)
    assert not pool.keep_idle(UpstreamConnection(_stream(), KEY), False, now=1.0)
    pending = UpstreamConnection(_stream(), KEY)
    pending.pending = [object()]  # type: ignore[list-item]
    assert not pool.keep_idle(pending, True, now=1.0)
    assert pool.keep_idle(UpstreamConnection(_stream(), KEY), True, now=1.0)
    assert not pool.keep_idle(UpstreamConnection(_stream(), KEY), True, now=1.0)  # no room
