"""What the mesh keeps in its store, under which keys, and how the controller's state follows it.

Keys, under the store's prefix (``/mesh/`` on etcd, none in the embedded file)::

    meta/ca                      {"root_fingerprint", "trust_domain"}: whose mesh this is
    meta/join-token              the token proxies of other hosts join with
    config/current               {"version", "config", "source", "applied_by", "applied_at"}
    config/history/000000000042  the same record for each of the last KEEP_CONFIG_VERSIONS versions
    registrations/<instance>     an endpoint registered by a proxy, on a lease of its TTL
    faults/<service>             a `mesh fault`, on a lease that ends it
    certificates/<serial>        a certificate the CA signed, on a lease until it expires
    revocations/<serial>         `mesh ca revoke`: who, when, why; on a lease until the certificate expires
    controllers/<host:port>      a live controller, on a lease of CONTROLLER_TTL
    hosts/<address>              a host that joined (`mesh join`): its name, whether it holds an operator identity
    grants/<sha256 of the grant> a one-time operator grant (`mesh operator grant`), on a lease until it expires

Writes go to the store first and then into ``ControllerState``; changes that
other controllers made arrive by the store's watch. Each key's last revision
is remembered, so a controller's own writes coming back by the watch change
nothing. A config is written with compare-and-swap on ``config/current``:
two controllers applying at once give two versions, never one lost update,
and ``config/current`` and its history entry change in one transaction (a
controller killed mid-apply leaves the old version or the new one, whole).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import trio

from mesh.controller._state import ROLES, ControllerState, EndpointEntry, TemporaryFault
from mesh.controller._store import (
    Compare,
    KeyValue,
    Put,
    Store,
    StoreCompacted,
    StoreEvent,
    StoreHealth,
    StoreUnavailable,
)
from mesh.discovery import endpoint_from_dict, endpoint_to_dict
from mesh.errors import StoreError

log = logging.getLogger("mesh.controller.store")

KEEP_CONFIG_VERSIONS = 20
CONTROLLER_TTL = 10.0
CONTROLLER_KEEPALIVE = 3.0
HEALTH_INTERVAL = 2.0
WATCH_RETRY = 0.5
APPLY_ATTEMPTS = 5
UNWRITABLE_GRACE = 3.0  # etcd elects a new leader within ~1 s; longer is an outage


@dataclass(frozen=True, slots=True)
class ConfigRecord:
    version: int
    config: dict[str, Any]
    source: str
    applied_by: str
    applied_at: float

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": self.version,
                "config": self.config,
                "source": self.source,
                "applied_by": self.applied_by,
                "applied_at": self.applied_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ConfigRecord:
        item = json.loads(data)
        return cls(
            int(item["version"]),
            dict(item["config"]),
            str(item.get("source") or ""),
            str(item.get("applied_by") or ""),
            float(item.get("applied_at") or 0),
        )

    def summary(self) -> dict[str, Any]:
        config = self.config
        return {
            "version": self.version,
            "source": self.source,
            "applied_by": self.applied_by,
            "applied_at": self.applied_at,
            "routes": len(config.get("route") or []),
            "policies": len(config.get("policy") or []),
            "authz_default": (config.get("mesh") or {}).get("authz_default", "allow"),
        }


class Durable:
    """The controller's state, kept in a ``Store`` and followed from it."""

    def __init__(
        self, store: Store, state: ControllerState, prefix: str = "", on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.state = state
        self.prefix = prefix
        self.on_change = on_change
        self.revision = 0
        self.health: StoreHealth | None = None
        self.write_error: str | None = None  # the last write that failed, until one succeeds
        self._seen: dict[str, int] = {}  # key -> revision of the last change applied to the state
        self._leases: dict[str, int] = {}  # registration instance -> its lease
        self._controller_lease = 0
        self._unwritable_since: float | None = None  # trio time of the first "not writable" in a row

    # -- keys --------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _history_key(self, version: int) -> str:
        return self._key("config", "history", f"{version:012d}")

    @property
    def location(self) -> str:
        return self.store.location

    # -- opening -----------------------------------------------------------------------

    async def open(self, root_fingerprint: str, local_token: str) -> str:
        """Claim the store for this CA (or check the claim), agree on the join token, load everything.

        Returns the join token in force (the store's, when another controller wrote one first).
        """
        await self._claim(root_fingerprint)
        token = await self._join_token(local_token)
        await self._load()
        return token

    async def _claim(self, root_fingerprint: str) -> None:
        key = self._key("meta", "ca")
        mine = {"root_fingerprint": root_fingerprint, "trust_domain": self.state.trust_domain}
        found = await self.store.get(key)
        if found is None:
            if await self.store.commit([Put(key, json.dumps(mine).encode())], compares=[Compare(key, 0)]) is not None:
                return
            found = await self.store.get(key)  # another controller claimed it just now
        claim = json.loads(found.value) if found else {}
        if claim.get("root_fingerprint") != root_fingerprint:
            raise StoreError(
                f"{self.location} belongs to another mesh: its CA is {claim.get('root_fingerprint')} "
                f"(trust domain {claim.get('trust_domain')}), this controller's is {root_fingerprint} "
                f"(trust domain {self.state.trust_domain}); the controller refuses to share it",
                hint="copy the mesh's CA (MESH_HOME/ca) to this host (docs/operations.md, Several controllers), "
                "or give this mesh its own store (another etcd prefix: etcd://HOST:PORT/OTHER)",
            )

    async def _join_token(self, local: str) -> str:
        key = self._key("meta", "join-token")
        found = await self.store.get(key)
        if found is None:
            if await self.store.commit([Put(key, local.encode())], compares=[Compare(key, 0)]) is not None:
                return local
            found = await self.store.get(key)
        return found.value.decode() if found else local

    async def _load(self) -> None:
        """Everything in the store into the state (at start, and after a watch fell too far behind)."""
        items, revision = await self.store.range(self.prefix)
        self.revision = revision
        registrations: list[EndpointEntry] = []
        faults: dict[str, TemporaryFault] = {}
        controllers: dict[str, dict[str, Any]] = {}
        hosts: dict[str, dict[str, Any]] = {}
        revoked: dict[str, dict[str, Any]] = {}
        self._leases.clear()
        self._seen = {item.key: item.mod_revision for item in items}
        for item in items:
            kind, _, name = item.key[len(self.prefix) :].partition("/")
            try:
                if item.key == self._key("config", "current"):
                    self._adopt_config(ConfigRecord.from_json(item.value))
                elif kind == "registrations":
                    registrations.append(self._entry(item.value))
                    self._leases[name] = item.lease
                elif kind == "faults":
                    fault = _fault(item.value)
                    faults[fault.service] = fault
                elif kind == "controllers":
                    controllers[name] = json.loads(item.value)
                elif kind == "hosts":
                    hosts[name] = dict(json.loads(item.value))
                elif kind == "revocations":
                    revoked[name] = dict(json.loads(item.value))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignored %s in %s: %s", item.key, self.location, exc)
        self.state.set_joined_hosts(hosts)
        changed = self.state.replace_source("registration", registrations)
        if faults != self.state.faults:
            self.state.faults = faults
            changed = True
        changed = self.state.set_controllers(controllers) or changed
        changed = self.state.set_revoked(revoked) or changed
        if changed:
            self.state.version += 1

    def _adopt_config(self, record: ConfigRecord) -> bool:
        if record.version <= self.state.config_version:
            return False
        config = self.state.check_config(record.config, f"config version {record.version} in {self.location}")
        return self.state.set_config(config, record.version)

    def _entry(self, value: bytes) -> EndpointEntry:
        item = json.loads(value)
        role = str(item.get("role") or "service")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return EndpointEntry(
            endpoint_from_dict(item["endpoint"]),
            str(item["instance"]),
            "registration",
            expires_at=None,  # the store's lease decides
            version=item.get("mesh_version"),
            cert_expiry=item.get("cert_expiry"),
            role=role,
            controller=item.get("controller"),
            host=item.get("host"),
            zeroconf=item.get("zeroconf"),
        )

    # -- following the store -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the store's changes, watch its health, expire embedded leases; until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow)
            nursery.start_soon(self._watch_health)
            expire = getattr(self.store, "expire_leases", None)
            if expire is not None:
                nursery.start_soon(self._expire_embedded_leases, expire)
            task_status.started()

    async def _follow(self) -> None:
        outage = False
        while True:
            try:
                async with self.store.watch(self.prefix, self.revision) as batches:
                    if outage:
                        log.info("watching %s again from revision %d", self.location, self.revision)
                        outage = False
                    async for batch in batches:
                        if self._apply_events(batch):
                            self.on_change()
            except StoreCompacted as exc:
                log.warning("%s; reading the whole state again", exc.message)
                try:
                    await self._load()
                    self.on_change()
                except StoreError as load_error:
                    log.warning("cannot read %s: %s", self.location, load_error.message)
            except StoreError as exc:
                if not outage:
                    log.warning(
                        "lost the watch on %s (%s); serving the last state, retrying", self.location, exc.message
                    )
                    outage = True
            await trio.sleep(WATCH_RETRY)

    def _apply_events(self, events: list[StoreEvent]) -> bool:
        changed = False
        for event in events:
            self.revision = max(self.revision, event.revision)
            if self._seen.get(event.key, 0) < event.revision:  # else: our own write, already in the state
                self._seen[event.key] = event.revision
                try:
                    changed = self._apply_event(event) or changed
                except (ValueError, KeyError, TypeError, StoreError) as exc:
                    log.warning("ignored a change of %s in %s: %s", event.key, self.location, exc)
            if event.value is None:
                # Nothing older can come after a delete (the watch is in order): forget the key,
                # or instance names that come and go would pile up here.
                self._seen.pop(event.key, None)
        return changed

    def _apply_event(self, event: StoreEvent) -> bool:
        kind, _, name = event.key[len(self.prefix) :].partition("/")
        if event.key == self._key("config", "current"):
            if event.value is None:
                return False
            record = ConfigRecord.from_json(event.value)
            if self._adopt_config(record):
                log.info(
                    "config version %d applied by %s through another controller", record.version, record.applied_by
                )
                return True
            return False
        if kind == "registrations":
            if event.value is None:
                self._leases.pop(name, None)
                return self.state.remove(name, "registration")
            self._leases[name] = event.lease
            return self.state.upsert(self._entry(event.value))
        if kind == "faults":
            if event.value is None:
                return self.state.clear_fault(name)
            self.state.set_fault(_fault(event.value))
            return True
        if kind == "controllers":
            controllers = dict(self.state.controllers)
            if event.value is None:
                controllers.pop(name, None)
            else:
                controllers[name] = json.loads(event.value)
            return self.state.set_controllers(controllers)
        if kind == "hosts":
            hosts = dict(self.state.joined_hosts)
            if event.value is None:
                hosts.pop(name, None)
            else:
                hosts[name] = dict(json.loads(event.value))
            self.state.set_joined_hosts(hosts)  # not in snapshots: no watcher needs waking
        if kind == "revocations":
            revoked = dict(self.state.revoked)
            if event.value is None:
                revoked.pop(name, None)  # the certificate has expired: nothing left to refuse
            else:
                revoked[name] = dict(json.loads(event.value))
            return self.state.set_revoked(revoked)
        return False

    async def check_health(self) -> StoreHealth:
        """Ask the store now; the read-only switch follows the answer."""
        try:
            health = await self.store.health()
        except StoreError as exc:
            health = StoreHealth("?", self.location, False, exc.message)
        was_writable = self.health is None or (self.health.writable and self.write_error is None)
        if health.writable:
            self.write_error = None  # the store is back (the next write tells if not)
            self._unwritable_since = None
        elif self._unwritable_since is None:
            self._unwritable_since = trio.current_time()
        self.health = health
        writable = health.writable and self.write_error is None
        if writable != was_writable:
            if writable:
                log.info("%s takes writes again: `mesh apply` works", self.location)
            else:
                log.warning(
                    "%s cannot take writes (%s): serving the last state read-only, `mesh apply` is refused",
                    self.location,
                    health.reason or self.write_error,
                )
        return health

    async def _watch_health(self) -> None:
        while True:
            await self.check_health()
            await trio.sleep(HEALTH_INTERVAL)

    async def _expire_embedded_leases(self, expire: Callable[[], int]) -> None:
        while True:
            await trio.sleep(1.0)
            try:
                expire()
            except StoreError as exc:
                log.warning("cannot expire leases in %s: %s", self.location, exc.message)

    # -- writing -----------------------------------------------------------------------

    async def _commit(self, puts: list[Put] = [], deletes: list[str] = [], compares: list[Compare] = []) -> int | None:  # noqa: B006
        try:
            revision = await self.store.commit(puts, deletes, compares)
        except StoreUnavailable as exc:
            self.write_error = exc.message
            raise
        self.write_error = None
        if revision is not None:
            for key in [p.key for p in puts] + deletes:
                self._seen[key] = max(self._seen.get(key, 0), revision)
        return revision

    @property
    def read_only_reason(self) -> str | None:
        """Why writes are refused now, or None: the last failed write, or health checks that
        have said "not writable" for longer than an election takes (an election after a lost
        member is not an outage: writes wait through it)."""
        if self.write_error is not None:
            return self.write_error
        if (
            self.health is not None
            and not self.health.writable
            and self._unwritable_since is not None
            and trio.current_time() - self._unwritable_since >= UNWRITABLE_GRACE
        ):
            return f"{self.location} cannot take writes: {self.health.reason or 'unhealthy'}"
        return None

    async def apply_config(self, config: Any, source: str, applied_by: str, at_least: int = 1) -> tuple[int, bool]:
        """Make ``config`` (a checked MeshConfig) the next version: ``(version in force, changed)``.

        ``at_least``: the lowest version to give it (above what proxies hold after a restore)."""
        key = self._key("config", "current")
        data = config.to_dict()
        for _ in range(APPLY_ATTEMPTS):
            current = await self.store.get(key)
            record = ConfigRecord.from_json(current.value) if current else None
            if record is not None:
                self._adopt_config(record)  # another controller may have been faster than our watch
                same = self.state.check_config(record.config, "the stored config") == config
                if same and record.version >= at_least:
                    return record.version, False
            version = max((record.version if record else 0) + 1, at_least)
            new = ConfigRecord(version, data, source, applied_by, time.time())
            kept, _ = await self.store.range(self._key("config", "history") + "/")
            stale = [item.key for item in kept if _history_version(item.key) <= version - KEEP_CONFIG_VERSIONS]
            revision = await self._commit(
                [Put(key, new.to_json()), Put(self._history_key(version), new.to_json())],
                stale,
                [Compare(key, current.mod_revision if current else 0)],
            )
            if revision is not None:
                self.revision = max(self.revision, revision)
                self.state.set_config(config, version)
                return version, True
            log.info("config version %d was applied elsewhere meanwhile; applying on top of it", version)
        raise StoreError(
            f"the config in {self.location} kept changing while this one was applied ({APPLY_ATTEMPTS} tries)",
            hint="several operators are applying at once? `mesh config history` shows what is in force",
        )

    async def history(self) -> list[ConfigRecord]:
        items, _ = await self.store.range(self._key("config", "history") + "/")
        records = []
        for item in items:
            try:
                records.append(ConfigRecord.from_json(item.value))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignored %s in %s: %s", item.key, self.location, exc)
        return sorted(records, key=lambda r: r.version, reverse=True)

    async def config_at(self, version: int) -> ConfigRecord | None:
        found = await self.store.get(self._history_key(version))
        return ConfigRecord.from_json(found.value) if found else None

    async def register(self, entry: EndpointEntry, ttl: float) -> bool:
        """A registration or its heartbeat: written when new or changed, else its lease kept alive.
        Returns True when the state changed."""
        entry = replace(entry, expires_at=None)
        current = next(
            (e for e in self.state.entries() if e.instance == entry.instance and e.source == "registration"), None
        )
        lease = self._leases.get(entry.instance, 0)
        if current == entry and lease and await self.store.keepalive(lease):
            return False
        lease = await self.store.grant(ttl)
        value = json.dumps(
            {
                "endpoint": endpoint_to_dict(entry.endpoint),
                "instance": entry.instance,
                "mesh_version": entry.version,
                "cert_expiry": entry.cert_expiry,
                "role": entry.role,
                "controller": entry.controller,
                "host": entry.host,
                "zeroconf": entry.zeroconf,
            },
            sort_keys=True,
        ).encode()
        await self._commit([Put(self._key("registrations", entry.instance), value, lease)])
        old = self._leases.get(entry.instance)
        self._leases[entry.instance] = lease
        if old and old != lease:
            await _quietly(self.store.revoke(old))
        return self.state.upsert(entry)

    async def deregister(self, instance: str) -> bool:
        await self._commit(deletes=[self._key("registrations", instance)])
        lease = self._leases.pop(instance, 0)
        if lease:
            await _quietly(self.store.revoke(lease))
        return self.state.remove(instance, "registration")

    async def registration_revision(self, instance: str) -> int:
        """The store's revision of a registration as it is now (0: there is none)."""
        found = await self.store.get(self._key("registrations", instance))
        return found.mod_revision if found else 0

    async def withdraw_departed(self, instance: str, revision: int) -> bool:
        """Withdraw a registration whose proxy went away, unless it was written again since
        ``revision`` (the proxy came back, here or at another controller of the mesh)."""
        key = self._key("registrations", instance)
        if not revision or await self._commit(deletes=[key], compares=[Compare(key, revision)]) is None:
            return False
        lease = self._leases.pop(instance, 0)
        if lease:
            await _quietly(self.store.revoke(lease))
        return self.state.remove(instance, "registration")

    async def record_host(self, record: dict[str, Any]) -> None:
        """A host that joined, kept until it joins again (`mesh status --hosts`)."""
        key = self._key("hosts", str(record["address"]))
        await self._commit([Put(key, json.dumps(record, sort_keys=True).encode())])
        self.state.set_joined_hosts({**self.state.joined_hosts, str(record["address"]): record})

    async def put_grant(self, digest: str, record: dict[str, Any], ttl: float) -> None:
        lease = await self.store.grant(ttl)
        await self._commit([Put(self._key("grants", digest), json.dumps(record, sort_keys=True).encode(), lease)])

    async def redeem_grant(self, digest: str) -> dict[str, Any] | None:
        """A grant, used up: None when there is none (unknown, expired, or already redeemed, even at
        the same moment through another controller: the delete is conditional)."""
        key = self._key("grants", digest)
        found = await self.store.get(key)
        if found is None:
            return None
        if await self._commit(deletes=[key], compares=[Compare(key, found.mod_revision)]) is None:
            return None
        if found.lease:
            await _quietly(self.store.revoke(found.lease))
        record = dict(json.loads(found.value))
        return record if float(record.get("expires_at", 0)) > time.time() else None

    async def set_fault(self, fault: TemporaryFault) -> None:
        lease = await self.store.grant(max(1.0, fault.expires_at - time.time()))
        await self._commit([Put(self._key("faults", fault.service), json.dumps(fault.to_dict()).encode(), lease)])
        self.state.set_fault(fault)

    async def clear_fault(self, service: str) -> bool:
        await self._commit(deletes=[self._key("faults", service)])
        return self.state.clear_fault(service)

    async def record_certificate(self, serial: str, identity: str, not_after: float, controller: str) -> None:
        """Every certificate the CA signs, kept until it expires (`mesh ca issued`, audits)."""
        lease = await self.store.grant(max(60.0, not_after - time.time()))
        value = {
            "serial": serial,
            "identity": identity,
            "not_after": not_after,
            "issued_at": time.time(),
            "controller": controller,
        }
        await self._commit([Put(self._key("certificates", serial), json.dumps(value).encode(), lease)])

    async def certificates(self) -> list[dict[str, Any]]:
        items, _ = await self.store.range(self._key("certificates") + "/")
        return sorted((json.loads(i.value) for i in items), key=lambda c: c.get("issued_at", 0))

    async def certificate(self, serial: str) -> dict[str, Any] | None:
        found = await self.store.get(self._key("certificates", serial))
        return dict(json.loads(found.value)) if found else None

    async def revoke_certificates(self, records: list[dict[str, Any]]) -> None:
        """Revocations (``serial``, ``not_after``, who, why), all in one transaction; each kept
        until its certificate has expired for every clock of the mesh, then gone by its lease."""
        from mesh.identity import CLOCK_SKEW

        puts = []
        for record in records:
            ttl = max(60.0, float(record["not_after"]) - time.time() + CLOCK_SKEW.total_seconds())
            lease = await self.store.grant(ttl)
            value = json.dumps(record, sort_keys=True).encode()
            puts.append(Put(self._key("revocations", str(record["serial"])), value, lease))
        await self._commit(puts)
        self.state.set_revoked({**self.state.revoked, **{str(r["serial"]): r for r in records}})

    # -- this controller, for the others and for the proxies ----------------------------

    async def announce(self, address: str, record: dict[str, Any]) -> None:
        """Keep ``controllers/<address>`` alive while this controller runs; gone one TTL after it dies."""
        key = self._key("controllers", address)
        while True:
            try:
                if not self._controller_lease or not await self.store.keepalive(self._controller_lease):
                    self._controller_lease = await self.store.grant(CONTROLLER_TTL)
                    await self._commit([Put(key, json.dumps(record, sort_keys=True).encode(), self._controller_lease)])
                    controllers = {**self.state.controllers, address: record}
                    if self.state.set_controllers(controllers):
                        self.on_change()
            except StoreError as exc:
                log.debug("cannot announce this controller in %s: %s", self.location, exc.message)
            await trio.sleep(CONTROLLER_KEEPALIVE)

    async def withdraw(self) -> None:
        """On a clean stop: the proxies stop trying this controller at once."""
        if self._controller_lease:
            with trio.move_on_after(1.0):
                await _quietly(self.store.revoke(self._controller_lease))


def _history_version(key: str) -> int:
    try:
        return int(key.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return 0


def _fault(value: bytes) -> TemporaryFault:
    item = json.loads(value)
    return TemporaryFault(
        service=str(item["service"]),
        expires_at=float(item["expires_at"]),
        delay_seconds=item.get("delay_seconds"),
        delay_percent=float(item.get("delay_percent", 100.0)),
        abort_status=item.get("abort_status"),
        abort_percent=float(item.get("abort_percent", 100.0)),
    )


async def _quietly(call: Any) -> None:
    try:
        await call
    except StoreError as exc:
        log.debug("ignored: %s", exc.message)


__all__ = ["ConfigRecord", "Durable", "KeyValue"]
