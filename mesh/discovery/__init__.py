"""Service discovery: which endpoints a service has, and who they must be.

Every backend (static file, zeroconf, controller) is a ``Registry``; they share
``MemoryRegistry`` for the table itself. Parsing (addresses, the endpoints file)
is pure; only change notification, file polling and zeroconf use trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.discovery._composite import CompositeRegistry
from mesh.discovery._controllers import ControllerAddress, controller_from_home, controllers_from_home
from mesh.discovery._endpoint import (
    ADDRESS_FORMAT,
    SERVICE_NAME_PATTERN,
    Endpoint,
    endpoint_from_dict,
    endpoint_to_dict,
    format_address,
    is_loopback,
    is_valid_service_name,
    parse_address,
)
from mesh.discovery._registry import MemoryRegistry, Registry
from mesh.discovery._static_file import parse_endpoints_file, parse_endpoints_text
from mesh.discovery._static_registry import StaticFileRegistry

if TYPE_CHECKING:
    from mesh.discovery._zeroconf import (
        CONTROLLER_SERVICE_TYPE,
        MESH_SERVICE_TYPE,
        RECORD_TTL,
        ControllerRecord,
        MeshServiceRecord,
        ZeroconfAdvertiser,
        ZeroconfRegistry,
        find_controller,
        new_instance_name,
        zeroconf_works,
    )

# zeroconf (and the asyncio it runs on, ~5 MB) loads on first use of one of these:
# a proxy started with --no-zeroconf never needs it.
_ZEROCONF_NAMES = frozenset({
    "CONTROLLER_SERVICE_TYPE",
    "MESH_SERVICE_TYPE",
    "RECORD_TTL",
    "ControllerRecord",
    "MeshServiceRecord",
    "ZeroconfAdvertiser",
    "ZeroconfRegistry",
    "find_controller",
    "new_instance_name",
    "zeroconf_works",
})


def __getattr__(name: str) -> Any:
    if name in _ZEROCONF_NAMES:
        from mesh.discovery import _zeroconf

        return getattr(_zeroconf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ControllerAddress",
    "controller_from_home",
    "controllers_from_home",
    "ADDRESS_FORMAT",
    "CONTROLLER_SERVICE_TYPE",
    "MESH_SERVICE_TYPE",
    "RECORD_TTL",
    "SERVICE_NAME_PATTERN",
    "CompositeRegistry",
    "ControllerRecord",
    "Endpoint",
    "endpoint_from_dict",
    "endpoint_to_dict",
    "MemoryRegistry",
    "MeshServiceRecord",
    "Registry",
    "StaticFileRegistry",
    "ZeroconfAdvertiser",
    "ZeroconfRegistry",
    "find_controller",
    "format_address",
    "is_loopback",
    "is_valid_service_name",
    "new_instance_name",
    "parse_address",
    "parse_endpoints_file",
    "parse_endpoints_text",
    "zeroconf_works",
]
