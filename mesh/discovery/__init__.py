"""Service discovery: which endpoints a service has, and who they must be.

Every backend (static file, zeroconf, controller) is a ``Registry``; they share
``MemoryRegistry`` for the table itself. Parsing (addresses, the endpoints file)
is pure; only change notification and file polling use trio.
"""

from __future__ import annotations

from mesh.discovery._endpoint import (
    ADDRESS_FORMAT,
    SERVICE_NAME_PATTERN,
    Endpoint,
    format_address,
    is_valid_service_name,
    parse_address,
)
from mesh.discovery._registry import MemoryRegistry, Registry
from mesh.discovery._static_file import parse_endpoints_file, parse_endpoints_text
from mesh.discovery._static_registry import StaticFileRegistry

__all__ = [
    "ADDRESS_FORMAT",
    "SERVICE_NAME_PATTERN",
    "Endpoint",
    "MemoryRegistry",
    "Registry",
    "StaticFileRegistry",
    "format_address",
    "is_valid_service_name",
    "parse_address",
    "parse_endpoints_file",
    "parse_endpoints_text",
]
