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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Self, TypeVar

import ifaddr
import trio
from zeroconf import (
    DNSOutgoing,
    DNSPointer,
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)

from mesh import __version__
from mesh.config import APP_PROTOCOLS, DEFAULT_PROTOCOL
from mesh.discovery._endpoint import SERVICE_NAME_RULE, Endpoint, is_valid_service_name
from mesh.discovery._registry import MemoryRegistry
from mesh.discovery._static_file import _LABEL_KEY, _LABEL_VALUE, _SPIFFE_ID
from mesh.errors import DiscoveryError

logger = logging.getLogger("mesh.discovery")

MESH_SERVICE_TYPE = "_mesh._tcp.local."
CONTROLLER_SERVICE_TYPE = "_mesh-ctl._tcp.local."
# `mesh check`'s probe has a type of its own, so that no registry ever sees it.
PROBE_SERVICE_TYPE = "_mesh-probe._tcp.local."
DEFAULT_INTERFACES: tuple[str, ...] = ("127.0.0.1",)
# Seconds; for every record (PTR, SRV, TXT, A), sent in each announcement.
RECORD_TTL = 10
# Seconds between unsolicited re-announcements of every advertised record: three
# per TTL, so a record outlives two lost announcements in a row.
REANNOUNCE_INTERVAL = 3.0
# Seconds between two looks of the registry at which SRV records went past their TTL.
EXPIRY_CHECK_INTERVAL = 1.0
RESOLVE_TIMEOUT = 3.0  # seconds to wait for SRV/TXT/A after a browser saw a name

_ID_HEX = 12  # 48 random bits per instance: names are unique without probing
_TXT_MAX = 255  # one TXT string, "key=value", in bytes (RFC 6763 6.1)
_INSTANCE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_FLAGS_QR_RESPONSE, _FLAGS_AA = 0x8000, 0x0400  # a response, authoritative (RFC 1035 4.1.1)
_TYPE_PTR = 12  # DNS record type and class numbers (RFC 1035, RFC 2782)
_TYPE_SRV = 33
_CLASS_IN = 1

_T = TypeVar("_T")


# -- records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeshServiceRecord:
    """What a proxy advertises about its inbound listener.

    ``host`` is the IPv4 address peers connect to (127.0.0.1 on loopback), ``port``
    the inbound port. ``labels`` are sorted ``(key, value)`` pairs (a mapping is
    accepted). ``instance`` is the DNS-SD instance label (``web-3f9a1c2b7d4e``);
    None lets the advertiser pick a unique one. ``version`` is empty when a
    peer's record carries no ``v``. Invalid values raise ValueError.
    """

    service: str
    identity: str
    host: str
    port: int
    labels: tuple[tuple[str, str], ...] = ()
    admin_port: int | None = None
    version: str = __version__
    instance: str | None = None
    protocol: str = DEFAULT_PROTOCOL
    mesh: str | None = None  # the mesh id (``mesh.identity.mesh_id``); None in records of older proxies

    def __post_init__(self) -> None:
        _check_mesh(self.mesh)
        if self.protocol not in APP_PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(APP_PROTOCOLS)}, got {self.protocol!r}")
        if not isinstance(self.service, str) or not is_valid_service_name(self.service):
            raise ValueError(f"service must be {SERVICE_NAME_RULE}, got {self.service!r}")
        _check_identity(self.identity)
        _check_host(self.host)
        _check_port("port", self.port)
        if self.admin_port is not None:
            _check_port("admin_port", self.admin_port)
        labels: Mapping[str, str] | Iterable[tuple[str, str]] = self.labels
        pairs = tuple(sorted(dict(labels).items()))
        for key, value in pairs:
            if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
                raise ValueError(f"label name {key!r} is not valid")
            if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
                raise ValueError(f"label {key}={value!r}: the value is not valid")
        object.__setattr__(self, "labels", pairs)
        _check_version(self.version)
        _check_instance(self.instance)
        _check_txt(_service_txt(self))

    def endpoint(self) -> Endpoint:
        return Endpoint(
            self.service, self.host, self.port, self.identity, self.labels, self.admin_port, self.protocol
        )


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    """What the controller advertises: where its API listens and who it is."""

    identity: str
    host: str
    port: int
    version: str = __version__
    instance: str | None = None
    mesh: str | None = None

    def __post_init__(self) -> None:
        _check_mesh(self.mesh)
        _check_identity(self.identity)
        _check_host(self.host)
        _check_port("port", self.port)
        _check_version(self.version)
        _check_instance(self.instance)
        _check_txt(_controller_txt(self))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


