"""One request's exchange, decided apart from its I/O (sans-IO: no trio, no sockets).

The HTTP/1 and HTTP/2 loops read bytes and write bytes; everything they decide
is here, once for both:

- where a request goes (``Forward``) or why the mesh answers it itself (``Reject``),
  and the timeouts a listener enforces (``Timeouts``);
- what went wrong, typed: a ``Reason`` (the ``x-mesh-error`` value) and a
  ``Failure`` carrying reason, status and message, rendered once per protocol
  (``mesh_error_response`` here for HTTP/1, ``mesh.proxy._grpc`` for HTTP/2 and gRPC);
- how an exchange ended (``Outcome``) and what that says of the endpoint
  (``endpoint_verdict``) and of the service (``classify``): a client that goes
  away is ``client-reset``, never the endpoint's failure;
- the attempts of a request (``AttemptPlan``): route retries within their budget,
  one failover after a failure to connect, a replay after a pooled connection died
  while idle or a stream was refused unprocessed, and the injected fault delay. The
  loops tell it what happened and get a typed step back (``Retry``, ``Replay``,
  ``Failover``, ``GiveUp``); neither decides by itself.
"""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mesh.proxy._policy import may_retry, retry_condition
from mesh.proxy.protocol.http1 import Headers, RequestHead, simple_response
from mesh.telemetry import CLIENT_RESET, classify, server_failed

__all__ = [
    "CLIENT_RESET",
    "AttemptPlan",
    "ConnectFailure",
    "Failover",
    "Failure",
    "Forward",
    "GiveUp",
    "Outcome",
    "Reason",
    "Recorder",
    "Reject",
    "Replay",
    "RequestRecord",
    "Router",
    "Retry",
    "Timeouts",
    "UpstreamKey",
    "classify",
    "endpoint_verdict",
    "mesh_error_response",
    "new_request_id",
]

MESH_ERROR = b"x-mesh-error"


class Reason(enum.StrEnum):
    """Why the mesh answered (or ended) an exchange itself: the ``x-mesh-error`` header's value."""

    # The request: the client's fault.
    BAD_REQUEST = "bad-request"
    HEADER_TOO_LARGE = "header-too-large"
    HEAD_TIMEOUT = "head-timeout"
    BODY_TIMEOUT = "body-timeout"
    LOOP = "loop"
    CLIENT_RESET = CLIENT_RESET
    STREAM_IDLE = "stream-idle"  # HTTP/2: a stream left waiting on its reader's window
    # Policy and routing.
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate-limited"
    FAULT_INJECTED = "fault-injected"
    NO_ENDPOINTS = "no-endpoints"
    NO_HEALTHY_ENDPOINTS = "no-healthy-endpoints"  # every endpoint refused connections just now
    NO_ROUTE = "no-route"  # a gateway has no route for the request's host and path
    CIRCUIT_OPEN = "circuit-open"
    # Reaching the endpoint (nothing was sent: another endpoint is always safe).
    CONNECT_FAILED = "connect-failed"
    CONNECT_TIMEOUT = "connect-timeout"
    TLS_FAILED = "tls-failed"
    TLS_TIMEOUT = "tls-timeout"
    IDENTITY_MISMATCH = "identity-mismatch"
    NO_H2 = "no-h2"
    INTERNAL = "internal"
    # The endpoint's answer.
    TIMEOUT = "timeout"
    UPSTREAM_BODY_TIMEOUT = "upstream-body-timeout"
    UPSTREAM_CLOSED = "upstream-closed"
    UPSTREAM_RESET = "upstream-reset"
    UPSTREAM_REFUSED = "upstream-refused"
    UPSTREAM_PROTOCOL = "upstream-protocol"
    BAD_RESPONSE = "bad-response"
    UPGRADE_FAILED = "upgrade-failed"


class Failure(Exception):
    """An exchange that ends without the endpoint's answer: ``status`` is what the client gets
    when nothing of a response reached it yet (0: nothing to send, the client is gone)."""

    def __init__(
        self, reason: Reason, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message
        self.headers = headers  # extra response headers (lower-case names), e.g. retry-after

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status} {self.reason}: {self.message}>"


class ConnectFailure(Failure):
    """Opening a connection (or a stream) to the endpoint failed: nothing of the request was sent.

    ``ours``: this proxy cannot connect to any endpoint (its own certificate was revoked): no
    endpoint is to blame or ejected, and no other is tried."""

    def __init__(self, reason: Reason, message: str, ours: bool = False) -> None:
        super().__init__(reason, 502, message)
        self.ours = ours


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    """Where an attempt goes: an address, and for mTLS the ALPN and the identity that must answer."""

    host: str
    port: int
    alpn: str | None  # None: plain TCP (the local app, egress); else mTLS to a peer proxy
    identity: str | None  # SPIFFE id the peer must present (mTLS only)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """What a listener waits for, and for how long."""

    head_timeout: float = 10.0  # a whole request head must arrive within this, from its first byte (408)
    idle_timeout: float = 300.0  # a keep-alive connection with no request; an HTTP/2 stream stuck on its reader
    request_timeout: float = 10.0  # the response head must arrive within this once the request is sent (504)
    body_timeout: float = 30.0  # a request body that stalls this long is cut (408; 504 when the app stalls)
    drain_timeout: float = 10.0


