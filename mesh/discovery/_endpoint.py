"""Endpoints, addresses and service names: the vocabulary every discovery backend shares."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.config import APP_PROTOCOLS, DEFAULT_PROTOCOL
from mesh.errors import DiscoveryError

# A DNS label (RFC 1123), lowercase: a service name is also a host name (`reviews.mesh`).
SERVICE_NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
SERVICE_NAME_RULE = (
    "a service name (lowercase letters, digits and '-'; 1 to 63 characters; starting and ending with a letter or digit)"
)
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")
ADDRESS_FORMAT = "host:port, e.g. 127.0.0.1:8443, localhost:8443 or [::1]:8443"


def is_valid_service_name(name: str) -> bool:
    return SERVICE_NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service: where to connect and who must answer.

    ``identity`` is the SPIFFE id the peer must present; None means the default
    ``spiffe://<trust_domain>/svc/<service>`` (see ``expected_identity``).
    ``labels`` are sorted ``(key, value)`` pairs, so equal endpoints compare equal;
    a mapping is accepted too and turned into pairs.
    """

    service: str
    host: str
    port: int
    identity: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    admin_port: int | None = None
    protocol: str = DEFAULT_PROTOCOL  # what the service speaks (mesh.config.APP_PROTOCOLS)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("an endpoint needs a host")
        _check_port("port", self.port)
        if self.admin_port is not None:
            _check_port("admin_port", self.admin_port)
        if self.protocol not in APP_PROTOCOLS:
            raise ValueError(f"endpoint protocol must be one of {', '.join(APP_PROTOCOLS)}, got {self.protocol!r}")
        labels: Mapping[str, str] | Iterable[tuple[str, str]] = self.labels
        object.__setattr__(self, "labels", tuple(sorted(dict(labels).items())))

    @property
    def address(self) -> str:
        """``host:port``, with an IPv6 host in brackets."""
        return format_address(self.host, self.port)

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def expected_identity(self, trust_domain: str) -> str:
        """The SPIFFE id this endpoint must present: its own, or the service's default."""
        return self.identity or f"spiffe://{trust_domain}/svc/{self.service}"


def _check_port(what: str, port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"endpoint {what} must be an integer from 1 to 65535, got {port!r}")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: only this host reaches it."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AddressProblem(ValueError):
    """Why a string is not ``host:port``; callers add where the string came from."""


def split_address(text: str) -> tuple[str, int]:
    """``host:port`` → ``(host, port)``; raises AddressProblem with the reason."""
    if not isinstance(text, str):
        raise AddressProblem(f"expected a string, found {type(text).__name__}")
    if not text.strip():
        raise AddressProblem("the address is empty")
    if text != text.strip():
        raise AddressProblem("blanks around the address")
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise AddressProblem("'[' without ']'")
        host, rest = text[1:closing], text[closing + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressProblem(f"{host!r} in brackets is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise AddressProblem("missing port after ']'")
        port_text = rest[1:]
    else:
        if "://" in text:
            raise AddressProblem("a URL is not an address; drop the scheme")
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise AddressProblem("missing port")
        if ":" in host:
            raise AddressProblem("an IPv6 address needs brackets, e.g. [::1]:8443")
        if not host:
            raise AddressProblem("missing host")
        _check_host(host)
    if not port_text:
        raise AddressProblem("missing port")
    if not port_text.isascii() or not port_text.isdigit():
        raise AddressProblem(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise AddressProblem(f"port {port} is out of range 1-65535")
    return host, port


def _check_host(host: str) -> None:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise AddressProblem(f"{host!r} is not an IPv4 address") from None
        return
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        raise AddressProblem(f"{host!r} is not a host name or IP address")


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:80"``, ``"[::1]:80"``, ``"localhost:80"`` → ``(host, port)``.

    The IPv6 host comes back without brackets. Raises DiscoveryError saying what
    is wrong with the address.
    """
    try:
        return split_address(text)
    except AddressProblem as exc:
        raise DiscoveryError(f"invalid address {text!r}: {exc}", hint=f"write it as {ADDRESS_FORMAT}") from None


def endpoint_to_dict(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint as the controller's registrations and snapshots carry it (JSON)."""
    return {
        "service": endpoint.service,
        "address": endpoint.address,
        "identity": endpoint.identity,
        "labels": dict(endpoint.labels),
        "admin_port": endpoint.admin_port,
        "protocol": endpoint.protocol,
    }


def endpoint_from_dict(data: dict[str, Any]) -> Endpoint:
    """The inverse of ``endpoint_to_dict``; KeyError, ValueError or DiscoveryError when malformed."""
    host, port = parse_address(str(data["address"]))
    labels = data.get("labels") or {}
    return Endpoint(
        service=str(data["service"]),
        host=host,
        port=port,
        identity=data.get("identity"),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        admin_port=data.get("admin_port"),
        protocol=str(data.get("protocol") or DEFAULT_PROTOCOL),
    )
