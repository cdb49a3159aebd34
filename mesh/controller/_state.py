"""The control plane's state, pure and synchronous (no trio, no sockets).

What the controller knows: the applied config (versioned), the endpoints of
every service (seen via zeroconf or registered directly, with expiry), and the
proxies that watch it (with the snapshot version each acknowledged). Every
change bumps ``version``; a proxy's snapshot is built from the state at that
version, so two proxies that acked the same version see the same world.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from mesh.config import MeshConfig, parse_config
from mesh.discovery import Endpoint, endpoint_to_dict

# Registrations (hosts without multicast) live this long without a heartbeat.
DEFAULT_REGISTRATION_TTL = 30.0
# What a registered proxy is: a service's endpoint, or a gateway (the edge of the mesh: seen by
# `mesh stat`, `top`, `edges` and `routes`, never handed out as an endpoint of anything).
ROLES = ("service", "gateway")


@dataclass(frozen=True, slots=True)
class EndpointEntry:
    endpoint: Endpoint
    instance: str  # unique per proxy: "<service>-<random>"
    source: str  # "zeroconf" | "registration"
    expires_at: float | None = None  # registrations only
    version: str | None = None  # the proxy's mesh version, when known
    cert_expiry: float | None = None  # Unix time, reported by registrations
    role: str = "service"  # ROLES
    controller: str | None = None  # the controller that took the registration (it withdraws it when the proxy dies)
    host: str | None = None  # the proxy's host, as the controller saw the registration come in
    zeroconf: str | None = None  # the DNS-SD instance the proxy advertises under (a goodbye for it when it dies)

    @property
    def is_endpoint(self) -> bool:
        """An endpoint callers may be sent to (a gateway is never one)."""
        return self.role == "service"


@dataclass(slots=True)
class HostContact:
    """What the controller last heard from a host (its proxies' heartbeats): kept in memory only."""

    address: str
    version: str | None = None
    skew_seconds: float | None = None  # the host's clock minus ours, when it said its time
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class TemporaryFault:
    """`mesh fault`: chaos for a while, then it removes itself."""

    service: str
    expires_at: float
    delay_seconds: float | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "expires_at": self.expires_at,
            "delay_seconds": self.delay_seconds,
            "delay_percent": self.delay_percent,
            "abort_status": self.abort_status,
            "abort_percent": self.abort_percent,
        }


@dataclass(slots=True)
class ProxyWatch:
    instance: str
    service: str
    identity: str
    connected_at: float
    acked_version: int = 0
    sent_version: int = 0