@dataclass(slots=True)
class Forward:
    """Send the request to ``key``."""

    key: UpstreamKey
    peer_service: str
    target: bytes
    add_headers: Headers = field(default_factory=list)
    drop_headers: frozenset[bytes] = frozenset()
    timeout: float = 10.0
    endpoint: str | None = None  # address for balancer feedback
    tunnel: bool = False  # CONNECT: answer 200 and relay bytes
    route: str | None = None  # name of the matched route, for metrics
    retry: Any = None  # RetryPolicy of the route, when retries are on
    candidates: tuple[Any, ...] = ()  # endpoints a retry may go to; outlier detection's peers
    delay: float = 0.0  # injected fault delay before forwarding
    trace: Any = None  # this hop's SpanContext when tracing is on (mesh.proxy._observe.TracedRouter)
    downgrade: bool = False  # HTTP/2 from the client, HTTP/1.1 to the endpoint (a gateway, for an HTTP/1 app)


@dataclass(slots=True)
class Reject:
    """Answer the request ourselves: a mesh-made error."""

    status: int
    reason: Reason
    message: str
    peer_service: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers (lower-case names)

    def failure(self) -> Failure:
        return Failure(self.reason, self.status, self.message, self.headers)


class Router(Protocol):
    """Routing for one direction (mesh.proxy._routing): decisions only, no I/O."""

    direction: str

    def route(self, head: RequestHead) -> Forward | Reject: ...

    def finished(self, forward: Forward, started: float, success: bool | None) -> None:
        """``success`` None: the outcome says nothing of the endpoint (the client went away)."""

    def requested(self, forward: Forward) -> None: ...

    def retry_to(self, forward: Forward) -> Forward | None: ...

    def failover_to(self, forward: Forward) -> Forward | None: ...


# -- how an exchange ended ---------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What one exchange came to, whichever protocol carried it."""

    status: int = 0  # the status the client got (0: none)
    mesh_error: Reason | None = None
    grpc_status: int | None = None
    bytes_out: int = 0  # response bytes written to the client
    retries: int = 0  # attempts beyond the first
    forward: Forward | None = None  # the last attempt: the one that answered

    def failed(self, failure: Failure, answered: bool = True) -> None:
        """The mesh ended the exchange for ``failure``; ``answered``: the client got its status."""
        self.mesh_error = failure.reason
        if answered:
            self.status = failure.status

    @property
    def verdict(self) -> bool | None:
        return endpoint_verdict(self.status, self.mesh_error, self.grpc_status)

    @property
    def classification(self) -> str:
        return classify(self.status, self.mesh_error, self.grpc_status)


@dataclass(slots=True)
class RequestRecord:
    """What the proxy observed of one request; metrics and tap read it.

    ``head`` and ``forward`` are references (no copying on the hot path): the
    tap reads the request id, the chosen endpoint, its identity and whether the
    hop is mTLS from them, and only while someone listens.
    """

    direction: str
    peer_service: str
    method: bytes
    authority: bytes
    path: bytes
    status: int
    latency_ms: float
    mesh_error: str | None
    bytes_in: int = 0
    bytes_out: int = 0  # response bytes written to the client
    head: RequestHead | None = None
    forward: Forward | None = None  # None when the mesh answered without routing
    retries: int = 0  # attempts beyond the first (actual requests = 1 + retries)
    grpc_status: int | None = None  # gRPC calls: the grpc-status the caller got (0 = OK)


Recorder = Callable[[RequestRecord], None]


def endpoint_verdict(status: int, mesh_error: str | None, grpc_status: int | None = None) -> bool | None:
    """What an exchange says of the endpoint that served it: True (healthy), False (failed),
    None (nothing: the client went away before the endpoint was done)."""
    if mesh_error == CLIENT_RESET:
        return False if server_failed(status, grpc_status) else None
    return mesh_error is None and not server_failed(status, grpc_status)


def mesh_error_response(failure: Failure, keep_alive: bool, http10: bool = False, head_request: bool = False) -> bytes:
    """A mesh-made HTTP/1 answer: the status, ``x-mesh-error`` and a one-line body (none to HEAD)."""
    return simple_response(
        failure.status,
        f"mesh: {failure.message}\n".encode(),
        [(MESH_ERROR, failure.reason.value.encode()), *failure.headers],
        keep_alive=keep_alive,
        http10=http10,
        head_request=head_request,
    )


_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_request_id() -> bytes:
    """32 hex digits, unique per process (random prefix) and per request (counter): no syscall."""
    return b"%s%016x" % (_ID_PREFIX.encode(), next(_id_counter) & 0xFFFFFFFFFFFFFFFF)


