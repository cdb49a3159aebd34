"""`mesh status --hosts`: every host of the mesh, from what the controller knows (pure).

A host is known by its address (the one other hosts dial for it), from four sources:

- the controllers of the mesh (their announcements in the store): role ``controller``;
- the hosts that joined (`mesh join` records them in the store): role ``joined``, and
  ``operator`` when it holds an operator identity (`mesh join --operator`);
- the hosts the registrations came from (as the controller saw each connection);
- zeroconf records the controller browsed (a proxy without a controller: ``zeroconf``).

Version, clock skew and last seen come from the latest heartbeat of a proxy on the host
(every 10 s), kept in memory by the controller that received it: another controller of
the mesh has its own. A host none of whose proxies talk to this controller shows what
its join recorded.
"""

from __future__ import annotations

from typing import Any

from mesh.discovery import is_loopback, parse_address
from mesh.errors import MeshError


def _host_part(address: str) -> str:
    try:
        return parse_address(address)[0]
    except MeshError:
        return address


def hosts_view(state: Any, this_controller: str, this_host: str, version: str, now: float) -> list[dict[str, Any]]:
    """One row per host, this controller's first, then by address."""
    rows: dict[str, dict[str, Any]] = {}

    def row(address: str) -> dict[str, Any]:
        if address not in rows:
            rows[address] = {
                "address": address,
                "name": None,
                "roles": [],
                "version": None,
                "skew_seconds": None,
                "services": [],
                "gateways": [],
                "last_seen": None,
                "this": address == this_host,
            }
        return rows[address]

    def role(entry: dict[str, Any], name: str) -> None:
        if name not in entry["roles"]:
            entry["roles"].append(name)

    def seen(entry: dict[str, Any], when: float | None) -> None:
        if when is not None and (entry["last_seen"] is None or when > entry["last_seen"]):
            entry["last_seen"] = when

    here = row(this_host)
    role(here, "controller")
    here.update(version=version, skew_seconds=0.0)
    seen(here, now)
    for address, record in sorted(state.controllers.items()):
        host = _host_part(address)
        if address == this_controller or is_loopback(host):
            continue
        entry = row(host)
        role(entry, "controller")
        entry["version"] = record.get("version") or entry["version"]
        seen(entry, now)  # its lease in the store is alive: it announced itself within seconds
    for address, record in sorted(state.joined_hosts.items()):
        entry = row(address)
        role(entry, "joined")
        if record.get("operator"):
            role(entry, "operator")
        entry["name"] = record.get("name") or entry["name"]
        entry["version"] = entry["version"] or record.get("version") or None
        seen(entry, record.get("joined_at"))
    for address, contact in state.contacts.items():
        entry = row(address)
        if contact.version:
            entry["version"] = contact.version
        if contact.skew_seconds is not None and address != this_host:
            entry["skew_seconds"] = contact.skew_seconds
        seen(entry, contact.last_seen)
    for e in state.entries():
        if e.source == "registration":
            address = e.host or _host_part(e.endpoint.host)
        else:
            address = this_host if is_loopback(e.endpoint.host) else e.endpoint.host
        entry = row(address)
        if e.source == "zeroconf" and not entry["roles"]:
            role(entry, "zeroconf")
        names = entry["gateways"] if e.role == "gateway" else entry["services"]
        if e.endpoint.service not in names:
            names.append(e.endpoint.service)
    for entry in rows.values():
        entry["services"].sort()
        entry["gateways"].sort()
        if not entry["roles"]:
            entry["roles"].append("proxies")  # its proxies registered, the host never joined (a token given by hand)
    return sorted(rows.values(), key=lambda r: (not r["this"], r["address"]))
