"""Sockets of this test process inside a network namespace the fuzz suite made.

The fuzzed proxies run in a namespace of their own (tests/integration/netns.py): a fuzzed
``Host`` header or absolute URL may make the outbound listener dial any name or address
(egress), and inside that namespace nothing it dials can leave it — there is no route out,
and the resolver is unreachable. The fuzzer, though, runs here in pytest. A socket belongs to
the namespace its creating thread was in, so one worker thread enters the namespace
(``setns``) and creates sockets; the caller connects and talks on them from its own thread.
"""

from __future__ import annotations

import ctypes
import os
import socket
from concurrent.futures import ThreadPoolExecutor

CLONE_NEWNET = 0x40000000


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class NamespaceDialer:
    """Connects to 127.0.0.1 ports of the namespace ``netns``."""

    def __init__(self, netns: str) -> None:
        self._maker = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{netns}", initializer=_enter, initargs=(netns,))
        # Fail here, clearly, if the thread could not enter the namespace.
        self._maker.submit(lambda: None).result(timeout=10)

    def connect(self, port: int, timeout: float) -> socket.socket:
        sock = self._maker.submit(socket.socket, socket.AF_INET, socket.SOCK_STREAM).result(timeout=10)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self._maker.shutdown(wait=True)
