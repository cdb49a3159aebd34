"""A proxy cuts open connections with a peer whose certificate is revoked: real socket pairs."""

from __future__ import annotations

import gc
import socket

from mesh.proxy._revocation import PeerConnections


def test_cut_shuts_down_the_revoked_peers_connections_only() -> None:
    peers = PeerConnections()
    revoked, kept = socket.socketpair(), socket.socketpair()
    peers.track(0xAB, revoked[0])
    peers.track(0xCD, kept[0])
    peers.track(0xAB, None)  # nothing to track: ignored
    assert peers.cut([0xAB, 0xEF]) == 1
    assert revoked[1].recv(10) == b""  # the other end sees the connection end
    kept[1].setblocking(False)
    kept[0].send(b"x")
    assert kept[1].recv(10) == b"x"
    assert peers.cut_all() == 1 and len(peers) == 0
    for pair in (revoked, kept):
        for sock in pair:
            sock.close()


def test_closed_connections_are_forgotten() -> None:
    peers = PeerConnections()
    pair = socket.socketpair()
    peers.track(1, pair[0])
    pair[0].close()
    assert peers.cut([1]) == 0  # closed already: nothing to shut down, no error
    held = pair[1]
    peers.track(2, held)
    del pair
    gc.collect()
    assert len(peers) == 1  # held by its connection's task
    held.close()
    del held
    gc.collect()
    assert len(peers) == 0  # its task let go of it: the weak set forgets it
