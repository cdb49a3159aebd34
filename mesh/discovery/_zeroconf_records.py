"""Discovery over zeroconf: the records, and how a peer's record is read (pure).

What a proxy and the controller advertise (``MeshServiceRecord``, ``ControllerRecord``),
their TXT entries, and the parsers that turn a peer's SRV/TXT/A into a record or say why
it is ignored. No zeroconf, no trio: ``_zeroconf.py`` describes the records and the
rest of zeroconf discovery.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mesh import __version__
from mesh.config import APP_PROTOCOLS, DEFAULT_PROTOCOL
from mesh.discovery._endpoint import SERVICE_NAME_RULE, Endpoint, is_valid_service_name
from mesh.discovery._static_file import _LABEL_KEY, _LABEL_VALUE, _SPIFFE_ID

MESH_SERVICE_TYPE = "_mesh._tcp.local."
CONTROLLER_SERVICE_TYPE = "_mesh-ctl._tcp.local."
# Seconds; for every record (PTR, SRV, TXT, A), sent in each announcement.
RECORD_TTL = 10

_TXT_MAX = 255  # one TXT string, "key=value", in bytes (RFC 6763 6.1)
_INSTANCE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


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
        return Endpoint(self.service, self.host, self.port, self.identity, self.labels, self.admin_port, self.protocol)


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
        raise ValueError(f"identity must be a SPIFFE id like spiffe://mesh.local/svc/web, got {identity!r}")


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
    if instance is not None and (not isinstance(instance, str) or not _INSTANCE.fullmatch(instance)):
        raise ValueError(
            "instance must be 1 to 63 letters, digits and '-', "
            f"starting and ending with a letter or digit, got {instance!r}"
        )


def _check_txt(txt: Mapping[str, str]) -> None:
    for key, value in txt.items():
        size = len(key.encode()) + 1 + len(value.encode())
        if size > _TXT_MAX:
            raise ValueError(f"TXT entry {key!r} takes {size} bytes; a TXT string holds at most {_TXT_MAX}")


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
