"""Child processes that die with their parent.

``trio.lowlevel.open_process`` forks from a worker thread, and Linux's
``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits — so a
child would get SIGTERM whenever trio retired that idle thread. Here the fork
happens on the trio thread itself (a short, bounded block), and the exit is
awaited through a pidfd (or polling where there is none).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

import trio

POLL_SECONDS = 0.1


def _child_setup() -> None:
    """In the child, before exec: its own process group, and SIGTERM when our process dies."""
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    """A started child process (the parts of trio.Process that mesh uses)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        self._watching: trio.Event | None = None
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            pass

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """The exit status. Several tasks may wait: one watches the pidfd, the others its event."""
        while self._popen.poll() is None:
            if self._watching is not None:
                await self._watching.wait()
                continue
            self._watching = trio.Event()
            try:
                if self._pidfd is not None:
                    await trio.lowlevel.wait_readable(self._pidfd)
                else:
                    await trio.sleep(POLL_SECONDS)
            finally:
                self._watching.set()
                self._watching = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return self._popen.returncode

    def send_signal(self, signum: int) -> None:
        if self._popen.poll() is None:
            try:
                self._popen.send_signal(signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def open_child(argv: Sequence[str], **options: Any) -> Child:
    """Start ``argv`` from this (the trio) thread, so PR_SET_PDEATHSIG means "when mesh dies"."""
    popen = subprocess.Popen(list(argv), preexec_fn=_child_setup, **options)  # noqa: PLW1509
    return Child(popen)
