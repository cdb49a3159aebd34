"""TLSStream.send_nowait: what the socket does not take at once waits in the stream, in order."""

from __future__ import annotations

import socket

import pytest
import trio

from mesh.home import MeshHome
from mesh.identity import CertificateAuthority, client_context, server_context, service_identity
from mesh.net import FastSocketStream, TLSStream

pytestmark = pytest.mark.timeout(30)


async def test_send_nowait_over_a_full_socket_keeps_the_records_for_the_next_send(tmp_path) -> None:  # noqa: ANN001
    ca = CertificateAuthority.init(MeshHome(tmp_path / "home"))
    a, b = socket.socketpair()
    client = TLSStream(FastSocketStream(a), client_context(ca.issue(service_identity(ca.trust_domain, "a"))), server_side=False)
    server = TLSStream(FastSocketStream(b), server_context(ca.issue(service_identity(ca.trust_domain, "b"))), server_side=True)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await client.do_handshake()
        assert client.send_nowait(b"") == 0
        assert client.send_nowait(b"hello ") == 6 and not client.pending
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = bytes(range(256)) * 4096
        assert client.send_nowait(big) == len(big)
        assert client.pending  # the socket took part of the records: the rest waits here
        assert client.send_nowait(b"later") == 0  # nothing overtakes the waiting records
        received = bytearray()

        async def read_all() -> None:
            while len(received) < 6 + len(big) + 5:
                received.extend(await server.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await client.send_all(b"")  # sends what waits
            assert not client.pending
            await client.send_all(b"later")
        assert bytes(received) == b"hello " + big + b"later"
        await client.aclose()
        await server.aclose()
