"""FastSocketStream keeps trio's stream contract: trio's own conformance checks, plus fairness."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from mesh.net._socket import YIELD_EVERY, FastSocketStream


async def _pair() -> tuple[FastSocketStream, FastSocketStream]:
    a, b = socket.socketpair()
    return FastSocketStream(a), FastSocketStream(b)


async def _clogged_pair() -> tuple[FastSocketStream, FastSocketStream]:
    """A pair whose send buffers are full both ways: the next send_all waits for the reader."""
    left, right = await _pair()
    for sock in (left.socket, right.socket):
        try:
            while True:
                sock.send(b"x" * 65536)
        except BlockingIOError:
            pass
    return left, right


async def test_trio_stream_conformance(monkeypatch: pytest.MonkeyPatch) -> None:
    # trio's contract makes every call a schedule point; ours yields every YIELD_EVERY calls
    # (the point of the class), so the contract is checked with a yield on every call.
    monkeypatch.setattr("mesh.net._socket.YIELD_EVERY", 1)
    await trio.testing.check_half_closeable_stream(_pair, _clogged_pair)


async def test_adopts_a_trio_socket_stream() -> None:
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = FastSocketStream.adopt(await trio.open_tcp_stream("127.0.0.1", port))
        server_sock, _ = await listener.accept()
        server = FastSocketStream.adopt(trio.SocketStream(server_sock))
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await client.send_all(b"ping")
        assert await server.receive_some(10) == b"ping"
        await client.send_eof()
        assert await server.receive_some(10) == b""
        await server.aclose()
        await client.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some(1)


async def test_a_busy_stream_lets_other_tasks_run() -> None:
    """Data always ready must not mean the other tasks never run."""
    left, right = await _pair()
    await left.send_all(b"x" * 200_000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()
        before = ticks
        for _ in range(YIELD_EVERY * 4):
            assert await right.receive_some(1)
        assert ticks - before >= 3
        nursery.cancel_scope.cancel()
    await left.aclose()
    await right.aclose()


async def test_receive_is_cancellable_and_close_wakes_a_waiter() -> None:
    left, right = await _pair()
    with trio.move_on_after(0.05) as scope:
        await right.receive_some(10)
    assert scope.cancelled_caught

    async def close_soon() -> None:
        await trio.sleep(0.05)
        await right.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with pytest.raises(trio.ClosedResourceError):
            await right.receive_some(10)
    await left.aclose()


async def test_send_nowait_takes_what_the_kernel_takes_and_keeps_the_order() -> None:
    left, right = await _pair()
    assert left.send_nowait(b"first ") == 6
    left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 4096  # more than the buffers hold
    taken = left.send_nowait(big)
    assert 0 < taken < len(big)
    received = bytearray()

    async def read_all() -> None:
        while len(received) < 6 + len(big):
            received.extend(await right.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await left.send_all(big[taken:])
    assert bytes(received) == b"first " + big
    await left.aclose()
    assert left.send_nowait(b"late") == 0  # closed: nothing taken (send_all says why)
    await right.aclose()


async def test_a_read_told_to_wait_first_waits_once_and_still_gets_what_is_there() -> None:
    """``wait_first``: no recv before epoll says readable; cancellable; the flag is used once."""
    left, right = await _pair()
    right.wait_first = True
    with trio.move_on_after(0.05) as scope:
        await right.receive_some(10)
    assert scope.cancelled_caught
    right.wait_first = True
    await left.send_all(b"answer")  # already there when the read starts: the wait returns at once
    assert await right.receive_some(10) == b"answer"
    assert right.wait_first is False
    await left.send_eof()
    right.wait_first = True
    assert await right.receive_some(10) == b""  # an EOF is readable too
    await left.aclose()
    await right.aclose()
