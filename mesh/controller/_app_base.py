"""The controller's API handlers: what they share (the change signal, who is asking, the
read-only refusal, reading a request's body). ``_app.py`` lists the endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from mesh.controller._api import ApiRequest
from mesh.controller._durable import Durable
from mesh.controller._state import ControllerState, EndpointEntry
from mesh.net import ApiError

log = logging.getLogger("mesh.controller")

OPERATOR_HINT = (
    "run it on an operator's host (the controller's, where `mesh up` made MESH_HOME/operator), or make "
    "this one an operator's: `mesh operator grant NAME` there, then `mesh join … --operator GRANT` here"
)


class HandlerBase:
    """The state every group of handlers reads; ``ControllerApp.__init__`` sets it."""

    state: ControllerState
    durable: Durable
    ca: Any
    address: str
    host_address: str
    stopping: bool
    nursery: trio.Nursery | None
    on_departure: Callable[[EndpointEntry], None] | None
    newest_proxy_config: int
    _join_token: bytes
    _change: trio.Event

    async def wait_changed(self) -> None:
        await self._change.wait()

    def changed(self) -> None:
        """Wake every watch stream: the state's version moved."""
        self._change.set()
        self._change = trio.Event()

    # -- who is asking ---------------------------------------------------------

    def _require_peer(self, request: ApiRequest) -> Any:
        if request.peer is None:
            raise ApiError(401, "a client certificate is required", "proxies and the CLI present their mesh identity")
        if request.peer.trust_domain != self.state.trust_domain:
            raise ApiError(403, f"{request.peer} is not of trust domain {self.state.trust_domain}")
        return request.peer

    def _require_operator(self, request: ApiRequest) -> Any:
        """Operators only: everything that changes the mesh (config, faults, the CA's records)."""
        peer = self._require_peer(request)
        if peer.kind != "operator":
            log.warning("refused %s %s from %s: operators only", request.method, request.path, peer)
            if peer.kind == "host":
                raise ApiError(
                    403,
                    f"{peer} is a host identity: it may read the mesh, not change it (operators only)",
                    OPERATOR_HINT,
                )
            raise ApiError(403, f"{peer} is not an operator", "run the CLI on a host with MESH_HOME/operator/")
        return peer

    def _require_reader(self, request: ApiRequest) -> Any:
        """Operators and joined hosts: what the mesh looks like (status, stats, routes, tap, hosts)."""
        peer = self._require_peer(request)
        if peer.kind not in ("operator", "host"):
            log.warning("refused %s %s from %s: operators and hosts only", request.method, request.path, peer)
            raise ApiError(
                403,
                f"{peer} may not read the mesh's state: operators and joined hosts only",
                "run the CLI on a host that joined the mesh (`mesh join`), or on the controller's host",
            )
        return peer

    def _require_service(self, request: ApiRequest, service: str) -> Any:
        peer = self._require_peer(request)
        if peer.kind != "svc" or peer.name != service:
            log.warning("refused %s %s for %s from %s", request.method, request.path, service, peer)
            raise ApiError(403, f"{peer} may not act for service {service!r}")
        return peer

    def _refuse_if_read_only(self, what: str) -> None:
        reason = self.durable.read_only_reason
        if reason is not None:
            raise self._read_only_error(what, reason)

    def _read_only_error(self, what: str, reason: str) -> ApiError:
        log.warning("refused to %s: %s", what, reason)
        return ApiError(
            503,
            f"cannot {what}: {reason}. The controller serves the last state read-only; "
            f"config version {self.state.config_version} stays in force",
            f"`mesh check` shows the store ({self.durable.location}); try again once it takes writes",
        )


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "expected a JSON object")
    return value


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"expected a non-empty string at {key!r}")
    return value