# -- the attempts of one request -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """The route's retry policy sends the request again, to ``forward`` (another endpoint when
    there is one); it spent the retry budget."""

    forward: Forward


@dataclass(frozen=True, slots=True)
class Replay:
    """Send the same attempt again on a fresh connection: the last one never processed it (a
    pooled connection that had died while idle, a refused HTTP/2 stream). Costs no budget."""

    forward: Forward


@dataclass(frozen=True, slots=True)
class Failover:
    """Connecting failed, so nothing was sent: another endpoint, once, outside retry budgets."""

    forward: Forward


@dataclass(frozen=True, slots=True)
class GiveUp:
    """No further attempt: the failure (or the answer) at hand is the client's."""


Step = Retry | Replay | Failover | GiveUp

# A refused stream was never processed, so sending it again is safe; an upstream that says GOAWAY
# after every few requests (nginx: keepalive_requests) may refuse it more than once.
REFUSED_ATTEMPTS = 4


class AttemptRouter(Protocol):
    def requested(self, forward: Forward) -> None: ...

    def retry_to(self, forward: Forward) -> Forward | None: ...

    def failover_to(self, forward: Forward) -> Forward | None: ...


class AttemptPlan:
    """The attempts of one request, as a small state machine.

    ``retryable`` says whether the request may be sent more than once at all (an
    idempotent method, or a route marked retryable, with a body small enough to keep);
    a loop that later finds it cannot replay what it sent says so per event
    (``replayable``). Connect failures, stale connections and refused streams need no
    replayable body: nothing reached the endpoint.
    """

    __slots__ = (
        "router",
        "current",
        "retries",
        "delay",
        "_retries_left",
        "_retry_on",
        "_failed_over",
        "_stale_replayed",
        "_refused",
    )

    def __init__(self, router: AttemptRouter, forward: Forward, *, retryable: bool) -> None:
        self.router = router
        self.current = forward
        self.retries = 0
        self.delay = forward.delay  # an injected fault: waited once, before the first attempt
        retry = forward.retry
        self._retries_left = retry.attempts if retry is not None and retryable else 0
        self._retry_on: Sequence[str] = retry.on if retry is not None else ()
        self._failed_over = False
        self._stale_replayed = False
        self._refused = 0
        if self._retries_left:
            router.requested(forward)  # only requests that may be retried earn retry budget

    @staticmethod
    def retryable(method: bytes, body_size: int | None, forward: Forward) -> bool:
        """Whether a request may ever be retried (``body_size`` None: not kept, streaming)."""
        retry = forward.retry
        return retry is not None and may_retry(method, body_size, retry.retryable)

    @property
    def may_retry(self) -> bool:
        return self._retries_left > 0

    def connect_failed(self, failure: ConnectFailure | None = None) -> Step:
        """No connection (or stream) to ``current``: nothing was sent."""
        if failure is not None and failure.ours:
            return GiveUp()
        step = self._retry(None)
        if isinstance(step, GiveUp) and not self._failed_over:
            other = self.router.failover_to(self.current)
            if other is not None:
                self._failed_over = True
                self.current = other
                return Failover(other)
        return step

    def stale(self, reused: bool) -> Step:
        """An HTTP/1 connection closed before any byte of the response: a pooled one had died while
        idle (replayed once, on a fresh connection), or the endpoint dropped the request."""
        if reused and not self._stale_replayed:
            self._stale_replayed = True
            return Replay(self.current)
        return self._retry(None)

    def refused(self, replayable: bool) -> Step:
        """An HTTP/2 stream refused unprocessed (REFUSED_STREAM, or a GOAWAY that did not cover it)."""
        if replayable and self._refused < REFUSED_ATTEMPTS - 1:
            self._refused += 1
            return Replay(self.current)
        return self._retry(None) if replayable else GiveUp()

    def answered(self, status: int, replayable: bool = True) -> Step:
        """A response head with ``status`` (gRPC failures count as their HTTP twin): GiveUp takes it."""
        return self._retry(status) if replayable else GiveUp()

    def ended_without_answer(self, replayable: bool = True) -> Step:
        """The endpoint reset or closed before a response head."""
        return self._retry(None) if replayable else GiveUp()

    def _retry(self, status: int | None) -> Step:
        if self._retries_left <= 0 or not retry_condition(status, self._retry_on):
            return GiveUp()
        other = self.router.retry_to(self.current)
        if other is None:
            return GiveUp()
        self._retries_left -= 1
        self.retries += 1
        self.current = other
        return Retry(other)

    def __repr__(self) -> str:
        return (
            f"<AttemptPlan {self.current.key.address} retries={self.retries} left={self._retries_left}"
            f"{' failed-over' if self._failed_over else ''}{' stale-replayed' if self._stale_replayed else ''}"
            f" refused={self._refused}>"
        )
