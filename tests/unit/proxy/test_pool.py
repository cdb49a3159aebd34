"""The HTTP/1 pool's fast paths: an idle connection taken and put back without waiting, and the
socket under an upstream connection told that the next read waits for an answer."""

from __future__ import annotations

import socket
import ssl

import trio
import trio.testing

from mesh.net import FastSocketStream, TLSStream
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


def test_an_answer_pending_reaches_the_socket_under_a_peer_tls_connection_only() -> None:
    a, b = socket.socketpair()
    try:
        plain = FastSocketStream(a)  # an app: it may have answered already, the read goes first
        app = UpstreamConnection(plain, KEY)
        assert app.socket_stream is None
        app.answer_pending()
        assert not plain.wait_first
        under_tls = FastSocketStream(b)
        tls = TLSStream(under_tls, ssl.create_default_context(), server_side=False)
        conn = UpstreamConnection(tls, KEY)
        assert conn.socket_stream is under_tls
        conn.answer_pending()
        assert under_tls.wait_first
        memory = UpstreamConnection(_stream(), KEY)
        assert memory.socket_stream is None
        memory.answer_pending()  # another kind of stream: nothing to tell
    finally:
        a.close()
        b.close()
