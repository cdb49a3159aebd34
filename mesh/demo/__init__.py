"""The bundled demo: Istio's classic "bookinfo" sample, as four small stdlib HTTP apps.

::

    gateway 127.0.0.1:9080 ─▶ productpage ─┬─▶ details
                                           └─▶ reviews v1 (no stars)
                                               reviews v2 ─▶ ratings (black stars)
                                               reviews v3 ─▶ ratings (red stars)

Each app runs as ``mesh demo SERVICE [--version vN]`` behind its own sidecar
and is told, through its environment (see ``mesh inject``): ``PORT`` to listen on
(127.0.0.1), ``HTTP_PROXY`` (its sidecar's outbound listener) to call other services
as ``http://<service>/path``, ``MESH_SERVICE``, ``MESH_LABEL_*`` and optionally
``MESH_UPSTREAM_<NAME>_URL``. ``mesh demo traffic`` sends gentle load. (``python -m mesh.demo``
works too, but only where mesh is an installed package: the single-file build has no ``-m``.)

This module is a pure description for the orchestrator (``mesh up --demo``), cheap
to import: nothing here starts a process or imports an app.

- ``DEMO_SERVICES``: the processes to run, one dict per instance. Keys are exactly the
  ``[[service]]`` keys of mesh.toml, so ``ServiceConfig(**entry)`` builds each one::

      {"name": "reviews",                      # service name (three entries share it)
       "command": [*mesh_command(), "demo", "reviews", "--version", "v2"],
       "labels": {"version": "v2"},
       "upstreams": ["ratings"],               # services it calls
       "health": "/health"}                    # GET → 200 once it serves

  ``reviews`` appears three times (versions v1, v2, v3): one service, three
  instances told apart by their ``version`` label. ``instance_name(entry)`` gives
  each a unique name for logs and pid files (``reviews-v2``).
- ``DEMO_GATEWAY``: the ``[[gateway]]`` that lets a browser in.
- ``demo_config_toml()``: the rest of the demo's mesh.toml.
"""

from __future__ import annotations

from typing import Any

from mesh.self_command import mesh_command

__all__ = ["DEMO_GATEWAY", "DEMO_SERVICES", "demo_config_toml", "instance_name"]


def _service(name: str, version: str, upstreams: list[str], *extra: str) -> dict[str, Any]:
    return {
        "name": name,
        "command": [*mesh_command(), "demo", name, *extra],
        "labels": {"version": version},
        "upstreams": upstreams,
        "health": "/health",
    }


DEMO_SERVICES: list[dict[str, Any]] = [
    _service("productpage", "v1", ["details", "reviews"]),
    _service("details", "v1", []),
    _service("reviews", "v1", [], "--version", "v1"),
    _service("reviews", "v2", ["ratings"], "--version", "v2"),
    _service("reviews", "v3", ["ratings"], "--version", "v3"),
    _service("ratings", "v1", []),
]

DEMO_GATEWAY: dict[str, Any] = {"listen": "127.0.0.1:9080", "to": "productpage"}


def instance_name(entry: dict[str, Any]) -> str:
    """A unique name per DEMO_SERVICES entry: ``reviews-v2`` where a service has versions."""
    name = str(entry["name"])
    if sum(1 for other in DEMO_SERVICES if other["name"] == name) > 1:
        return f"{name}-{entry['labels']['version']}"
    return name


def demo_config_toml() -> str:
    """The demo's mesh.toml, WITHOUT ``[[service]]`` tables.

    mesh.toml needs unique service names, but the demo runs three ``reviews``
    instances that differ in command and labels (v1, v2, v3), which one
    ``[[service]]`` entry cannot express (``replicas`` copies one command). So the
    orchestrator starts the processes from ``DEMO_SERVICES`` and applies this text
    for everything else: mesh settings, the gateway on 127.0.0.1:9080, and, commented
    out, the routes of the bookinfo tutorials to try (with no route, requests to
    ``reviews`` are balanced over all three versions: reload the page to see them).
    """
    return f"""\
# mesh demo (bookinfo). The processes come from mesh.demo.DEMO_SERVICES:
# productpage, details, reviews v1/v2/v3 (one service, label version), ratings.

[mesh]
trust_domain = "mesh.local"
authz_default = "allow"

[[gateway]]
listen = "{DEMO_GATEWAY["listen"]}"
to = "{DEMO_GATEWAY["to"]}"

# Try these (uncomment, then `mesh apply`):
#
# Jason sees v2 (black stars), everyone else v1 (no stars):
# [[route]]
# service = "reviews"
# match = {{ headers = {{ "end-user" = "jason" }} }}
# split = [ {{ labels = {{ version = "v2" }}, weight = 100 }} ]
#
# [[route]]
# service = "reviews"
# split = [ {{ labels = {{ version = "v1" }}, weight = 100 }} ]
#
# Canary: 90% v1, 10% v3 (red stars):
# [[route]]
# service = "reviews"
# split = [ {{ labels = {{ version = "v1" }}, weight = 90 }}, {{ labels = {{ version = "v3" }}, weight = 10 }} ]
#
# A slow ratings service (v3 gives up after 2.5 s, productpage after 3 s):
# [[route]]
# service = "ratings"
# fault = {{ delay = "4s", delay_percent = 100 }}
#
# Only reviews may call ratings:
# [[policy]]
# service = "ratings"
# allow = ["reviews"]
"""
