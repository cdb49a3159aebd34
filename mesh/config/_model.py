"""The typed, frozen model of a mesh.toml (DESIGN.md section 7).

Each class mirrors one TOML table and its field names are the TOML keys, so
``to_dict()`` gives back data that ``parse_config`` reads again unchanged: that is
how the config travels to the controller as JSON.

Constructors only freeze containers (list → tuple, dict → FrozenMap); they do not
validate. Build configs with ``parse_config`` / ``load_config``, which check everything.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mesh.config._duration import format_duration
from mesh.config._frozen import FrozenMap
from mesh.config._names import split_host_port

AuthzDefault = Literal["allow", "deny"]
DiscoveryMode = Literal["zeroconf", "static", "controller"]

DEFAULT_TRUST_DOMAIN = "mesh.local"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRY_ON: tuple[str, ...] = ("5xx", "connect-failure", "reset")
RETRY_CONDITIONS: tuple[str, ...] = ("5xx", "gateway-error", "connect-failure", "reset")

# Field metadata: this float is a duration in seconds, written as "2s" in TOML and JSON.
_DURATION: dict[str, Any] = {"duration": True}


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # the one way to normalize a frozen dataclass


def _frozen_map(value: Mapping[str, str]) -> FrozenMap[str, str]:
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


def _plain(value: Any) -> Any:
    """Model objects, tuples and FrozenMaps → dicts and lists."""
    if isinstance(value, _ToDict):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class _ToDict:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data with the TOML key names (``parse_config`` reads it back).

        Fields that are None are left out: TOML has no null.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            item = getattr(self, f.name)
            if item is None:
                continue
            out[f.name] = format_duration(item) if f.metadata.get("duration") else _plain(item)
        return out


@dataclass(frozen=True, slots=True)
class MeshSettings(_ToDict):
    """``[mesh]``: settings of the whole mesh."""

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    authz_default: AuthzDefault = "allow"


@dataclass(frozen=True, slots=True)
class DiscoveryConfig(_ToDict):
    """``[discovery]``: how proxies find each other."""

    mode: DiscoveryMode = "zeroconf"
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    endpoints_file: str | None = None

    def __post_init__(self) -> None:
        _set(self, "interfaces", tuple(self.interfaces))

    @property
    def all_interfaces(self) -> bool:
        return self.interfaces == ("all",)

    @property
    def lan_address(self) -> str | None:
        """The first address of ``interfaces`` that other hosts can reach: not loopback, not
        "all" (which names no address). `mesh up` binds and advertises its services there."""
        for interface in self.interfaces:
            try:
                if not ipaddress.ip_address(interface).is_loopback:
                    return interface
            except ValueError:  # "all"; constructors do not validate
                continue
        return None


@dataclass(frozen=True, slots=True)
class ControlConfig(_ToDict):
    """``[control]``: the control plane itself; ``store`` is where it keeps its state."""

    store: str = "embedded"  # or "etcd://host-a:2379,host-b:2379,host-c:2379"


@dataclass(frozen=True, slots=True)
class TelemetryConfig(_ToDict):
    """``[telemetry]``: what the proxies `mesh up` runs export beyond metrics; each is off unless set."""

    otlp_endpoint: str | None = None  # an OTLP/HTTP collector's URL: spans go there
    trace_sample: float = 1.0  # the share of new traces sampled (a caller's decision is followed)
    access_log: str | None = None  # a file every proxy appends JSON lines to, or "-": each one's stdout


@dataclass(frozen=True, slots=True)
class ServiceConfig(_ToDict):
    """``[[service]]``: a process that `mesh up` runs through `mesh inject`."""

    name: str
    command: tuple[str, ...]
    labels: FrozenMap[str, str] = field(default_factory=FrozenMap)
    upstreams: tuple[str, ...] = ()
    health: str | None = None
    port: int | None = None
    replicas: int = 1
    env: FrozenMap[str, str] = field(default_factory=FrozenMap)
    protocol: str = "auto"  # one of APP_PROTOCOLS

    def __post_init__(self) -> None:
        _set(self, "command", tuple(self.command))
        _set(self, "labels", _frozen_map(self.labels))
        _set(self, "upstreams", tuple(self.upstreams))
        _set(self, "env", _frozen_map(self.env))


@dataclass(frozen=True, slots=True)
class GatewayRoute(_ToDict):
    """One of a gateway's own routes: requests for ``host`` (None: any) whose path starts with
    ``path_prefix`` (None: any) go to service ``to``."""

    to: str
    host: str | None = None
    path_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayTLS(_ToDict):
    """A certificate (chain) and its key, PEM files, that a gateway serves to outside clients."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class ClientLimitsConfig(_ToDict):
    """Per client address at a gateway: open connections, requests per second and their burst (0: no limit)."""

    connections: int = 100
    requests_per_second: float = 0.0
    burst: int = 0  # 0: one second's worth


