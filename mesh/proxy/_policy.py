"""Traffic policy decisions, pure and synchronous: routes, splits, retries,
outlier ejection, faults, rate limits and authorization.

The proxy compiles the controller's snapshot into a ``PolicySet`` once per
snapshot; the hot path only asks it questions. Time and randomness are
injected, so every decision is tested without sockets or sleeps.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mesh.config import MeshConfig, PolicyConfig, RouteConfig, parse_config

Clock = Callable[[], float]
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
MAX_RETRY_BODY = 64 * 1024


class HasLabels:
    labels: tuple[tuple[str, str], ...]
    address: str


E = TypeVar("E", bound=HasLabels)


# ---------------------------------------------------------------- routes


@dataclass(frozen=True)
class CompiledRoute:
    config: RouteConfig
    name: str
    _regex: re.Pattern[bytes] | None = None

    @classmethod
    def compile(cls, config: RouteConfig, index: int) -> CompiledRoute:
        regex = re.compile(config.match.path_regex.encode()) if config.match.path_regex else None
        return cls(config, config.name or f"route-{index}", regex)

    def matches(self, method: bytes, path: bytes, headers: Mapping[bytes, bytes]) -> bool:
        match = self.config.match
        path_only = path.split(b"?", 1)[0]
        if match.method is not None and method != match.method.encode():
            return False
        if match.path_exact is not None and path_only != match.path_exact.encode():
            return False
        if match.path_prefix is not None and not path_only.startswith(match.path_prefix.encode()):
            return False
        if self._regex is not None and not self._regex.fullmatch(path_only):
            return False
        for name, value in match.headers.items():
            if headers.get(name.encode()) != value.encode():
                return False
        return True


def choose_subset(route: CompiledRoute, rng: random.Random) -> Mapping[str, str] | None:
    """The labels of the split target this request goes to (weighted), or None: no split."""
    split = route.config.split
    if not split:
        return None
    point = rng.randrange(100)
    for target in split:
        if point < target.weight:
            return target.labels
        point -= target.weight
    return split[-1].labels


def in_subset(endpoints: Sequence[E], labels: Mapping[str, str] | None) -> list[E]:
    if not labels:
        return list(endpoints)
    wanted = labels.items()
    return [e for e in endpoints if all((k, v) in e.labels for k, v in wanted)]


# ---------------------------------------------------------------- retries


class RetryBudget:
    """Retries may add at most ``ratio`` to the requests of the last ``window``
    seconds, plus ``min_per_second`` (Linkerd/Finagle's budget), so retries can
    never multiply an outage."""

    def __init__(
        self, ratio: float, min_per_second: float, window: float = 10.0, clock: Clock = time.monotonic
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        self._requests: list[float] = []
        self._retries: list[float] = []

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        for series in (self._requests, self._retries):
            cut = 0
            while cut < len(series) and series[cut] < horizon:
                cut += 1
            del series[:cut]

    def record_request(self) -> None:
        self._requests.append(self._clock())

    def try_withdraw(self) -> bool:
        now = self._clock()
        self._trim(now)
        allowed = self.ratio * len(self._requests) + self.min_per_second * self.window
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True


def retry_condition(status: int | None, conditions: Sequence[str]) -> bool:
    """``status`` None means the connection failed before any response."""
    for condition in conditions:
        if status is None:
            if condition in ("connect-failure", "reset"):
                return True
            continue
        if condition == "5xx" and 500 <= status < 600:
            return True
        if condition == "gateway-error" and status in (502, 503, 504):
            return True
        if condition.isdigit() and status == int(condition):
            return True
    return False


def may_retry(method: bytes, body_size: int | None, retryable: bool) -> bool:
    """Only idempotent requests (or routes marked retryable), with a body small enough to replay."""
    if body_size is None or body_size > MAX_RETRY_BODY:
        return False
    return retryable or method in IDEMPOTENT


# ---------------------------------------------------------------- outlier ejection


@dataclass
class _Health:
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    down_until: float = 0.0  # connections to it fail: nothing listens (see OutlierDetector.unreachable)
    downs: int = 0


class OutlierDetector:
    """An endpoint with ``threshold`` consecutive failures is ejected for
    ``base`` seconds, doubling on each repeat, never more than half of a
    service's endpoints at once.

    An endpoint that cannot be connected to at all (refused, unreachable, a handshake that
    fails) is another matter: it is not slow or erring, it is not there, and sending it
    requests only turns each into an error. It is set aside at once for ``down_base``
    seconds, doubling while it keeps failing (up to ``down_max``), whatever share of the
    service that leaves: a lone endpoint whose process died gets callers a fast 503
    ``no-healthy-endpoints`` instead of a 502 per request, until discovery drops it (within
    seconds) or, once its time is up, a request finds it back.
    """

    def __init__(
        self,
        threshold: int = 5,
        base: float = 30.0,
        max_duration: float = 300.0,
        max_fraction: float = 0.5,
        clock: Clock = time.monotonic,
        down_base: float = 1.0,
        down_max: float = 30.0,
    ) -> None:
        self.threshold = threshold
        self.base = base
        self.max_duration = max_duration
        self.max_fraction = max_fraction
        self.down_base = down_base
        self.down_max = down_max
        self._clock = clock
        self._health: dict[str, _Health] = {}
        self._ejected_until_max = 0.0  # lets the hot path skip the scan while nothing is ejected

    def record(self, address: str, success: bool, peers: Sequence[HasLabels]) -> bool:
        """Returns True when this outcome ejected the endpoint."""
        health = self._health.get(address)
        if health is None:
            health = self._health[address] = _Health()
        if success:
            health.consecutive_failures = 0
            health.downs = 0
            return False
        health.consecutive_failures += 1
        if health.consecutive_failures < self.threshold or self.ejected(address):
            return False
        now = self._clock()
        ejected_now = sum(1 for p in peers if p.address != address and self.ejected(p.address, now))
        if (ejected_now + 1) > self.max_fraction * max(len(peers), 1):
            return False
        health.ejections += 1
        health.ejected_until = now + min(self.base * 2 ** (health.ejections - 1), self.max_duration)
        health.consecutive_failures = 0
        self._ejected_until_max = max(self._ejected_until_max, health.ejected_until)
        return True

    def unreachable(self, address: str) -> None:
        """A connection to ``address`` failed before anything was sent: set it aside (see the class)."""
        health = self._health.setdefault(address, _Health())
        now = self._clock()
        health.down_until = now + min(self.down_base * 2**health.downs, self.down_max)
        health.downs += 1
        self._ejected_until_max = max(self._ejected_until_max, health.down_until)

    def down(self, address: str, now: float | None = None) -> bool:
        """Set aside because connections to it fail (``unreachable``)."""
        health = self._health.get(address)
        return health is not None and health.down_until > (self._clock() if now is None else now)

    def ejected(self, address: str, now: float | None = None) -> bool:
        """Out of the rotation now: ejected as an outlier, or down."""
        health = self._health.get(address)
        if health is None:
            return False
        moment = self._clock() if now is None else now
        return health.ejected_until > moment or health.down_until > moment

    def available(self, endpoints: Sequence[E]) -> Sequence[E]:
        """The endpoints not ejected now (the same sequence, uncopied, when none is)."""
        if self._ejected_until_max <= 0:
            return endpoints
        now = self._clock()
        if self._ejected_until_max <= now:
            self._ejected_until_max = 0.0
            return endpoints
        return [e for e in endpoints if not self.ejected(e.address, now)]


# ---------------------------------------------------------------- rate limits


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self, count: int = 1) -> bool:
        """Spend ``count`` tokens; False (nothing spent) when there are not enough."""
        tokens = self.level()
        if tokens >= count:
            self._tokens = tokens - count
            return True
        return False

    def level(self) -> float:
        """The tokens there are now."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens


# ---------------------------------------------------------------- the compiled set


@dataclass
class Fault:
    delay: float | None
    delay_percent: float
    abort_status: int | None
    abort_percent: float

    def decide(self, rng: random.Random) -> tuple[float, int | None]:
        """(seconds to delay, status to abort with or None)."""
        delay = self.delay if self.delay and rng.random() * 100 < self.delay_percent else 0.0
        abort = self.abort_status if self.abort_status and rng.random() * 100 < self.abort_percent else None
        return delay, abort


@dataclass
class PolicySet:
    """Everything the proxy enforces, compiled from one snapshot."""

    trust_domain: str
    authz_default: str = "allow"
    routes: dict[str, list[CompiledRoute]] = field(default_factory=dict)
    policies: dict[str, PolicyConfig] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)  # temporary faults (`mesh fault`)
    version: int = 0

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> PolicySet:
        trust_domain = str(snapshot.get("trust_domain", "mesh.local"))
        config: MeshConfig = parse_config(
            {
                "mesh": {"trust_domain": trust_domain, "authz_default": snapshot.get("authz_default", "allow")},
                "route": list(snapshot.get("routes", [])),
                "policy": list(snapshot.get("policies", [])),
            },
            "the controller's snapshot",
        )
        routes: dict[str, list[CompiledRoute]] = {}
        for index, route in enumerate(config.routes):
            routes.setdefault(route.service, []).append(CompiledRoute.compile(route, index))
        faults = {
            str(f["service"]): Fault(
                f.get("delay_seconds"),
                float(f.get("delay_percent", 100)),
                f.get("abort_status"),
                float(f.get("abort_percent", 100)),
            )
            for f in snapshot.get("faults", [])
        }
        return cls(
            trust_domain=trust_domain,
            authz_default=config.mesh.authz_default,
            routes=routes,
            policies={p.service: p for p in config.policies},
            faults=faults,
            version=int(snapshot.get("version", 0)),
        )

    def route_for(
        self, service: str, method: bytes, path: bytes, headers: Mapping[bytes, bytes]
    ) -> CompiledRoute | None:
        for route in self.routes.get(service, ()):
            if route.matches(method, path, headers):
                return route
        return None

    def authorize(self, service: str, caller: str) -> bool:
        """Is ``caller`` (a SPIFFE id) allowed to call ``service``?"""
        policy = self.policies.get(service)
        if policy is None:  # the common case, on every request: no policy for the service
            return self.authz_default == "allow"
        caller_service = caller.rsplit("/", 1)[-1] if caller.startswith(f"spiffe://{self.trust_domain}/svc/") else None

        def named(entries: Sequence[str]) -> bool:
            return any(e == "*" or e == caller or (caller_service is not None and e == caller_service) for e in entries)

        if policy is not None and policy.deny and named(policy.deny):
            return False
        if policy is not None and policy.allow is not None:
            return named(policy.allow)
        return self.authz_default == "allow"


