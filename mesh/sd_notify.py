"""Telling systemd how a service is doing (``Type=notify`` units): sd_notify(3) without libsystemd.

`mesh install-service` writes ``Type=notify`` units, so "started" means what a caller
needs: the controller accepts connections, an injected service answers behind its
sidecar. Outside systemd (no ``NOTIFY_SOCKET``) every call here does nothing.

The socket belongs to the unit's main process: the processes it starts (an injected
app, the services of `mesh up`) are given an environment without it (``without_notify``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("mesh.systemd")

# What systemd hands the main process for itself alone.
SUPERVISOR_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")


def notify(*fields: str) -> bool:
    """Send ``READY=1``, ``STOPPING=1``, ``STATUS=…`` lines; False when not under systemd or the
    message could not be sent (logged: a service never fails over its supervisor's socket)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def stopping(status: str) -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def without_notify(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a process this one starts: systemd's socket is not the child's to use."""
    return {key: value for key, value in env.items() if key not in SUPERVISOR_VARIABLES}


def logs_to_journal() -> bool:
    """stderr goes to the journal (systemd sets JOURNAL_STREAM=DEV:INODE of that stream)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    try:
        info = os.fstat(2)
    except OSError:
        return False
    return device.isdigit() and inode.isdigit() and (info.st_dev, info.st_ino) == (int(device), int(inode))