AnyRecord = MeshServiceRecord | ControllerRecord


def _check_identity(identity: object) -> None:
    if not isinstance(identity, str) or not _SPIFFE_ID.fullmatch(identity):
        raise ValueError(
            f"identity must be a SPIFFE id like spiffe://mesh.local/svc/web, got {identity!r}"
        )


def _check_host(host: object) -> None:
    try:
        address = ipaddress.IPv4Address(host) if isinstance(host, str) else None
    except ValueError:
        address = None
    if address is None:
        raise ValueError(f"host must be the IPv4 address peers connect to, got {host!r}")
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"host must be the address peers connect to, not {host}")


def _check_port(what: str, port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} must be an integer from 1 to 65535, got {port!r}")


_MESH_ID = re.compile(r"[0-9a-f]{16}")


def _check_mesh(mesh: object) -> None:
    if mesh is not None and (not isinstance(mesh, str) or not _MESH_ID.fullmatch(mesh)):
        raise ValueError(f"mesh must be a mesh id (16 lowercase hex digits), got {mesh!r}")


def _check_version(version: object) -> None:
    if not isinstance(version, str) or not version.isprintable():
        raise ValueError(f"version must be a printable string, got {version!r}")


def _check_instance(instance: object) -> None:
    if instance is not None and (
        not isinstance(instance, str) or not _INSTANCE.fullmatch(instance)
    ):
        raise ValueError(
            "instance must be 1 to 63 letters, digits and '-', "
            f"starting and ending with a letter or digit, got {instance!r}"
        )


def _check_txt(txt: Mapping[str, str]) -> None:
    for key, value in txt.items():
        size = len(key.encode()) + 1 + len(value.encode())
        if size > _TXT_MAX:
            raise ValueError(
                f"TXT entry {key!r} takes {size} bytes; a TXT string holds at most {_TXT_MAX}"
            )


def _service_txt(record: MeshServiceRecord) -> dict[str, str]:
    txt = {
        "svc": record.service,
        "id": record.identity,
        "labels": ",".join(f"{key}={value}" for key, value in record.labels),
    }
    if record.admin_port is not None:
        txt["admin"] = str(record.admin_port)
    if record.protocol != DEFAULT_PROTOCOL:  # records of older proxies have none: auto
        txt["proto"] = record.protocol
    if record.mesh is not None:
        txt["mesh"] = record.mesh
    txt["v"] = record.version
    return txt


def _controller_txt(record: ControllerRecord) -> dict[str, str]:
    txt = {"id": record.identity, "v": record.version, "api": str(record.port)}
    if record.mesh is not None:
        txt["mesh"] = record.mesh
    return txt


def _parse_mesh(txt: Mapping[str, str]) -> str | None:
    mesh = txt.get("mesh") or None
    if mesh is not None and not _MESH_ID.fullmatch(mesh):
        raise _Malformed(f"TXT mesh={mesh!r} is not a mesh id")
    return mesh


class OtherMesh(ValueError):
    """A record of another mesh (another CA): none of ours, not malformed either."""


def check_mesh(mesh: str | None, mesh_ids: Sequence[str] | None) -> None:
    """Raise OtherMesh unless a record with this mesh id belongs to the mesh of ``mesh_ids``
    (None: any mesh will do). A record without one is of a mesh that predates mesh ids."""
    if mesh_ids is None:
        return
    if mesh is None:
        raise OtherMesh("it carries no mesh id (a proxy of an older mesh version, or of another mesh)")
    if mesh not in mesh_ids:
        raise OtherMesh(f"it belongs to another mesh ({mesh}; this one is {', '.join(mesh_ids)})")


# -- reading records -------------------------------------------------------------------


class _Malformed(ValueError):
    """Why a peer's record is ignored."""


def _instance_of(name: str, type_: str) -> str:
    return name.removesuffix("." + type_)


def _text_properties(properties: Mapping[bytes, bytes | None]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        try:
            key = raw_key.decode("ascii").lower()
            value = "" if raw_value is None else raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"TXT entry {raw_key!r} is not text") from None
        texts[key] = value
    return texts


