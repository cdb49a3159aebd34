"""Discovery over zeroconf (mDNS/DNS-SD): proxies advertise themselves, peers browse.

Records (docs/discovery.md, "zeroconf"):

- a proxy: ``_mesh._tcp.local.``, instance ``<service>-<12 hex>``, SRV port = its
  inbound port, A = its inbound address, TXT ``svc``, ``id``, ``labels``
  (``k=v,k2=v2``), ``admin`` (port, optional), ``proto`` (the declared protocol,
  absent for ``auto``), ``mesh`` (the mesh id: 16 hex digits of the CA root's
  fingerprint), ``v`` (mesh version);
- the controller: ``_mesh-ctl._tcp.local.``, TXT ``id``, ``v``, ``api`` (port), ``mesh``.

A mesh knows its own: a registry or a controller lookup given the mesh ids of its
bundle ignores, with one debug line, every record of another mesh (another CA),
whatever trust domain it names: two meshes that both kept ``mesh.local`` on one
LAN never see each other's services.

Liveness: every record has a TTL of ``RECORD_TTL`` (10) seconds and the
advertiser re-announces its records every ``REANNOUNCE_INTERVAL`` (3) seconds, so
a record stays fresh in every peer's cache while its owner lives, even through
two lost packets. A withdraw sends goodbye packets: peers drop the record at
once. A proxy killed without a goodbye stops re-announcing; the registry checks
every second which SRV records went past their TTL and drops those, 7-11 s
after the death. (zeroconf's browser cannot do this alone: it raises the TTL of
every PTR record it receives to at least 1125 s, so its own "removed" event for
a dead owner comes 19 minutes late.)

Network safety: zeroconf binds only the interfaces it is given, loopback by
default; ``"all"`` (``--lan``) must be asked for explicitly. Only IPv4.

Threads: zeroconf runs its own asyncio loop in a thread of its own. Its
coroutines (register, unregister, resolve) are submitted to that loop with
``asyncio.run_coroutine_threadsafe`` and awaited from trio through a
``trio.Event`` set by the future's done-callback (``TrioToken.run_sync_soon``);
no trio worker thread is held while waiting, and a trio cancellation cancels
the coroutine. Browser callbacks arrive on zeroconf's browser thread and are
handed to trio the same way. The blocking calls left (open, close) run in
``trio.to_thread``.

This module is the browsing side (``ZeroconfRegistry``, ``find_controller``); the
records and their parsing are in ``_zeroconf_records.py``, advertising in
``_zeroconf_advertise.py``, the plumbing both share in ``_zeroconf_io.py`` and
``mesh check``'s self-test in ``_zeroconf_probe.py``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence

import trio
from zeroconf import (
    DNSOutgoing,
    DNSPointer,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)

from mesh.discovery._endpoint import Endpoint
from mesh.discovery._registry import MemoryRegistry
from mesh.discovery._zeroconf_io import (
    DEFAULT_INTERFACES,
    _as_tuple,
    _close,
    _on_loop,
    _open,
    _resolve,
    _start_browser,
    interface_choice,
)
from mesh.discovery._zeroconf_records import (
    CONTROLLER_SERVICE_TYPE,
    MESH_SERVICE_TYPE,
    RECORD_TTL,
    ControllerRecord,
    MeshServiceRecord,
    check_mesh,
    parse_controller_record,
    parse_service_record,
)

logger = logging.getLogger("mesh.discovery")

# Seconds between two looks of the registry at which SRV records went past their TTL.
EXPIRY_CHECK_INTERVAL = 1.0
RESOLVE_TIMEOUT = 3.0  # seconds to wait for SRV/TXT/A after a browser saw a name

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_FLAGS_QR_RESPONSE, _FLAGS_AA = 0x8000, 0x0400  # a response, authoritative (RFC 1035 4.1.1)
_TYPE_PTR = 12  # DNS record type and class numbers (RFC 1035, RFC 2782)
_TYPE_SRV = 33
_CLASS_IN = 1


# -- browsing ----------------------------------------------------------------------------------


class ZeroconfRegistry:
    """A Registry filled by browsing ``_mesh._tcp.local.`` (composition over MemoryRegistry).

    ``run()`` keeps the table current until cancelled: a new record is added, a
    changed one updated, a withdrawn one removed at once (goodbye), a dead
    proxy's record removed once its SRV record is past its TTL (checked every
    ``EXPIRY_CHECK_INTERVAL``); should it be announced again, it comes back.
    Records that are malformed, belong to another trust domain or, given
    ``mesh_ids``, to another mesh are ignored with one debug line each. When two
    live records give the same address for a service, the newer wins.
    """

    def __init__(
        self,
        interfaces: Sequence[str] = DEFAULT_INTERFACES,
        *,
        trust_domain: str,
        mesh_ids: Sequence[str] | None = None,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        if not isinstance(trust_domain, str) or not _TRUST_DOMAIN.fullmatch(trust_domain):
            raise ValueError(f"invalid trust domain {trust_domain!r}")
        interface_choice(interfaces)  # fail fast on a bad list
        self._interfaces = _as_tuple(interfaces)
        self._trust_domain = trust_domain
        self._mesh_ids = tuple(mesh_ids) if mesh_ids is not None else None
        self._resolve_timeout = resolve_timeout
        self._infos: dict[str, ServiceInfo] = {}  # name → what was resolved (to say goodbye for it)
        self._table = MemoryRegistry()
        self._records: dict[str, tuple[int, MeshServiceRecord]] = {}  # name → (seq, record)
        self._stale: set[str] = set()  # dropped for an expired SRV; the browser still lists them
        self._resolving: dict[str, trio.CancelScope] = {}
        self._ignored: dict[str, str] = {}  # name → the reason last logged
        self._seq = 0
        self._zc: Zeroconf | None = None
        self._nursery: trio.Nursery | None = None

    # -- Registry

    def endpoints(self, service: str) -> tuple[Endpoint, ...]:
        return self._table.endpoints(service)

    def services(self) -> frozenset[str]:
        return self._table.services()

    @property
    def version(self) -> int:
        return self._table.version

    async def wait_changed(self, version: int) -> int:
        return await self._table.wait_changed(version)

    # -- extras

    @property
    def interfaces(self) -> tuple[str, ...]:
        return self._interfaces

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    def snapshot(self) -> dict[str, tuple[Endpoint, ...]]:
        return self._table.snapshot()

    def records(self) -> list[MeshServiceRecord]:
        """Every live, valid record, with instance and version (for the controller)."""
        return sorted(
            (record for _, record in self._records.values()),
            key=lambda r: (r.service, r.instance or ""),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Browse until cancelled; ready once the browser is started. Closes zeroconf on exit."""
        if self._zc is not None:
            raise RuntimeError("ZeroconfRegistry.run() is already running")
        zc = self._zc = await _open(self._interfaces)
        browser: ServiceBrowser | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                browser = _start_browser(zc, MESH_SERVICE_TYPE, self._on_change)
                nursery.start_soon(self._watch_ttl, zc)
                task_status.started()
        finally:
            self._nursery = None
            self._resolving.clear()
            self._zc = None
            await _close(zc, browser)

    # -- in the trio thread

    def _on_change(self, name: str, change: ServiceStateChange) -> None:
        """From the browser (via the trio token): a name appeared, changed or left."""
        if self._nursery is None:
            return  # stopped: a late callback
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()
        if change is ServiceStateChange.Removed:
            self._ignored.pop(name, None)
            self._stale.discard(name)
            self._infos.pop(name, None)
            if self._records.pop(name, None) is not None:
                logger.debug("zeroconf: %s is gone", name)
                self._publish()
            return
        scope = trio.CancelScope()
        self._resolving[name] = scope
        self._nursery.start_soon(self._resolve, name, scope)

    async def _resolve(self, name: str, scope: trio.CancelScope) -> None:
        zc = self._zc
        info: ServiceInfo | None = None
        if zc is not None:
            with scope:
                info = await _resolve(zc, MESH_SERVICE_TYPE, name, self._resolve_timeout)
        if self._resolving.get(name) is not scope:
            return  # superseded by a newer change, or removed
        del self._resolving[name]
        if info is None:
            logger.debug("zeroconf: %s did not resolve within %s s", name, self._resolve_timeout)
            return
        try:
            record = parse_service_record(
                name,
                info.port,
                info.parsed_addresses(IPVersion.V4Only),
                info.properties,
                self._trust_domain,
            )
            check_mesh(record.mesh, self._mesh_ids)
        except ValueError as exc:
            if self._ignored.get(name) != str(exc):
                self._ignored[name] = str(exc)
                logger.debug("zeroconf: ignoring %s: %s", name, exc)
            if self._records.pop(name, None) is not None:
                self._publish()
            return
        self._ignored.pop(name, None)
        self._stale.discard(name)
        self._infos[name] = info
        old = self._records.get(name)
        if old is not None and old[1] == record:
            return
        self._seq += 1
        self._records[name] = (self._seq, record)
        logger.debug("zeroconf: %s is %s at %s:%s", name, record.service, record.host, record.port)
        self._publish()

    async def _watch_ttl(self, zc: Zeroconf) -> None:
        """Drop records whose SRV went past its TTL (a dead owner); revive them if announced again."""
        while True:
            await trio.sleep(EXPIRY_CHECK_INTERVAL)
            names = {*self._records, *self._stale}
            if not names:
                continue
            fresh = await _on_loop(zc, _fresh_names(zc, names))
            expired = [name for name in self._records if name in names and name not in fresh]
            for name in expired:
                del self._records[name]
                self._stale.add(name)
                logger.debug("zeroconf: %s expired (not announced for %s s)", name, RECORD_TTL)
            if expired:
                self._publish()
            for name in [name for name in self._stale if name in fresh]:
                self._stale.discard(name)
                self._on_change(name, ServiceStateChange.Updated)

    async def forget(self, host: str, port: int, instance: str | None = None) -> int:
        """Drop the records that point at ``host:port`` (a proxy known to be dead), and ``instance``
        (the name it said it advertises under), and send goodbye packets for them, so that every
        peer on these interfaces drops them too instead of waiting out their TTL. A proxy that is
        alive after all announces itself again within seconds. Returns how many records went here."""
        zc = self._zc
        names = [n for n, (_, r) in self._records.items() if (r.host, r.port) == (host, port)]
        infos = [self._infos[n] for n in names if n in self._infos]
        for name in names:
            del self._records[name]
        if names:
            self._publish()
        # Not seen here (yet): the pointer's goodbye is what browsers act on, and it needs only the name.
        unseen = [] if instance is None else [f"{instance}.{MESH_SERVICE_TYPE}"]
        unseen = [n for n in unseen if n not in names]
        if names or unseen:
            logger.debug("zeroconf: %s:%s is gone: goodbye for %s", host, port, ", ".join(names + unseen))
        if zc is not None and (infos or unseen):
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await _on_loop(zc, _goodbyes(zc, infos, unseen))
        return len(names)

    def _publish(self) -> None:
        newest: dict[str, dict[tuple[str, int], tuple[int, Endpoint]]] = {}
        for seq, record in self._records.values():
            by_address = newest.setdefault(record.service, {})
            key = (record.host, record.port)
            if key not in by_address or by_address[key][0] < seq:
                by_address[key] = (seq, record.endpoint())
        self._table.replace_all(
            {
                service: sorted(
                    (endpoint for _, endpoint in by_address.values()),
                    key=lambda e: (e.host, e.port),
                )
                for service, by_address in newest.items()
            }
        )


