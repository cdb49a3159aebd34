"""What the in-process loop tests (HTTP/1 and HTTP/2) share: two upstream keys and a router that
sends every request to the first, with the second as the other endpoint."""

from __future__ import annotations

from mesh.config import RetryPolicy
from mesh.proxy._exchange import Forward, Reject, UpstreamKey
from mesh.proxy.protocol.http1 import RequestHead

ONE = UpstreamKey("10.0.0.1", 80, None, None)
TWO = UpstreamKey("10.0.0.2", 80, None, None)


class ScriptedRouter:
    """Routes every request to ONE (TWO as the other endpoint); notes what it was told."""

    direction = "outbound"

    def __init__(self, retry: RetryPolicy | None = None, reject: Reject | None = None) -> None:
        self.retry = retry
        self.reject = reject
        self.finished_with: list[tuple[str, bool | None]] = []

    def route(self, head: RequestHead) -> Forward | Reject:
        if self.reject is not None:
            return self.reject
        return Forward(ONE, "web", head.target, timeout=5.0, endpoint=ONE.address, retry=self.retry)

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        self.finished_with.append((forward.key.address, success))

    def requested(self, forward: Forward) -> None:
        pass

    def _other(self, forward: Forward) -> Forward:
        other = TWO if forward.key == ONE else ONE
        return Forward(other, "web", forward.target, timeout=forward.timeout, endpoint=other.address, retry=forward.retry)

    def retry_to(self, forward: Forward) -> Forward | None:
        return self._other(forward)

    def failover_to(self, forward: Forward) -> Forward | None:
        return self._other(forward)
