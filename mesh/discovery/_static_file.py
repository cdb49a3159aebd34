"""The static endpoints file (TOML): parsing and validation, no trio.

::

    [[endpoint]]
    service = "web"
    address = "127.0.0.1:8443"                  # IPv6: "[::1]:8443"
    labels = { version = "v1" }                 # optional
    identity = "spiffe://mesh.local/svc/web"    # optional
    admin_port = 4191                           # optional
    protocol = "http"                           # optional: auto, http, http2, grpc or tcp

Every problem of a file is reported at once, one line each:
``FILE: endpoint[2].address: expected host:port, found "::1:8443" (why)``.
Indexes count from 0, like the config module's key paths.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from mesh.config import APP_PROTOCOLS, DEFAULT_PROTOCOL
from mesh.discovery._endpoint import (
    ADDRESS_FORMAT,
    SERVICE_NAME_RULE,
    AddressProblem,
    Endpoint,
    is_valid_service_name,
    split_address,
)
from mesh.errors import DiscoveryError

FORMAT_HINT = "the endpoints file format is described in docs/discovery.md"

_ENDPOINT_KEYS = ("address", "admin_port", "identity", "labels", "protocol", "service")
# SPIFFE ids: spiffe://<trust domain>/<path>, path segments of letters, digits, '.', '-', '_'.
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")
# Label keys and values follow the Kubernetes rules, so that a label survives a trip
# through a zeroconf TXT record, a metric label or a header unchanged.
_LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
_LABEL_KEY_RULE = (
    "a label name (letters, digits, '-', '_' and '.'; 1 to 63 characters; starting and ending with a letter or digit)"
)
_LABEL_VALUE_RULE = (
    "a label value string (letters, digits, '-', '_' and '.'; at most 63 characters; "
    "starting and ending with a letter or digit)"
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MISSING = object()

_Problem = Callable[[str, str, str], None]  # (key path, expected, found)


def parse_endpoints_file(path: str | os.PathLike[str]) -> dict[str, tuple[Endpoint, ...]]:
    """Read and validate an endpoints file: service → its endpoints, in file order.

    Raises DiscoveryError naming the file, and for each problem the key path, what
    was expected and what was found, one line each.
    """
    return parse_endpoints_bytes(read_endpoints_file(path), os.fspath(path))


def read_endpoints_file(path: str | os.PathLike[str]) -> bytes:
    source = os.fspath(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DiscoveryError(f"{source}: endpoints file not found", hint=f"create it; {FORMAT_HINT}") from None
    except IsADirectoryError:
        raise DiscoveryError(f"{source}: is a directory, expected an endpoints file") from None
    except PermissionError:
        raise DiscoveryError(
            f"{source}: permission denied", hint="make the file readable by the user running mesh"
        ) from None
    except OSError as exc:
        raise DiscoveryError(f"{source}: cannot read: {exc.strerror or exc}") from None


def parse_endpoints_bytes(data: bytes, source: str) -> dict[str, tuple[Endpoint, ...]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DiscoveryError(f"{source}: expected UTF-8 text, found a byte that is not (offset {exc.start})") from None
    return parse_endpoints_text(text, source)


def parse_endpoints_text(text: str, source: str = "<endpoints>") -> dict[str, tuple[Endpoint, ...]]:
    """Like ``parse_endpoints_file`` for TOML text; ``source`` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DiscoveryError(f"{source}: invalid TOML: {exc}", hint=FORMAT_HINT) from None

    problems: list[str] = []

    def problem(key_path: str, expected: str, found: str) -> None:
        problems.append(f"{source}: {key_path}: expected {expected}, found {found}")

    for key in document:
        if key != "endpoint":
            problem(_key(key), "only [[endpoint]] tables", f"the unknown key {_key(key)}")
    entries = document.get("endpoint", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        problem("endpoint", "[[endpoint]] tables", _describe(entries))
        entries = []

    endpoints: list[Endpoint] = []
    first_seen: dict[tuple[str, str, int], int] = {}
    for index, entry in enumerate(entries):
        where = f"endpoint[{index}]"
        before = len(problems)
        for key in entry:
            if key not in _ENDPOINT_KEYS:
                problem(
                    f"{where}.{_key(key)}",
                    f"one of the keys {', '.join(_ENDPOINT_KEYS)}",
                    f"the unknown key {_key(key)}",
                )

        service = entry.get("service", _MISSING)
        if not isinstance(service, str) or not is_valid_service_name(service):
            problem(f"{where}.service", SERVICE_NAME_RULE, _describe(service))

        address = entry.get("address", _MISSING)
        host, port = "", 0
        if not isinstance(address, str):
            problem(f"{where}.address", ADDRESS_FORMAT, _describe(address))
        else:
            try:
                host, port = split_address(address)
            except AddressProblem as exc:
                problem(f"{where}.address", "host:port", f"{_describe(address)} ({exc})")

        labels = _labels(entry.get("labels", {}), f"{where}.labels", problem)

        identity = entry.get("identity")
        if identity is not None and (not isinstance(identity, str) or not _SPIFFE_ID.fullmatch(identity)):
            problem(
                f"{where}.identity",
                "a SPIFFE id like spiffe://mesh.local/svc/web",
                _describe(identity),
            )

        admin_port = entry.get("admin_port")
        if admin_port is not None and (
            isinstance(admin_port, bool) or not isinstance(admin_port, int) or not 1 <= admin_port <= 65535
        ):
            problem(f"{where}.admin_port", "a port number from 1 to 65535", _describe(admin_port))

        protocol = entry.get("protocol", DEFAULT_PROTOCOL)
        if protocol not in APP_PROTOCOLS:
            problem(f"{where}.protocol", f"one of {', '.join(APP_PROTOCOLS)}", _describe(protocol))

        if len(problems) > before:
            continue
        identity_key = (service, _canonical_host(host), port)
        if identity_key in first_seen:
            first = f"endpoint[{first_seen[identity_key]}]"
            problem(
                f"{where}.address",
                "each address once per service",
                f"{_describe(address)} again for {service} (first at {first})",
            )
            continue
        first_seen[identity_key] = index
        endpoints.append(Endpoint(service, host, port, identity, labels, admin_port, protocol))

    if problems:
        raise DiscoveryError("\n".join(problems), hint=FORMAT_HINT)
    table: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        table.setdefault(endpoint.service, []).append(endpoint)
    return {service: tuple(members) for service, members in table.items()}


def _labels(value: Any, where: str, problem: _Problem) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        problem(where, 'a table of strings, e.g. { version = "v1" }', _describe(value))
        return ()
    pairs: list[tuple[str, str]] = []
    for key, label_value in value.items():
        if not _LABEL_KEY.fullmatch(key):
            problem(f"{where}.{_key(key)}", _LABEL_KEY_RULE, _describe(key))
        elif not isinstance(label_value, str) or not _LABEL_VALUE.fullmatch(label_value):
            problem(f"{where}.{_key(key)}", _LABEL_VALUE_RULE, _describe(label_value))
        else:
            pairs.append((key, label_value))
    return tuple(sorted(pairs))


def _canonical_host(host: str) -> str:
    # "[::1]" and "[0::1]" are one address; host names compare without case.
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()


def _key(key: str) -> str:
    """A key as TOML writes it in a dotted path: bare when it can be, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _describe(value: object) -> str:
    """What was found, in TOML's words."""
    if value is _MISSING:
        return "nothing (the key is missing)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime, date, time)):
        return f"the date/time {value.isoformat()}"
    return repr(value)