async def _goodbyes(zc: Zeroconf, infos: Iterable[ServiceInfo], names: Iterable[str] = ()) -> None:
    """On zeroconf's loop: goodbye packets (TTL 0) for records another host announced. The host's
    address records are left alone: its other services may still use them. For ``names`` only
    their pointer goes (the rest of such a record was never seen here)."""
    pointers = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    for name in names:
        pointers.add_answer_at_time(DNSPointer(MESH_SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 0, name), 0)
    if names:
        zc.async_send(pointers)
    cache = zc.cache
    for info in infos:
        zc.async_send(zc.generate_service_broadcast(info, 0, broadcast_addresses=False))
        # Out of our own cache too (whether or not our packet comes back to us): should the
        # proxy announce itself again, the browser sees a new record, and it comes back.
        ours = [
            r
            for r in cache.async_all_by_details(info.type, _TYPE_PTR, _CLASS_IN)
            if getattr(r, "alias", None) == info.name
        ]
        cache.async_remove_records([*cache.async_entries_with_name(info.name), *ours])


async def _fresh_names(zc: Zeroconf, names: Iterable[str]) -> set[str]:
    """On zeroconf's loop: which of ``names`` have an SRV record within its TTL."""
    now = current_time_millis()
    return {
        name
        for name in names
        if any(not record.is_expired(now) for record in zc.cache.async_all_by_details(name, _TYPE_SRV, _CLASS_IN))
    }


