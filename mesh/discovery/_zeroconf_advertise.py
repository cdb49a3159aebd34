"""Discovery over zeroconf: advertising this process's records, and re-announcing them.

See ``_zeroconf.py`` ("Liveness") for why records are re-announced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Self

import trio
from zeroconf import ServiceInfo, Zeroconf

from mesh.discovery._zeroconf_io import (
    DEFAULT_INTERFACES,
    _as_tuple,
    _close,
    _on_loop,
    _open,
    interface_choice,
    loopback_on_lan,
)
from mesh.discovery._zeroconf_records import (
    CONTROLLER_SERVICE_TYPE,
    MESH_SERVICE_TYPE,
    RECORD_TTL,
    AnyRecord,
    MeshServiceRecord,
    _controller_txt,
    _instance_of,
    _service_txt,
)

logger = logging.getLogger("mesh.discovery")

# Seconds between unsolicited re-announcements of every advertised record: three
# per TTL, so a record outlives two lost announcements in a row.
REANNOUNCE_INTERVAL = 3.0

_ID_HEX = 12  # 48 random bits per instance: names are unique without probing


def _new_id() -> str:
    return secrets.token_hex(_ID_HEX // 2)


def new_instance_name(service: str) -> str:
    """A unique DNS-SD instance label for a proxy of ``service``: ``web-3f9a1c2b7d4e``. A proxy
    picks it before advertising, so that it can tell the controller (which then says goodbye
    for it should the proxy die, even if it never saw the record itself)."""
    # An instance label holds 63 bytes: long service names are cut (svc has it whole).
    prefix = service[: 63 - 1 - _ID_HEX].rstrip("-")
    return f"{prefix}-{_new_id()}"


def _host_label() -> str:
    """This host's name as one DNS label (lowercase, letters, digits, '-')."""
    name = socket.gethostname().split(".")[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:40].strip("-")
    return name or "mesh"


def _full_name(record: AnyRecord) -> str:
    """``<instance>.<type>``, the DNS-SD name of an advertised record."""
    type_ = MESH_SERVICE_TYPE if isinstance(record, MeshServiceRecord) else CONTROLLER_SERVICE_TYPE
    return f"{record.instance}.{type_}"


def _service_info(record: AnyRecord, server: str) -> ServiceInfo:
    assert record.instance is not None
    if isinstance(record, MeshServiceRecord):
        type_, txt = MESH_SERVICE_TYPE, _service_txt(record)
    else:
        type_, txt = CONTROLLER_SERVICE_TYPE, _controller_txt(record)
    return ServiceInfo(
        type_,
        _full_name(record),
        port=record.port,
        properties=txt,
        server=server,
        host_ttl=RECORD_TTL,
        other_ttl=RECORD_TTL,
        parsed_addresses=[record.host],
    )


@dataclass(slots=True)
class _Advertised:
    given: AnyRecord  # as the caller passed it (instance may be None)
    record: AnyRecord  # as advertised (instance set)
    info: ServiceInfo