@dataclass
class ControllerState:
    trust_domain: str
    clock: Callable[[], float] = time.time
    config: MeshConfig = field(default_factory=lambda: parse_config({}))
    config_version: int = 0
    version: int = 1
    _entries: dict[str, EndpointEntry] = field(default_factory=dict)  # by instance
    watches: dict[str, ProxyWatch] = field(default_factory=dict)  # by instance
    faults: dict[str, TemporaryFault] = field(default_factory=dict)  # by service
    controllers: dict[str, dict[str, Any]] = field(default_factory=dict)  # by address other hosts dial
    joined_hosts: dict[str, dict[str, Any]] = field(default_factory=dict)  # `mesh join` records, by host address
    revoked: dict[str, dict[str, Any]] = field(default_factory=dict)  # `mesh ca revoke` records, by hex serial
    contacts: dict[str, HostContact] = field(default_factory=dict)  # by host address (not versioned)

    def _changed(self) -> None:
        self.version += 1

    # -- config ------------------------------------------------------------

    def check_config(self, data: dict[str, Any], source: str = "applied config") -> MeshConfig:
        """Validate a whole config for this mesh. Raises ConfigInvalid listing every problem."""
        config = parse_config(data, source)
        if config.mesh.trust_domain != self.trust_domain:
            from mesh.config import ConfigInvalid, ConfigIssue

            raise ConfigInvalid(
                (
                    ConfigIssue(
                        source,
                        "mesh.trust_domain",
                        f"expected {self.trust_domain!r} (the CA's trust domain), found {config.mesh.trust_domain!r}",
                    ),
                )
            )
        return config

    def set_config(self, config: MeshConfig, version: int) -> bool:
        """Put a config in force at ``version`` (the store numbers them); never go back to an older one."""
        if version <= self.config_version:
            return False
        self.config = config
        self.config_version = version
        self._changed()
        return True

    def set_controllers(self, controllers: dict[str, dict[str, Any]]) -> bool:
        """The controllers serving this mesh (several share one etcd store); proxies fail over among them."""
        if controllers == self.controllers:
            return False
        self.controllers = dict(controllers)
        self._changed()
        return True

    def set_revoked(self, revoked: dict[str, dict[str, Any]]) -> bool:
        """The revoked certificates in force (every proxy gets their serials in its snapshot)."""
        if revoked == self.revoked:
            return False
        self.revoked = dict(revoked)
        self._changed()
        return True

    # -- registry ---------------------------------------------------------------

    def upsert(self, entry: EndpointEntry) -> bool:
        old = self._entries.get(entry.instance)
        if old is not None and old.endpoint == entry.endpoint and old.source == entry.source:
            # A heartbeat: extend the lease without waking every watcher.
            self._entries[entry.instance] = entry
            return False
        self._entries[entry.instance] = entry
        self._changed()
        return True

    def remove(self, instance: str, source: str | None = None) -> bool:
        entry = self._entries.get(instance)
        if entry is None or (source is not None and entry.source != source):
            return False
        del self._entries[instance]
        self._changed()
        return True

    def replace_source(self, source: str, entries: Iterable[EndpointEntry]) -> bool:
        """Make the entries of ``source`` exactly ``entries`` (zeroconf's whole view)."""
        wanted = {e.instance: e for e in entries}
        current = {k: v for k, v in self._entries.items() if v.source == source}
        if {k: v.endpoint for k, v in current.items()} == {k: v.endpoint for k, v in wanted.items()}:
            return False
        for instance in current:
            if instance not in wanted:
                del self._entries[instance]
        self._entries.update(wanted)
        self._changed()
        return True

    def expire(self) -> list[str]:
        """Drop registrations whose lease ran out, and faults whose time is up; returns what went."""
        now = self.clock()
        dead = [k for k, e in self._entries.items() if e.expires_at is not None and e.expires_at < now]
        for instance in dead:
            del self._entries[instance]
        over = [svc for svc, f in self.faults.items() if f.expires_at <= now]
        for service in over:
            del self.faults[service]
        if dead or over:
            self._changed()
        return dead + [f"fault on {svc}" for svc in over]

    def set_fault(self, fault: TemporaryFault) -> None:
        self.faults[fault.service] = fault
        self._changed()

    def clear_fault(self, service: str) -> bool:
        if self.faults.pop(service, None) is None:
            return False
        self._changed()
        return True

    def endpoints(self) -> dict[str, list[Endpoint]]:
        """Every service's endpoints; one endpoint per address (zeroconf and a registration may both see it).
        Gateways are not endpoints: nobody calls them through the mesh."""
        by_service: dict[str, dict[str, Endpoint]] = {}
        for entry in sorted(self._entries.values(), key=lambda e: (e.source != "registration", e.instance)):
            if not entry.is_endpoint:
                continue
            by_service.setdefault(entry.endpoint.service, {}).setdefault(entry.endpoint.address, entry.endpoint)
        return {svc: list(eps.values()) for svc, eps in sorted(by_service.items())}

    def entries(self) -> list[EndpointEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.endpoint.service, e.instance))

    def entry(self, instance: str) -> EndpointEntry | None:
        return self._entries.get(instance)

    # -- hosts ------------------------------------------------------------------

    def heard_from(self, address: str, version: str | None, their_time: float | None) -> None:
        """A heartbeat from a proxy of the host at ``address``: its version, clock and when."""
        now = self.clock()
        contact = self.contacts.setdefault(address, HostContact(address))
        contact.version = version or contact.version
        if their_time is not None:
            contact.skew_seconds = round(their_time - now, 3)
        contact.last_seen = now

    def set_joined_hosts(self, hosts: dict[str, dict[str, Any]]) -> bool:
        if hosts == self.joined_hosts:
            return False
        self.joined_hosts = dict(hosts)
        return True

    # -- watches ----------------------------------------------------------------

    def watch_started(self, instance: str, service: str, identity: str) -> ProxyWatch:
        watch = ProxyWatch(instance, service, identity, self.clock())
        self.watches[instance] = watch
        return watch

    def watch_ended(self, instance: str, watch: ProxyWatch) -> None:
        if self.watches.get(instance) is watch:
            del self.watches[instance]

    def ack(self, instance: str, version: int) -> bool:
        watch = self.watches.get(instance)
        if watch is None:
            return False
        watch.acked_version = max(watch.acked_version, version)
        return True

    def snapshot(self) -> dict[str, Any]:
        """What every proxy receives: the whole (small) world at this version.

        A proxy cannot know in advance which services its app will call (any
        `HTTP_PROXY` request may name one), so it gets all endpoints; on one
        laptop or rack this is a few kilobytes.
        """
        config = self.config
        return {
            "version": self.version,
            "config_version": self.config_version,
            "trust_domain": self.trust_domain,
            "authz_default": config.mesh.authz_default,
            "endpoints": {svc: [endpoint_to_dict(e) for e in eps] for svc, eps in self.endpoints().items()},
            "routes": [r.to_dict() for r in config.routes],
            "policies": [p.to_dict() for p in config.policies],
            "faults": [f.to_dict() for f in self.faults.values()],
            "controllers": sorted(self.controllers),
            "revoked": sorted(self.revoked),
        }


def with_lease(entry: EndpointEntry, ttl: float, now: float) -> EndpointEntry:
    return replace(entry, expires_at=now + ttl)
