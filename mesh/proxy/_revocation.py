"""What a proxy does when the controller lists a certificate as revoked.

New handshakes with a revoked peer fail in ``mesh.identity.verified_peer`` (a
set lookup per handshake). Connections opened before the revocation are cut
here, at once, when a snapshot brings the new list: every mTLS connection is
remembered by its peer's serial (weakly: a closed connection is forgotten with
its socket), and a revoked serial's sockets are shut down, which ends whatever
task reads or writes them. Nothing is checked per request (docs/security.md).
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Iterable

# Serials of peers seen: renewals bring new ones; forget those without a live connection now and then.
PRUNE_AT = 1024


class PeerConnections:
    """The open mTLS connections of a proxy, by the serial of the peer's certificate."""

    def __init__(self) -> None:
        self._by_serial: dict[int, weakref.WeakSet[socket.socket]] = {}

    def track(self, serial: int, sock: socket.socket | None) -> None:
        if sock is None:
            return
        sockets = self._by_serial.get(serial)
        if sockets is None:
            if len(self._by_serial) >= PRUNE_AT:
                self._prune()
            sockets = self._by_serial[serial] = weakref.WeakSet()
        sockets.add(sock)

    def cut(self, serials: Iterable[int]) -> int:
        """Shut down every connection with these peer serials; returns how many were open."""
        return sum(_shut_down(self._by_serial.pop(serial, ())) for serial in serials)

    def cut_all(self) -> int:
        """Every connection (this proxy's own certificate was revoked: no peer may keep it)."""
        return self.cut(list(self._by_serial))

    def __len__(self) -> int:
        return sum(len(sockets) for sockets in self._by_serial.values())

    def _prune(self) -> None:
        for serial in [s for s, sockets in self._by_serial.items() if not sockets]:
            del self._by_serial[serial]


def _shut_down(sockets: Iterable[socket.socket]) -> int:
    count = 0
    for sock in list(sockets):
        try:
            # Not close(): the fd stays owned by the task serving it, which now reads EOF and
            # closes it in its own time; a write fails at once.
            sock.shutdown(socket.SHUT_RDWR)
            count += 1
        except OSError:  # closed meanwhile, or never connected
            pass
    return count