def _required(txt: Mapping[str, str], key: str) -> str:
    value = txt.get(key)
    if value is None:
        raise _Malformed(f"TXT has no {key!r}")
    return value


def _parse_port(text: str, key: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _Malformed(f"TXT {key}={text!r} is not a port number")
    return int(text)


def _parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        if not equals or not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise _Malformed(f"TXT labels={text!r}: {item!r} is not key=value")
        if key in labels:
            raise _Malformed(f"TXT labels={text!r}: {key!r} twice")
        labels[key] = value
    return tuple(sorted(labels.items()))


def _address_of(addresses: Sequence[str]) -> str:
    if not addresses:
        raise _Malformed("no IPv4 address")
    # Stable choice when a host advertises several: the lowest address.
    return min(addresses, key=lambda a: ipaddress.IPv4Address(a))


def parse_service_record(
    name: str,
    port: int | None,
    addresses: Sequence[str],
    properties: Mapping[bytes, bytes | None],
    trust_domain: str,
) -> MeshServiceRecord:
    """A peer's ``_mesh._tcp`` record → MeshServiceRecord; ValueError says why not.

    The ``id`` must be ``spiffe://<trust_domain>/svc/<svc>``: mDNS is not
    authenticated, so a record may say where a service is but never which
    other identity to trust for it.
    """
    try:
        txt = _text_properties(properties)
        service = _required(txt, "svc")
        if not is_valid_service_name(service):
            raise _Malformed(f"TXT svc={service!r} is not a service name")
        identity = _required(txt, "id")
        expected = f"spiffe://{trust_domain}/svc/{service}"
        if identity != expected:
            if not identity.startswith(f"spiffe://{trust_domain}/"):
                raise _Malformed(f"TXT id={identity!r} is not in trust domain {trust_domain}")
            raise _Malformed(f"TXT id={identity!r} is not {expected}")
        labels = _parse_labels(txt.get("labels", ""))
        admin = txt.get("admin")
        admin_port = _parse_port(admin, "admin") if admin else None
        protocol = txt.get("proto", DEFAULT_PROTOCOL)
        if protocol not in APP_PROTOCOLS:
            raise _Malformed(f"TXT proto={protocol!r} is not one of {', '.join(APP_PROTOCOLS)}")
        if port is None or not 1 <= port <= 65535:
            raise _Malformed(f"SRV port {port!r} is not a port number")
        return MeshServiceRecord(
            service=service,
            identity=identity,
            host=_address_of(addresses),
            port=port,
            labels=labels,
            admin_port=admin_port,
            protocol=protocol,
            version=txt.get("v", ""),
            instance=_instance_of(name, MESH_SERVICE_TYPE),
            mesh=_parse_mesh(txt),
        )
    except _Malformed:
        raise
    except ValueError as exc:
        raise _Malformed(str(exc)) from None


def parse_controller_record(
    name: str,
    port: int | None,
    addresses: Sequence[str],
    properties: Mapping[bytes, bytes | None],
    trust_domain: str | None = None,
) -> ControllerRecord:
    """A ``_mesh-ctl._tcp`` record → ControllerRecord; ValueError says why not."""
    try:
        txt = _text_properties(properties)
        identity = _required(txt, "id")
        if trust_domain is not None and not identity.startswith(f"spiffe://{trust_domain}/"):
            raise _Malformed(f"TXT id={identity!r} is not in trust domain {trust_domain}")
        api = txt.get("api")
        if api:
            port = _parse_port(api, "api")
        if port is None or not 1 <= port <= 65535:
            raise _Malformed(f"SRV port {port!r} is not a port number")
        return ControllerRecord(
            identity=identity,
            host=_address_of(addresses),
            port=port,
            version=txt.get("v", ""),
            instance=_instance_of(name, CONTROLLER_SERVICE_TYPE),
            mesh=_parse_mesh(txt),
        )
    except _Malformed:
        raise
    except ValueError as exc:
        raise _Malformed(str(exc)) from None


# -- zeroconf plumbing ---------------------------------------------------------------------


def interface_choice(interfaces: Sequence[str]) -> list[str] | InterfaceChoice:
    """Check the interfaces zeroconf may bind: IPv4 addresses of this host, or ``["all"]``.

    ``"all"`` (``--lan``) is the only way to reach the machine's real networks
    without naming them; nothing picks it by default. Raises DiscoveryError.
    """
    chosen = list(_as_tuple(interfaces))
    if not chosen:
        raise DiscoveryError(
            "zeroconf needs at least one interface", hint='use ["127.0.0.1"] (loopback)'
        )
    if "all" in chosen:
        if len(chosen) > 1:
            raise DiscoveryError('zeroconf interfaces: ["all"] alone or a list of IP addresses')
        return InterfaceChoice.All
    local = _local_ipv4_addresses()
    for interface in chosen:
        try:
            address = ipaddress.ip_address(interface)
        except ValueError:
            raise DiscoveryError(
                f"zeroconf interface {interface!r} is not an IP address",
                hint='give IPv4 addresses of this host, e.g. ["127.0.0.1"], or ["all"]',
            ) from None
        if address.version != 4:
            raise DiscoveryError(
                f"zeroconf interface {interface}: only IPv4 is supported",
                hint="give the interface's IPv4 address",
            )
        if interface not in local:
            raise DiscoveryError(
                f"zeroconf interface {interface} is not an address of this host",
                hint=f"addresses here: {', '.join(sorted(local)) or 'none'}",
            )
    return chosen


def _as_tuple(interfaces: Sequence[str]) -> tuple[str, ...]:
    return (interfaces,) if isinstance(interfaces, str) else tuple(interfaces)


def _local_ipv4_addresses() -> set[str]:
    return {
        ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)
    }