class ZeroconfAdvertiser:
    """Advertises this process's records (a proxy's inbound, the controller's API).

    zeroconf opens on the first ``advertise``. ``aclose()`` (or leaving
    ``async with``) withdraws everything with goodbye packets. Records carry a
    random 48-bit id in their instance name, so registration skips the conflict
    probe (RFC 6762 8.1, about a second) and peers see a record within
    milliseconds.
    """

    def __init__(self, interfaces: Sequence[str] = DEFAULT_INTERFACES) -> None:
        interface_choice(interfaces)  # fail fast on a bad list
        self._interfaces = _as_tuple(interfaces)
        self._zc: Zeroconf | None = None
        self._lock = trio.Lock()
        self._advertised: dict[str, _Advertised] = {}  # by full DNS-SD name
        self._reannouncing: concurrent.futures.Future[None] | None = None
        self._closed = False

    @property
    def interfaces(self) -> tuple[str, ...]:
        return self._interfaces

    def advertised(self) -> list[AnyRecord]:
        return [entry.record for entry in self._advertised.values()]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def advertise(self, record: AnyRecord) -> AnyRecord:
        """Announce ``record``; returns it with its instance name.

        Advertising the same record again does nothing; a record whose
        ``instance`` is already advertised here replaces it in place (peers see
        an update, not a removal).
        """
        async with self._lock:
            if self._closed:
                raise RuntimeError("the zeroconf advertiser is closed")
            for entry in self._advertised.values():
                if record in (entry.given, entry.record):
                    return entry.record
            if self._zc is None:
                self._zc = await _open(self._interfaces)
                assert self._zc.loop is not None
                self._reannouncing = asyncio.run_coroutine_threadsafe(_reannounce(self._zc), self._zc.loop)
            zc = self._zc
            advertised = record if record.instance else replace(record, instance=self._instance(record))
            old = self._advertised.get(_full_name(advertised))
            if old is not None and old.info.server:
                server = old.info.server  # an update keeps the host name
            else:
                server = f"{_host_label()}-{_new_id()}.local."
            info = _service_info(advertised, server)
            if old is not None:
                await _on_loop(zc, _update(zc, info))
            else:
                try:
                    await _on_loop(zc, _register(zc, info))
                except BaseException:
                    # Cancelled half-way: take back whatever zeroconf may hold.
                    with trio.CancelScope(shield=True):
                        await _on_loop(zc, _unregister(zc, info))
                    raise
            self._advertised[info.name] = _Advertised(record, advertised, info)
            logger.debug("zeroconf: advertising %s", info.name)
            problem = loopback_on_lan(advertised.host, self._interfaces) if old is None else None
            if problem:
                logger.warning("zeroconf: %s: %s", _instance_of(info.name, info.type), problem)
            return advertised

    async def withdraw(self, record: AnyRecord) -> bool:
        """Withdraw a record (the one given to ``advertise`` or the one it returned).

        Returns after the goodbye packets went out; False when it was not advertised.
        """
        async with self._lock:
            for name, entry in self._advertised.items():
                if record in (entry.given, entry.record) or (
                    record.instance is not None and name == _full_name(record)
                ):
                    break
            else:
                return False
            del self._advertised[name]
            assert self._zc is not None
            with trio.CancelScope(shield=True):  # half a withdraw helps nobody
                await _on_loop(self._zc, _unregister(self._zc, entry.info))
            logger.debug("zeroconf: withdrew %s", name)
            return True

    async def aclose(self) -> None:
        """Withdraw every record (goodbye packets) and close zeroconf. Idempotent."""
        with trio.CancelScope(shield=True):
            async with self._lock:
                self._closed = True
                zc, self._zc = self._zc, None
                self._advertised.clear()
                if self._reannouncing is not None:
                    self._reannouncing.cancel()
                    self._reannouncing = None
                if zc is not None:
                    await _close(zc)

    def _instance(self, record: AnyRecord) -> str:
        return new_instance_name(record.service if isinstance(record, MeshServiceRecord) else "controller")


async def _reannounce(zc: Zeroconf) -> None:
    """On zeroconf's loop: announce every registered record again, every few seconds."""
    while True:
        await asyncio.sleep(REANNOUNCE_INTERVAL)
        for info in zc.registry.async_get_service_infos():
            try:
                zc.async_send(zc.generate_service_broadcast(info, None))
            except Exception:  # one bad send must not end the announcements of all
                logger.warning("zeroconf: could not re-announce %s", info.name, exc_info=True)


async def _register(zc: Zeroconf, info: ServiceInfo) -> None:
    # Returns once the record is in zeroconf's registry; the announcements
    # (three, 225 ms apart, the first at once) go on in zeroconf's loop.
    await zc.async_register_service(info, cooperating_responders=True)


async def _update(zc: Zeroconf, info: ServiceInfo) -> None:
    await zc.async_update_service(info)


async def _unregister(zc: Zeroconf, info: ServiceInfo) -> None:
    if zc.registry.async_get_info_name(info.name) is None:
        return
    goodbyes = await zc.async_unregister_service(info)
    await goodbyes  # three goodbye packets, 125 ms apart
