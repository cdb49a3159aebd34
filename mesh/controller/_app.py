"""The controller's API: who may do what, and what each endpoint answers.

    POST /v1/certificates     sign a CSR (join token, or the caller's own current certificate); a
                              service's by default, a host's (`mesh join`) or an operator's (with a grant)
    GET  /v1/certificates     the certificates signed and not yet expired (operators)
    POST /v1/operator-grants  a one-time grant of an operator identity for another host (operators)
    GET  /v1/bundle           trust anchors (public; `mesh join` pins them by fingerprint)
    GET  /v1/health           version and clock (any caller with a mesh certificate)
    GET  /v1/config           the config in force, with its version
    POST /v1/config           apply a whole config (operators)
    GET  /v1/config/history   the last versions of the config (readers)
    POST /v1/config/rollback  put an earlier version in force again, as a new version (operators)
    GET  /v1/store            the store's health: members, leader, quorum, writable (readers)
    GET  /v1/watch            a stream of snapshots for one proxy (NDJSON)
    POST /v1/ack              a proxy applied a snapshot version
    POST /v1/registrations    register / heartbeat an endpoint (hosts without multicast)
    DELETE /v1/registrations  withdraw it
    GET  /v1/status           the whole picture for `mesh status` (readers)
    GET  /v1/hosts            every host of the mesh: role, version, clock skew, services, last seen (readers)
    GET  /v1/tap              every proxy's /tap merged into one NDJSON stream (readers; query values: operators)
    GET  /v1/stats            golden metrics per service, version and edge, from every proxy (readers)
    GET  /v1/routes           the routes of a service with their metrics (readers)
    POST/DELETE /v1/faults    `mesh fault` (operators)

Readers are operators (``spiffe://TD/operator/NAME``) and joined hosts
(``spiffe://TD/host/NAME``): a host may look, never change (docs/security.md).

The handlers are grouped by concern: what they share in ``_app_base.py``, certificates in
``_app_certificates.py``, the config in ``_app_config.py``, what proxies call in
``_app_proxies.py``; the rest (faults, status, the fan-in) here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio

from mesh import __version__
from mesh.controller._api import ApiRequest
from mesh.controller._app_base import _object, _string, log
from mesh.controller._app_certificates import CertificateHandlers
from mesh.controller._app_config import ConfigHandlers
from mesh.controller._app_proxies import ProxyHandlers
from mesh.controller._durable import Durable
from mesh.controller._state import ControllerState, EndpointEntry
from mesh.discovery import endpoint_to_dict
from mesh.errors import StoreError
from mesh.net import ApiError, ApiResponse


class ControllerApp(CertificateHandlers, ConfigHandlers, ProxyHandlers):
    def __init__(
        self,
        state: ControllerState,
        ca: Any,
        join_token: str,
        address: str,
        durable: Durable,
        host_address: str | None = None,
    ) -> None:
        self.state = state
        self.durable = durable
        durable.on_change = self.changed
        self.ca = ca
        self._join_token = join_token.encode()
        self.address = address
        # This controller's host, as `mesh status --hosts` names it (its proxies connect from loopback).
        self.host_address = host_address or address.rpartition(":")[0].strip("[]")
        self.started = time.time()
        self.stopping = False  # set before the watches end with the controller: they are no departures
        self.nursery: trio.Nursery | None = None  # for work that outlives a request (withdrawing the departed)
        self.on_departure: Callable[[EndpointEntry], None] | None = None  # zeroconf: say goodbye for it
        self._change = trio.Event()
        self.newest_proxy_config = 0  # the newest config version a watching proxy said it holds
        self.units: Callable[[], list[dict[str, Any]]] | None = None  # processes `mesh up` keeps running
        self._routes: dict[tuple[str, str], Callable[[ApiRequest], Awaitable[Any]]] = {
            ("POST", "/v1/certificates"): self.sign,
            ("POST", "/v1/operator-grants"): self.grant_operator,
            ("GET", "/v1/hosts"): self.hosts,
            ("GET", "/v1/bundle"): self.bundle,
            ("GET", "/v1/health"): self.health,
            ("GET", "/v1/config"): self.get_config,
            ("POST", "/v1/config"): self.apply_config,
            ("GET", "/v1/config/history"): self.config_history,
            ("POST", "/v1/config/rollback"): self.rollback_config,
            ("GET", "/v1/store"): self.store_health,
            ("GET", "/v1/certificates"): self.certificates,
            ("GET", "/v1/watch"): self.watch,
            ("POST", "/v1/ack"): self.ack,
            ("POST", "/v1/registrations"): self.register,
            ("DELETE", "/v1/registrations"): self.deregister,
            ("GET", "/v1/status"): self.status,
            ("GET", "/v1/tap"): self.tap,
            ("GET", "/v1/stats"): self.stats,
            ("POST", "/v1/faults"): self.add_fault,
            ("DELETE", "/v1/faults"): self.remove_fault,
            ("GET", "/v1/routes"): self.routes,
        }
        self._stats: Any = None  # StatsCollector, made on the first stats request
        # Reads proxies' admin pages over mTLS (tap, stats, routes); set once the controller has credentials.
        self.admin_dialer: Any = None

    async def handle(self, request: ApiRequest) -> ApiResponse | AsyncIterator[Any]:
        route = self._routes.get((request.method, request.path))
        if route is None:
            if any(path == request.path for _, path in self._routes):
                raise ApiError(405, f"{request.method} is not allowed on {request.path}")
            raise ApiError(404, f"no such endpoint: {request.path}")
        return await route(request)

    async def bundle(self, request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, {"bundle": self.ca.bundle_pem.decode(), "trust_domain": self.state.trust_domain})

    async def health(self, request: ApiRequest) -> ApiResponse:
        self._require_peer(request)
        return ApiResponse(
            200,
            {
                "version": __version__,
                "time": time.time(),
                "trust_domain": self.state.trust_domain,
                "state_version": self.state.version,
                "config_version": self.state.config_version,
                "store": self.durable.location,
                "store_writable": self.durable.read_only_reason is None,
            },
        )

    # -- temporary faults (`mesh fault`) --------------------------------------------

    async def add_fault(self, request: ApiRequest) -> ApiResponse:
        from mesh.config import is_valid_service_name
        from mesh.controller._state import TemporaryFault

        operator = self._require_operator(request)
        body = _object(request.json())
        service = _string(body, "service")
        if not is_valid_service_name(service):
            raise ApiError(400, f"invalid service name {service!r}")
        try:
            seconds = float(body.get("for_seconds", 300))
            delay = body.get("delay_seconds")
            delay = None if delay is None else float(delay)
            abort = body.get("abort_status")
            abort = None if abort is None else int(abort)
            percent = float(body.get("percent", 100))
        except (TypeError, ValueError):
            raise ApiError(400, "delay_seconds, abort_status, percent and for_seconds must be numbers") from None
        if delay is None and abort is None:
            raise ApiError(400, "a fault needs a delay, an abort status, or both")
        if not 0 < seconds <= 86400 or not 0 <= percent <= 100 or (delay is not None and delay < 0):
            raise ApiError(400, "expected 0 < for ≤ 24h, 0 ≤ percent ≤ 100 and a delay ≥ 0")
        if abort is not None and not 400 <= abort <= 599:
            raise ApiError(400, f"abort status {abort} is not an HTTP error status (400-599)")
        fault = TemporaryFault(service, self.state.clock() + seconds, delay, percent, abort, percent)
        self._refuse_if_read_only("set a fault")
        try:
            await self.durable.set_fault(fault)
        except StoreError as exc:
            raise self._read_only_error("set a fault", exc.message) from None
        log.info("fault on %s for %gs set by %s: %s", service, seconds, operator, fault)
        self.changed()
        return ApiResponse(200, fault.to_dict())

    async def remove_fault(self, request: ApiRequest) -> ApiResponse:
        self._require_operator(request)
        service = request.query.get("service", "")
        try:
            removed = await self.durable.clear_fault(service)
        except StoreError as exc:
            raise self._read_only_error("remove a fault", exc.message) from None
        if removed:
            self.changed()
        return ApiResponse(200 if removed else 404, {"removed": removed})

    async def routes(self, request: ApiRequest) -> ApiResponse:
        from mesh.controller._routes_view import routes_view

        self._require_reader(request)
        service = request.query.get("service", "")
        if not service:
            raise ApiError(400, "query parameter 'service' is required")
        return ApiResponse(200, await routes_view(self.state, service, self._admin_dialer()))

    # -- status ------------------------------------------------------------------

    async def status(self, request: ApiRequest) -> ApiResponse:
        self._require_reader(request)
        return ApiResponse(200, self.status_view())

    async def hosts(self, request: ApiRequest) -> ApiResponse:
        from mesh.controller._hosts import hosts_view

        self._require_reader(request)
        return ApiResponse(
            200,
            {
                "controller": self.address,
                "time": time.time(),
                "hosts": hosts_view(self.state, self.address, self.host_address, __version__, self.state.clock()),
            },
        )

    def status_view(self) -> dict[str, Any]:
        state = self.state
        services: dict[str, list[dict[str, Any]]] = {}
        registered = {e.endpoint.address for e in state.entries() if e.source == "registration"}
        for entry in state.entries():
            if entry.source == "zeroconf" and entry.endpoint.address in registered:
                continue  # the same proxy, seen both ways: show its registration
            watch = state.watches.get(entry.instance)
            services.setdefault(entry.endpoint.service, []).append(
                {
                    **endpoint_to_dict(entry.endpoint),
                    "instance": entry.instance,
                    "source": entry.source,
                    "role": entry.role,
                    "host": entry.host,
                    "mesh_version": entry.version,
                    "cert_expiry": entry.cert_expiry,
                    "watching": watch is not None,
                    "acked_version": watch.acked_version if watch else None,
                }
            )
        return {
            "controller": {
                "address": self.address,
                "version": __version__,
                "trust_domain": state.trust_domain,
                "uptime_seconds": round(time.time() - self.started, 1),
                "state_version": state.version,
                "config_version": state.config_version,
                "issuer_expiry": self.ca.issuer_not_after.isoformat(),
                "store": self.durable.location,
                "read_only": self.durable.read_only_reason,
                "controllers": sorted(self.state.controllers),
            },
            "services": services,
            "watches": [
                {
                    "instance": w.instance,
                    "service": w.service,
                    "identity": w.identity,
                    "acked_version": w.acked_version,
                    "current": w.acked_version == state.version,
                }
                for w in state.watches.values()
            ],
            "config": state.config.summary(),
            "units": self.units() if self.units else [],
            "faults": [f.to_dict() for f in state.faults.values()],
        }

    # -- telemetry fan-in (mesh tap, top, stat, edges) ------------------------------

    def proxy_targets(self) -> list[Any]:
        from mesh.controller._fanin_admin import proxy_targets

        return proxy_targets(self.state)

    def _admin_dialer(self) -> Any:
        if self.admin_dialer is None:
            raise ApiError(503, "the controller cannot read proxies yet (no credentials)")
        return self.admin_dialer

    async def tap(self, request: ApiRequest) -> AsyncIterator[Any]:
        from mesh.controller._fanin_tap import TapFanIn
        from mesh.telemetry import TapFilter, query_values_asked

        try:
            tap_filter, max_rps = TapFilter.from_query(request.query)
            query_values = query_values_asked(request.query)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        # Query-string values may hold secrets: showing them is for operators, who are logged.
        operator = self._require_operator(request) if query_values else self._require_reader(request)
        if query_values:
            log.info("%s taps with query-string values shown (%s)", operator, tap_filter.to_query() or "every request")
        return TapFanIn(self.proxy_targets, tap_filter, max_rps, self._admin_dialer(), query_values=query_values)

    async def stats(self, request: ApiRequest) -> ApiResponse:
        from mesh.controller._fanin import StatsCollector, parse_window

        self._require_reader(request)
        try:
            window = parse_window(request.query.get("window"))
        except ValueError as exc:
            raise ApiError(400, str(exc), "e.g. window=60 or window=5m") from None
        if self._stats is None:
            self._stats = StatsCollector(self.proxy_targets, self.state.trust_domain, self._admin_dialer())
        return ApiResponse(200, await self._stats.stats(window))