async def find_controller(
    interfaces: Sequence[str] = DEFAULT_INTERFACES,
    timeout: float = 3.0,
    *,
    trust_domain: str | None = None,
    mesh_ids: Sequence[str] | None = None,
) -> ControllerRecord | None:
    """The first controller that answers on ``_mesh-ctl._tcp.local.`` within ``timeout`` s.

    For proxies without a controller.json. With ``trust_domain`` and ``mesh_ids``,
    controllers of other meshes are ignored. None when none was found in time.
    """
    zc = await _open(interfaces)
    browser: ServiceBrowser | None = None
    try:
        send, receive = trio.open_memory_channel[str](math.inf)

        def on_change(name: str, change: ServiceStateChange) -> None:
            if change is not ServiceStateChange.Removed:
                send.send_nowait(name)

        browser = _start_browser(zc, CONTROLLER_SERVICE_TYPE, on_change)
        with trio.move_on_after(timeout):
            async for name in receive:
                info = await _resolve(zc, CONTROLLER_SERVICE_TYPE, name, RESOLVE_TIMEOUT)
                if info is None:
                    continue
                try:
                    record = parse_controller_record(
                        name,
                        info.port,
                        info.parsed_addresses(IPVersion.V4Only),
                        info.properties,
                        trust_domain,
                    )
                    check_mesh(record.mesh, mesh_ids)
                    return record
                except ValueError as exc:
                    logger.debug("zeroconf: ignoring controller %s: %s", name, exc)
        return None
    finally:
        await _close(zc, browser)
