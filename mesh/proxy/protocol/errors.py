"""Protocol errors, split by side (as h11 does).

``RemoteProtocolError``: the peer broke the protocol; answer it (``status``)
and close. ``LocalProtocolError``: we were about to break it ourselves.
"""

from __future__ import annotations


class ProtocolError(Exception):
    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something invalid."""
