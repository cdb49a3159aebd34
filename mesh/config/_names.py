"""Rules for the names that appear in a config: services, trust domains, labels, headers."""

from __future__ import annotations

import ipaddress
import re

SERVICE_NAME_RULE = "lowercase letters, digits and '-', 1–63 characters, starting and ending with a letter or digit"
TRUST_DOMAIN_RULE = "lowercase letters, digits, '.', '-' and '_', without a scheme or '/'"
LABEL_RULE = "letters, digits, '.', '-' and '_', 1–63 characters, starting and ending with a letter or digit"
ENV_NAME_RULE = "letters, digits and '_', not starting with a digit"

# What a service speaks (`[[service]] protocol`, `--protocol`, discovery records). Declared HTTP
# is never relayed as opaque bytes; "auto" detects, and only "tcp" and "auto" may become opaque.
APP_PROTOCOLS = ("auto", "http", "http2", "grpc", "tcp")
HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})
DEFAULT_PROTOCOL = "auto"

# A DNS label: the name also appears in SPIFFE ids, zeroconf records and `Host:` headers.
_SERVICE_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# SPIFFE: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SPIFFE_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# Labels travel in a zeroconf TXT record as "k=v,k=v": no '=', ',' or spaces may appear.
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
# RFC 9110 token; a method is written in upper case ("GET", "POST").
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def is_valid_service_name(name: object) -> bool:
    """True for names like ``reviews`` or ``ratings-v2`` (see ``SERVICE_NAME_RULE``)."""
    return isinstance(name, str) and _SERVICE_NAME.fullmatch(name) is not None


def is_valid_trust_domain(domain: object) -> bool:
    """True for SPIFFE trust domains like ``mesh.local`` (see ``TRUST_DOMAIN_RULE``)."""
    return isinstance(domain, str) and _TRUST_DOMAIN.fullmatch(domain) is not None


def is_valid_spiffe_id(text: object) -> bool:
    """True for workload ids like ``spiffe://mesh.local/svc/reviews`` (a path is required)."""
    if not isinstance(text, str) or not text.startswith("spiffe://"):
        return False
    domain, slash, path = text[len("spiffe://") :].partition("/")
    if not is_valid_trust_domain(domain) or not slash:
        return False
    segments = path.split("/")
    return all(_SPIFFE_PATH_SEGMENT.fullmatch(segment) and segment not in (".", "..") for segment in segments)


def is_valid_label(text: str) -> bool:
    """Label keys and values follow the same rule (``LABEL_RULE``)."""
    return _LABEL.fullmatch(text) is not None


def is_valid_header_name(name: str) -> bool:
    return _HEADER_NAME.fullmatch(name) is not None


def is_valid_header_value(value: str) -> bool:
    # CR and LF would split the header; NUL is refused by every HTTP parser.
    return not any(c in value for c in "\r\n\0")


def is_valid_method(method: str) -> bool:
    return _METHOD.fullmatch(method) is not None


def is_valid_env_name(name: str) -> bool:
    return _ENV_NAME.fullmatch(name) is not None


def is_valid_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


GATEWAY_HOST_RULE = 'a host name like "shop.example", "*.shop.example" (one label or more), or "*" (any host)'


def is_valid_gateway_host(host: str) -> bool:
    """A host a gateway route matches (``GATEWAY_HOST_RULE``): a name, a ``*.`` wildcard, or ``*``."""
    if host == "*":
        return True
    name = host[2:] if host.startswith("*.") else host
    return len(name) <= 253 and _HOSTNAME.fullmatch(name) is not None


def is_valid_cidr(text: str) -> bool:
    """``10.0.0.0/8``, ``2001:db8::/32`` or a single address (host bits must be zero)."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return True


def split_host_port(address: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9080"`` → ``("127.0.0.1", 9080)``, ``"[::1]:80"`` → ``("::1", 80)``, else None.

    Port 0 is allowed: the listener then takes an ephemeral port (handy in tests).
    """
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":") or not _is_ipv6(host):
            return None
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon or not host:
            return None
        if not (is_valid_ip_address(host) and ":" not in host) and not _HOSTNAME.fullmatch(host):
            return None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        return None
    port = int(port_text)
    if port > 65535:
        return None
    return host, port


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False