def loopback_on_lan(host: str, interfaces: Sequence[str]) -> str | None:
    """Why advertising ``host`` on ``interfaces`` misleads other hosts, or None.

    A loopback address is right only for peers on this host. Sent on a LAN
    interface, it points every other host at itself: its proxies fail to
    connect (502), or dial a listener of their own. A peer on this host may
    still use it, so this is a warning, not a refusal.
    """
    if not ipaddress.IPv4Address(host).is_loopback:
        return None
    lan = [
        i for i in _as_tuple(interfaces) if i == "all" or not ipaddress.ip_address(i).is_loopback
    ]
    if not lan:
        return None
    return (
        f"the loopback address {host} is advertised on {', '.join(lan)}: other hosts cannot "
        "reach it; listen on an address of that network (mesh proxy/inject: --inbound ADDR:0, "
        "or --inbound 0.0.0.0:0 --advertise ADDR; mesh controller: --listen ADDR:PORT)"
    )


def _open_zeroconf(interfaces: Sequence[str]) -> Zeroconf:
    """A Zeroconf bound to exactly ``interfaces`` (blocking: call it from a thread)."""
    choice = interface_choice(interfaces)
    try:
        return Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise DiscoveryError(
            f"cannot open mDNS sockets (UDP 5353) on {', '.join(interfaces)}: {exc}",
            hint="another program may hold port 5353 without SO_REUSEPORT",
        ) from None


async def _open(interfaces: Sequence[str]) -> Zeroconf:
    return await trio.to_thread.run_sync(_open_zeroconf, interfaces)


def _close_zeroconf(zc: Zeroconf, browser: ServiceBrowser | None = None) -> None:
    """Stop the browser (zc.close does not know browsers made directly), then zeroconf.

    Blocking: joins the browser's thread, sends goodbyes for what is still
    registered (about 250 ms) and joins zeroconf's loop thread.
    """
    try:
        if browser is not None:
            browser.cancel()
        zc.close()
    except Exception:  # a failing close must not hide the real exit
        logger.debug("closing zeroconf failed", exc_info=True)


async def _close(zc: Zeroconf, browser: ServiceBrowser | None = None) -> None:
    """``_close_zeroconf`` in a worker thread, even when cancelled."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(_close_zeroconf, zc, browser)


async def _on_loop(zc: Zeroconf, coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` on zeroconf's own asyncio loop and await it from trio."""
    loop = zc.loop
    assert loop is not None
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_future: object) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()


async def _resolve(zc: Zeroconf, type_: str, name: str, timeout: float) -> ServiceInfo | None:
    """SRV, TXT and A of ``name`` (from the cache, else asked for), or None."""
    info = ServiceInfo(type_, name)
    found = await _on_loop(zc, info.async_request(zc, timeout * 1000))
    return info if found else None


_Callback = Callable[[str, ServiceStateChange], None]


