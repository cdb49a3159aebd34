"""StaticFileRegistry: a MemoryRegistry kept in step with an endpoints file by polling.

Polling (not inotify) because it works the same on every OS, inside containers
and on network mounts, and the file is tiny. Each poll is one ``stat``; the file
is read only when ``(mtime_ns, size, inode)`` changed — the inode catches editors
and ``mv`` that replace the file, mtime and size catch writes in place.

A file that turns invalid or disappears keeps the last good endpoints: a typo
while editing must not empty the mesh. One warning is logged per problem (not per
poll); when the file is fixed, the new endpoints apply and an info line says so.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import trio

from mesh.discovery._registry import MemoryRegistry
from mesh.discovery._static_file import parse_endpoints_bytes, read_endpoints_file
from mesh.errors import DiscoveryError

logger = logging.getLogger("mesh.discovery")

# A file modified this recently may be modified again within the same mtime tick
# (coarse on some filesystems) without its size changing. Until it is older than
# this, every poll compares the bytes too ("racy git" has the same problem).
_RACY_WINDOW_NS = 2_000_000_000

_Signature = tuple[int, int, int]


class StaticFileRegistry(MemoryRegistry):
    """Endpoints from a static TOML file, reloaded when the file changes.

    The constructor loads the file, so a bad file fails at startup with
    DiscoveryError. ``run()`` then polls it every ``poll_interval`` seconds.
    """

    __slots__ = ("_good_bytes", "_path", "_poll_interval", "_problem", "_signature")

    def __init__(self, path: str | os.PathLike[str], poll_interval: float = 0.5) -> None:
        super().__init__()
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self._path = Path(path)
        self._poll_interval = poll_interval
        self._problem: str | None = None  # what was last logged as wrong; None while the file is good
        try:
            stat = os.stat(self._path)
        except OSError:
            stat = None  # read_endpoints_file below says what is wrong
        data = read_endpoints_file(self._path)
        self.replace_all(parse_endpoints_bytes(data, str(self._path)))
        self._good_bytes = data
        self._signature = _trusted_signature(stat) if stat is not None else None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def poll_interval(self) -> float:
        return self._poll_interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the file until cancelled."""
        # Catch a change made between the constructor and now, then report ready.
        self.reload_if_changed()
        task_status.started()
        while True:
            await trio.sleep(self._poll_interval)
            # Blocking stat/read in the trio thread: microseconds for a small local
            # file, cheaper than a worker thread per poll.
            self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Look at the file once; True when the endpoints changed."""
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._signature = None
            self._report(f"endpoints file {self._path} disappeared")
            return False
        except OSError as exc:
            self._signature = None
            self._report(f"cannot read endpoints file {self._path}: {exc.strerror or exc}")
            return False
        signature = _signature_of(stat)
        if signature == self._signature:
            return False
        try:
            data = read_endpoints_file(self._path)
        except DiscoveryError as exc:
            self._signature = None
            self._report(exc.message)
            return False
        self._signature = _trusted_signature(stat)
        if data == self._good_bytes:
            self._recovered()
            return False
        try:
            table = parse_endpoints_bytes(data, str(self._path))
        except DiscoveryError as exc:
            self._report(exc.message)
            return False
        self._good_bytes = data
        changed = self.replace_all(table)
        if not self._recovered() and changed:
            logger.info("reloaded endpoints file %s: %s", self._path, self._summary())
        return changed

    def _report(self, problem: str) -> None:
        if problem == self._problem:
            return  # already said; a broken file is polled many times
        self._problem = problem
        one_line = problem.replace("\n", "; ")
        logger.warning("%s; keeping the last good endpoints (%s)", one_line, self._summary())

    def _recovered(self) -> bool:
        if self._problem is None:
            return False
        self._problem = None
        logger.info("endpoints file %s is good again: %s", self._path, self._summary())
        return True

    def _summary(self) -> str:
        table = self.snapshot()
        count = sum(len(endpoints) for endpoints in table.values())
        return f"{count} endpoint{'' if count == 1 else 's'} of {len(table)} service{'' if len(table) == 1 else 's'}"


def _signature_of(stat: os.stat_result) -> _Signature:
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _trusted_signature(stat: os.stat_result) -> _Signature | None:
    """The signature to remember, or None to compare the bytes again at the next poll."""
    if time.time_ns() - stat.st_mtime_ns < _RACY_WINDOW_NS:
        return None
    return _signature_of(stat)
