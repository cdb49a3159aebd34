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
    from mesh.discovery._zeroconf import ZeroconfRegistry, find_controller
    from mesh.discovery._zeroconf_advertise import ZeroconfAdvertiser, new_instance_name
    from mesh.discovery._zeroconf_probe import zeroconf_works
    from mesh.discovery._zeroconf_records import (
        CONTROLLER_SERVICE_TYPE,
        MESH_SERVICE_TYPE,
        RECORD_TTL,
        ControllerRecord,
        MeshServiceRecord,
    )

# zeroconf (and the asyncio it runs on, ~5 MB) loads on first use of one of these:
# a proxy started with --no-zeroconf never needs it. Each name → its module.
_ZEROCONF_NAMES = {
    "CONTROLLER_SERVICE_TYPE": "_zeroconf_records",
    "MESH_SERVICE_TYPE": "_zeroconf_records",
    "RECORD_TTL": "_zeroconf_records",
    "ControllerRecord": "_zeroconf_records",
    "MeshServiceRecord": "_zeroconf_records",
    "ZeroconfAdvertiser": "_zeroconf_advertise",
    "ZeroconfRegistry": "_zeroconf",
    "find_controller": "_zeroconf",
    "new_instance_name": "_zeroconf_advertise",
    "zeroconf_works": "_zeroconf_probe",
}


def __getattr__(name: str) -> Any:
    if name in _ZEROCONF_NAMES:
        import importlib

        return getattr(importlib.import_module(f"mesh.discovery.{_ZEROCONF_NAMES[name]}"), name)
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