# ---------------------------------------------------------------- per-proxy state


class PolicyState:
    """What one proxy remembers between requests: the compiled snapshot, endpoint
    health, retry budgets and rate-limit buckets. Still no I/O."""

    def __init__(self, trust_domain: str, clock: Clock = time.monotonic, rng: random.Random | None = None) -> None:
        self.current = PolicySet(trust_domain=trust_domain)
        self.outliers = OutlierDetector(clock=clock)
        self.rng = rng or random.Random()
        self._clock = clock
        self._budgets: dict[str, RetryBudget] = {}
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}

    def update(self, snapshot: Mapping[str, Any]) -> None:
        """Swap in a new snapshot at once; counters and buckets survive it."""
        self.current = PolicySet.from_snapshot(snapshot)
        self._buckets.clear()  # limits may have changed; a fresh bucket starts full

    def budget(self, service: str, retry: Any) -> RetryBudget:
        budget = self._budgets.get(service)
        if budget is None or budget.ratio != retry.budget or budget.min_per_second != retry.min_per_second:
            budget = self._budgets[service] = RetryBudget(retry.budget, retry.min_per_second, clock=self._clock)
        return budget

    def admit(self, service: str, caller: str, route: CompiledRoute | None) -> bool:
        """Rate limits of the service's policy and of the matched route (token buckets)."""
        policy = self.current.policies.get(service)
        if policy is None and route is None:
            return True  # nothing limits it (every request goes through here)
        limits = []
        if policy is not None and policy.rate_limit is not None:
            limits.append(("policy", policy.rate_limit))
        if route is not None and route.config.rate_limit is not None:
            limits.append((route.name, route.config.rate_limit))
        for scope, limit in limits:
            key = (service, scope, caller if limit.per_caller else "*")
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(limit.requests_per_second, limit.burst, clock=self._clock)
            if not bucket.take():
                return False
        return True