@dataclass(frozen=True, slots=True)
class GatewayConfig(_ToDict):
    """``[[gateway]]``: an edge listener that lets outside traffic in, to one service (``to``) or
    by host and path (``routes``, first match wins, then ``to``)."""

    listen: str
    to: str | None = None
    routes: tuple[GatewayRoute, ...] = ()
    tls: tuple[GatewayTLS, ...] = ()
    http_redirect: str | None = None
    trust_forwarded: tuple[str, ...] = ()
    client_limits: ClientLimitsConfig | None = None

    def __post_init__(self) -> None:
        for name in ("routes", "tls", "trust_forwarded"):
            _set(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        # Empty lists are left out, as None is: a plain `listen`/`to` gateway reads as it was written.
        return {k: v for k, v in _ToDict.to_dict(self).items() if v != []}

    @property
    def host(self) -> str:
        return self._split()[0]

    @property
    def port(self) -> int:
        return self._split()[1]

    def _split(self) -> tuple[str, int]:
        parts = split_host_port(self.listen)
        if parts is None:
            raise ValueError(f"gateway listen address {self.listen!r} is not host:port")
        return parts


@dataclass(frozen=True, slots=True)
class RouteMatch(_ToDict):
    """Which requests a route applies to; every condition given must hold. Empty matches all."""

    path_exact: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    method: str | None = None
    # Header names are stored lower-case: HTTP header names are case-insensitive.
    headers: FrozenMap[str, str] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        _set(self, "headers", _frozen_map(self.headers))


@dataclass(frozen=True, slots=True)
class SplitTarget(_ToDict):
    """One share of a traffic split: endpoints with these labels get ``weight`` percent."""

    labels: FrozenMap[str, str]
    weight: int

    def __post_init__(self) -> None:
        _set(self, "labels", _frozen_map(self.labels))


@dataclass(frozen=True, slots=True)
class RetryPolicy(_ToDict):
    """When and how often a failed request is tried again, within a retry budget."""

    attempts: int = 2
    on: tuple[str, ...] = DEFAULT_RETRY_ON
    # At most this fraction of extra load from retries (Linkerd-style budget)...
    budget: float = 0.2
    # ...but always allow this many retries per second, so quiet services still retry.
    min_per_second: int = 10
    # False: only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) are retried.
    retryable: bool = False

    def __post_init__(self) -> None:
        _set(self, "on", tuple(self.on))


@dataclass(frozen=True, slots=True)
class FaultConfig(_ToDict):
    """Faults injected on purpose, to test how callers cope."""

    delay: float | None = field(default=None, metadata=_DURATION)
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0

    def to_dict(self) -> dict[str, Any]:
        # A percent without its fault means nothing, and parse_config refuses it.
        out: dict[str, Any] = {}
        if self.delay is not None:
            out["delay"] = format_duration(self.delay)
            out["delay_percent"] = self.delay_percent
        if self.abort_status is not None:
            out["abort_status"] = self.abort_status
            out["abort_percent"] = self.abort_percent
        return out


@dataclass(frozen=True, slots=True)
class RateLimitConfig(_ToDict):
    """A token bucket: ``requests_per_second`` refill, ``burst`` tokens at most."""

    requests_per_second: float
    burst: int
    # True: one bucket per calling identity; False: one bucket for all callers together.
    per_caller: bool = False


@dataclass(frozen=True, slots=True)
class RouteConfig(_ToDict):
    """``[[route]]``: how requests to ``service`` that match ``match`` are handled."""

    service: str
    name: str | None = None
    match: RouteMatch = field(default_factory=RouteMatch)
    split: tuple[SplitTarget, ...] = ()
    timeout: float = field(default=DEFAULT_TIMEOUT, metadata=_DURATION)
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    fault: FaultConfig | None = None
    rate_limit: RateLimitConfig | None = None

    def __post_init__(self) -> None:
        _set(self, "split", tuple(self.split))


@dataclass(frozen=True, slots=True)
class PolicyConfig(_ToDict):
    """``[[policy]]``: who may call ``service``, and how fast.

    ``allow`` None means the policy does not restrict callers (``authz_default``
    decides); a list (even empty) admits only the callers it names. ``deny`` wins.
    """

    service: str
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    rate_limit: RateLimitConfig | None = None

    def __post_init__(self) -> None:
        if self.allow is not None:
            _set(self, "allow", tuple(self.allow))
        _set(self, "deny", tuple(self.deny))


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """A whole mesh.toml. Build it with ``load_config`` or ``parse_config``."""

    mesh: MeshSettings = field(default_factory=MeshSettings)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    services: tuple[ServiceConfig, ...] = ()
    gateways: tuple[GatewayConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    policies: tuple[PolicyConfig, ...] = ()

    def __post_init__(self) -> None:
        for name in ("services", "gateways", "routes", "policies"):
            _set(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data shaped like mesh.toml (``[[service]]`` → ``"service": [...]``)."""
        return {
            "mesh": self.mesh.to_dict(),
            "discovery": self.discovery.to_dict(),
            "control": self.control.to_dict(),
            "telemetry": self.telemetry.to_dict(),
            "service": [s.to_dict() for s in self.services],
            "gateway": [g.to_dict() for g in self.gateways],
            "route": [r.to_dict() for r in self.routes],
            "policy": [p.to_dict() for p in self.policies],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<config>") -> MeshConfig:
        """Validate ``data`` (e.g. JSON from the wire) like a mesh.toml; see ``parse_config``."""
        from mesh.config._validate import parse_config

        return parse_config(data, source)

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    def routes_for(self, service: str) -> tuple[RouteConfig, ...]:
        """Routes of ``service`` in file order (the first that matches a request wins)."""
        return tuple(r for r in self.routes if r.service == service)

    def policy_for(self, service: str) -> PolicyConfig | None:
        return next((p for p in self.policies if p.service == service), None)

    def summary(self) -> dict[str, int]:
        return {
            "services": len(self.services),
            "gateways": len(self.gateways),
            "routes": len(self.routes),
            "policies": len(self.policies),
        }
