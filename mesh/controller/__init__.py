"""The control plane: CA signing, config store, registry view, watch streams (DESIGN.md section 6).

``_state`` is pure; ``_app`` decides who may do what; ``_api`` is the HTTP/2
transport over mTLS; ``_server`` runs it all in one trio process.
"""

from __future__ import annotations

from mesh.controller import _daemon as daemon
from mesh.controller._api import (
    ApiClient,
    ApiError,
    ApiRequest,
    ApiResponse,
    api_client_context,
    bootstrap_client_context,
    serve_api,
    server_context_optional_client,
)
from mesh.controller._app import CONTROLLER_SERVICE, ControllerApp
from mesh.controller._join import join_mesh
from mesh.controller._server import ControllerSettings, run_controller
from mesh.controller._state import ControllerState, EndpointEntry, endpoint_from_dict, endpoint_to_dict

__all__ = [
    "CONTROLLER_SERVICE",
    "ApiClient",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "ControllerApp",
    "ControllerSettings",
    "ControllerState",
    "EndpointEntry",
    "api_client_context",
    "bootstrap_client_context",
    "daemon",
    "endpoint_from_dict",
    "endpoint_to_dict",
    "join_mesh",
    "run_controller",
    "serve_api",
    "server_context_optional_client",
]
