"""The control plane: CA signing, config store, registry view, watch streams (DESIGN.md section 6).

``_state`` is pure; ``_app`` (with its handlers in ``_app_*``) decides who may do what;
``_api`` serves the JSON API over HTTP/2 and mTLS (its client, and what both ends share,
are in ``mesh.net``); ``_server`` runs it all in one trio process.
"""

from __future__ import annotations

from mesh.controller import _daemon as daemon
from mesh.controller._api import ApiRequest, serve_api, server_context_optional_client
from mesh.controller._app import ControllerApp
from mesh.controller._join import join_mesh
from mesh.controller._server import ControllerSettings, home_lock, run_controller
from mesh.controller._state import ControllerState, EndpointEntry
from mesh.controller._store_embedded import backup as backup_store, restore as restore_store
from mesh.identity import CONTROLLER_SERVICE

__all__ = [
    "CONTROLLER_SERVICE",
    "ApiRequest",
    "ControllerApp",
    "ControllerSettings",
    "ControllerState",
    "backup_store",
    "home_lock",
    "restore_store",
    "EndpointEntry",
    "daemon",
    "join_mesh",
    "run_controller",
    "serve_api",
    "server_context_optional_client",
]