def _start_browser(zc: Zeroconf, type_: str, callback: _Callback) -> ServiceBrowser:
    """Browse ``type_``; ``callback(name, change)`` runs in the trio thread."""
    token = trio.lowlevel.current_trio_token()

    def handler(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        # On zeroconf's browser thread: hand over, never touch trio state here.
        try:
            token.run_sync_soon(callback, name, state_change)
        except trio.RunFinishedError:
            pass

    return ServiceBrowser(zc, type_, handlers=[handler])


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


# -- advertising -----------------------------------------------------------------------------


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
                self._reannouncing = asyncio.run_coroutine_threadsafe(
                    _reannounce(self._zc), self._zc.loop
                )
            zc = self._zc
            advertised = (
                record if record.instance else replace(record, instance=self._instance(record))
            )
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
        pointers = [
            r
            for r in cache.async_all_by_details(info.type, _TYPE_PTR, _CLASS_IN)
            if getattr(r, "alias", None) == info.name
        ]
        cache.async_remove_records([*cache.async_entries_with_name(info.name), *pointers])


async def _fresh_names(zc: Zeroconf, names: Iterable[str]) -> set[str]:
    """On zeroconf's loop: which of ``names`` have an SRV record within its TTL."""
    now = current_time_millis()
    return {
        name
        for name in names
        if any(
            not record.is_expired(now)
            for record in zc.cache.async_all_by_details(name, _TYPE_SRV, _CLASS_IN)
        )
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


# -- self-test ---------------------------------------------------------------------------------


def zeroconf_works(
    interfaces: Sequence[str] = DEFAULT_INTERFACES, timeout: float = 3.0
) -> tuple[bool, str]:
    """Advertise a probe record and find it with a second zeroconf: ``(ok, what happened)``.

    For ``mesh check``. Blocking (up to about ``timeout`` s plus half a second):
    from trio, call it through ``trio.to_thread.run_sync``. The probe has a type
    of its own (``_mesh-probe._tcp``), so running registries never see it.
    """
    interfaces = _as_tuple(interfaces)
    where = ", ".join(interfaces)
    try:
        choice = interface_choice(interfaces)
        advertiser = _open_zeroconf(interfaces)
    except DiscoveryError as exc:
        return False, exc.message + (f" ({exc.hint})" if exc.hint else "")
    browser: ServiceBrowser | None = None
    try:
        try:
            browser_zc = _open_zeroconf(interfaces)
        except DiscoveryError as exc:
            return False, exc.message
        try:
            token = _new_id()
            name = f"probe-{token}.{PROBE_SERVICE_TYPE}"
            seen_at: list[float] = []
            seen = threading.Event()

            def handler(
                zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
            ) -> None:
                if name == f"probe-{token}.{PROBE_SERVICE_TYPE}" and not seen.is_set():
                    seen_at.append(time.monotonic())
                    seen.set()

            browser = ServiceBrowser(browser_zc, PROBE_SERVICE_TYPE, handlers=[handler])
            info = ServiceInfo(
                PROBE_SERVICE_TYPE,
                name,
                port=9,
                properties={"probe": token},
                server=f"probe-{token}.local.",
                host_ttl=RECORD_TTL,
                other_ttl=RECORD_TTL,
                parsed_addresses=["127.0.0.1" if choice is InterfaceChoice.All else interfaces[0]],
            )
            start = time.monotonic()
            try:
                advertiser.register_service(info, cooperating_responders=True)
            except Exception as exc:  # noqa: BLE001 - report it, do not crash `mesh check`
                return False, f"could not advertise a probe record on {where}: {exc}"
            if not seen.wait(timeout):
                return False, (
                    f"advertised a probe record on {where} but no browser saw it within "
                    f"{timeout:g} s: multicast to 224.0.0.251:5353 does not come back "
                    "(a firewall, or an interface without multicast?)"
                )
            found = browser_zc.get_service_info(
                PROBE_SERVICE_TYPE, name, timeout=int(timeout * 1000)
            )
            if found is None:
                return False, f"saw the probe record on {where} but could not resolve its SRV/TXT/A"
            if found.properties.get(b"probe") != token.encode() or found.port != 9:
                return False, f"the probe record came back changed on {where}: {found!r}"
            took = seen_at[0] - start
            return True, f"advertised and discovered a probe record on {where} in {took:.3f} s"
        finally:
            _close_zeroconf(browser_zc, browser)
    finally:
        _close_zeroconf(advertiser)
