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
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import trio

from mesh import __version__
from mesh.controller._api import ApiRequest
from mesh.net import ApiError, ApiResponse
from mesh.controller._durable import Durable
from mesh.controller._state import ROLES, ControllerState, EndpointEntry
from mesh.discovery import endpoint_from_dict, endpoint_to_dict
from mesh.errors import ConfigError, DiscoveryError, IdentityError, StoreError
from mesh.identity import CONTROLLER_SERVICE

log = logging.getLogger("mesh.controller")

# A proxy that hears nothing for WATCH_SILENCE_LIMIT (proxy/_control.py) moves to another
# controller: a keepalive this often lets it notice a dead host within 5 s.
KEEPALIVE_SECONDS = 1.5
MAX_LEAF_TTL = timedelta(hours=24)
# Host and operator identities belong to people's CLIs: long-lived, renewed by joining again.
CLI_CERT_TTL = timedelta(days=365)
# A proxy whose watch ended is withdrawn after this, unless it is back (a reconnect takes ~0.3 s):
# callers stop being sent to a dead process within a second or two, not a lease's 30 s.
DEPARTURE_GRACE = 1.0
GRANT_TTL = timedelta(minutes=15)
MAX_GRANT_TTL = timedelta(hours=24)
OPERATOR_HINT = (
    "run it on an operator's host (the controller's, where `mesh up` made MESH_HOME/operator), or make "
    "this one an operator's: `mesh operator grant NAME` there, then `mesh join … --operator GRANT` here"
)


class ControllerApp:
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

    # -- certificates -------------------------------------------------------------

    async def sign(self, request: ApiRequest) -> ApiResponse:
        from mesh.identity import service_identity

        body = _object(request.json())
        kind = body.get("kind") or "svc"
        if kind == "host":
            return await self._sign_host(request, body)
        if kind == "operator":
            return await self._sign_operator(request, body)
        if kind != "svc":
            raise ApiError(400, f"unknown identity kind {kind!r}: expected svc, host or operator")
        service = _string(body, "service")
        csr = _string(body, "csr").encode()
        ttl = _leaf_ttl(body.get("ttl_seconds"))
        if service == CONTROLLER_SERVICE:
            raise ApiError(403, f"{service!r} is reserved for the controller")
        if request.peer is not None:
            self._require_service(request, service)  # renewal: only for yourself
        else:
            self._check_join_token(body, service)
        try:
            identity = service_identity(self.state.trust_domain, service)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        return await self._signed(csr, identity, ttl, "renewal" if request.peer else "join token")

    def _check_join_token(self, body: dict[str, Any], what: str) -> None:
        token = str(body.get("token") or "").encode()
        if not token or not hmac.compare_digest(token, self._join_token):
            log.warning("refused a certificate for %s: %s join token", what, "wrong" if token else "no")
            raise ApiError(
                403,
                "the join token is missing or wrong",
                "use the token that `mesh up` printed (MESH_HOME/join-token on the controller's host)",
            )

    async def _signed(self, csr: bytes, identity: Any, ttl: timedelta, how: str) -> ApiResponse:
        try:
            chain = self.ca.sign_csr(csr, identity, ttl)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        log.info("signed a certificate for %s (%s)", identity, how)
        await self._record_certificate(chain, str(identity))
        return ApiResponse(200, {"certificate": chain.decode(), "bundle": self.ca.bundle_pem.decode()})

    async def _sign_host(self, request: ApiRequest, body: dict[str, Any]) -> ApiResponse:
        """`mesh join`: a host identity, which reads the mesh (status, stats, routes, tap) and nothing more."""
        from mesh.identity import host_identity

        name = _string(body, "name")
        csr = _string(body, "csr").encode()
        try:
            identity = host_identity(self.state.trust_domain, name)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        if request.peer is not None:
            peer = self._require_peer(request)
            if peer != identity:
                log.warning("refused a certificate for %s from %s", identity, peer)
                raise ApiError(403, f"{peer} may not act for host {name!r}")
        else:
            self._check_join_token(body, str(identity))
        address = _host_address(body.get("address"), request.remote_ip)
        response = await self._signed(csr, identity, CLI_CERT_TTL, "joined" if request.peer is None else "renewal")
        record = {
            "address": address,
            "name": name,
            "identity": str(identity),
            "operator": bool(self.state.joined_hosts.get(address, {}).get("operator")),
            "version": str(body.get("mesh_version") or ""),
            "joined_at": round(time.time(), 3),
            "seen_from": request.remote_ip,
        }
        try:
            await self.durable.record_host(record)
        except StoreError as exc:  # joined all the same; `mesh status --hosts` lists it once its proxies call
            log.warning("host %s joined, but is not recorded in %s: %s", name, self.durable.location, exc.message)
        log.info("host %s joined from %s (its address: %s)", name, request.remote_ip or "?", address)
        return response

    async def _sign_operator(self, request: ApiRequest, body: dict[str, Any]) -> ApiResponse:
        """An operator identity for another host: only with a grant an operator made (or as a
        renewal by the operator itself)."""
        from mesh.identity import operator_identity

        csr = _string(body, "csr").encode()
        peer = request.peer
        if peer is not None:
            peer = self._require_operator(request)  # renewal: only for yourself
            identity = peer
            how = "renewal"
        else:
            self._check_join_token(body, "an operator")
            grant = _string(body, "grant")
            try:
                record = await self.durable.redeem_grant(_grant_digest(grant))
            except StoreError as exc:
                raise ApiError(503, f"cannot redeem the operator grant: {exc.message}", exc.hint) from None
            if record is None:
                log.warning(
                    "refused an operator certificate from %s: unknown, used or expired grant", request.remote_ip
                )
                raise ApiError(
                    403,
                    "the operator grant is unknown, already used or expired",
                    "ask an operator for a new one: `mesh operator grant NAME` on the controller's host",
                )
            identity = operator_identity(self.state.trust_domain, str(record["name"]))
            how = f"granted by {record.get('by')}"
        response = await self._signed(csr, identity, CLI_CERT_TTL, how)
        address = _host_address(body.get("address"), request.remote_ip)
        joined = self.state.joined_hosts.get(address)
        if joined is not None and not joined.get("operator"):
            try:
                await self.durable.record_host({**joined, "operator": True, "operator_identity": str(identity)})
            except StoreError as exc:
                log.debug("operator of %s not recorded: %s", address, exc.message)
        return response

    async def grant_operator(self, request: ApiRequest) -> ApiResponse:
        """`mesh operator grant NAME`: a secret, good once within its time, that `mesh join
        --operator` trades for an operator identity named NAME."""
        from mesh.identity import validate_name

        operator = self._require_operator(request)
        body = _object(request.json())
        name = _string(body, "name")
        try:
            validate_name(name, "operator")
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        asked = body.get("ttl_seconds", GRANT_TTL.total_seconds())
        longest = MAX_GRANT_TTL.total_seconds()
        if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 60 <= asked <= longest:
            raise ApiError(400, "ttl_seconds must be a number of seconds from 60 to 86400 (24 h)")
        grant = secrets.token_urlsafe(24)
        expires_at = time.time() + float(asked)
        self._refuse_if_read_only("grant an operator identity")
        try:
            await self.durable.put_grant(
                _grant_digest(grant), {"name": name, "by": str(operator), "expires_at": expires_at}, float(asked)
            )
        except StoreError as exc:
            raise self._read_only_error("grant an operator identity", exc.message) from None
        log.info("%s granted an operator identity %r, good once until %s", operator, name, time.ctime(expires_at))
        return ApiResponse(200, {"grant": grant, "name": name, "expires_at": expires_at})

    async def _record_certificate(self, chain: bytes, identity: str) -> None:
        """Kept in the store until it expires; a store that cannot write must not stop renewals."""
        from mesh.identity import load_certificates

        leaf = load_certificates(chain)[0]
        try:
            await self.durable.record_certificate(
                format(leaf.serial_number, "x"), identity, leaf.not_valid_after_utc.timestamp(), self.address
            )
        except StoreError as exc:
            log.debug("signed, but not recorded in the store: %s", exc.message)

    async def certificates(self, request: ApiRequest) -> ApiResponse:
        self._require_operator(request)
        try:
            issued = await self.durable.certificates()
        except StoreError as exc:
            raise ApiError(503, f"cannot read the issued certificates: {exc.message}", exc.hint) from None
        now = time.time()
        return ApiResponse(200, {"certificates": [c for c in issued if float(c.get("not_after", 0)) > now]})

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

    # -- config ------------------------------------------------------------------

    async def get_config(self, request: ApiRequest) -> ApiResponse:
        self._require_peer(request)
        state = self.state
        return ApiResponse(200, {"version": state.config_version, "config": state.config.to_dict()})

    async def apply_config(self, request: ApiRequest) -> ApiResponse:
        operator = self._require_operator(request)
        body = _object(request.json())
        data = body.get("config")
        if not isinstance(data, dict):
            raise ApiError(400, "expected {\"config\": {...}}")
        source = str(body.get("source") or "applied config")
        try:
            config = self.state.check_config(data, source)
        except ConfigError as exc:
            issues = [str(i) for i in getattr(exc, "issues", ())] or [exc.message]
            log.warning("rejected a config from %s: %s", operator, "; ".join(issues))
            return ApiResponse(400, {"error": "the config is invalid; the previous one stays in force", "issues": issues})
        version, changed = await self._write_config(config, source, str(operator))
        return ApiResponse(200, {"version": version, "changed": changed})

    async def apply_file(self, data: dict[str, Any], source: str) -> tuple[int, bool]:
        """`mesh up mesh.toml`: the file's config, as if the host's operator applied it."""
        from mesh.controller._server import operator_name

        return await self._write_config(self.state.check_config(data, source), source, f"mesh up ({operator_name()})")

    async def _write_config(self, config: Any, source: str, operator: str) -> tuple[int, bool]:
        """Into the store, then in force here; other controllers learn it by their watch."""
        self._refuse_if_read_only("apply a config")
        try:
            version, changed = await self.durable.apply_config(
                config, source, operator, at_least=self.newest_proxy_config + 1
            )
        except StoreError as exc:
            raise self._read_only_error("apply a config", exc.message) from None
        if changed:
            log.info("config version %d applied by %s (%s)", version, operator, source)
            self.changed()
        return version, changed

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

    async def config_history(self, request: ApiRequest) -> ApiResponse:
        self._require_reader(request)
        try:
            records = await self.durable.history()
        except StoreError as exc:
            raise ApiError(503, f"cannot read the config history: {exc.message}", exc.hint) from None
        current = self.state.config_version
        return ApiResponse(
            200,
            {
                "current": current,
                "kept": len(records),
                "versions": [{**r.summary(), "current": r.version == current} for r in records],
            },
        )

    async def rollback_config(self, request: ApiRequest) -> ApiResponse:
        operator = self._require_operator(request)
        body = _object(request.json())
        target = body.get("version")
        if isinstance(target, bool) or not isinstance(target, int) or target < 1:
            raise ApiError(400, "expected {\"version\": N} with N a config version (1 or more)")
        try:
            record = await self.durable.config_at(target)
        except StoreError as exc:
            raise ApiError(503, f"cannot read config version {target}: {exc.message}", exc.hint) from None
        if record is None:
            raise ApiError(
                404,
                f"config version {target} is not kept (the store keeps the last versions only)",
                "`mesh config history` lists the versions it has",
            )
        try:
            config = self.state.check_config(record.config, f"config version {target}")
        except ConfigError as exc:
            raise ApiError(409, f"config version {target} is not valid for this mesh any more: {exc.message}") from None
        version, changed = await self._write_config(config, f"rollback to version {target}", str(operator))
        return ApiResponse(200, {"version": version, "changed": changed, "rolled_back_to": target})

    async def store_health(self, request: ApiRequest) -> ApiResponse:
        self._require_reader(request)
        try:
            health = await self.durable.check_health()  # fresh: `mesh check` right after a member died
        except StoreError as exc:
            raise ApiError(503, exc.message, exc.hint) from None
        return ApiResponse(
            200,
            {
                **health.to_dict(),
                "read_only_reason": self.durable.read_only_reason,
                "config_version": self.state.config_version,
                "controllers": sorted(self.state.controllers),
                "this_controller": self.address,
            },
        )

    # -- watch ---------------------------------------------------------------------

    async def watch(self, request: ApiRequest) -> AsyncIterator[Any]:
        service = request.query.get("service", "")
        instance = request.query.get("instance", "")
        peer = self._require_service(request, service)
        if not instance:
            raise ApiError(400, "query parameter 'instance' is required")
        self._note_proxy_config_version(instance, request.query.get("config_version", ""))
        return self._watch_stream(instance, service, str(peer))

    def _note_proxy_config_version(self, instance: str, text: str) -> None:
        """A proxy holding a newer config than this controller's store (restored or lost): the next
        apply is numbered above it, or the proxies would refuse it as older than theirs."""
        try:
            held = int(text)
        except ValueError:
            return
        if held > self.state.config_version and held > self.newest_proxy_config:
            log.warning(
                "proxy %s holds config version %d, newer than version %d in %s (restored or lost?): "
                "it keeps its own; the next `mesh apply` here gets version %d",
                instance,
                held,
                self.state.config_version,
                self.durable.location,
                held + 1,
            )
            self.newest_proxy_config = held

    async def _watch_stream(self, instance: str, service: str, identity: str) -> AsyncIterator[Any]:
        state = self.state
        watch = state.watch_started(instance, service, identity)
        log.info("proxy %s (%s) is watching", instance, identity)
        try:
            sent = 0
            while True:
                if state.version != sent:
                    sent = watch.sent_version = state.version
                    yield {"type": "snapshot", **state.snapshot()}
                    continue  # the state may have moved while the snapshot was on its way
                with trio.move_on_after(KEEPALIVE_SECONDS) as idle:
                    await self._change.wait()
                if idle.cancelled_caught:
                    yield {"type": "keepalive", "version": state.version}
        finally:
            state.watch_ended(instance, watch)
            if self.stopping:
                log.info("proxy %s stopped watching (this controller stops)", instance)
            else:
                log.info("proxy %s stopped watching", instance)
                if self.nursery is not None:
                    self.nursery.start_soon(self._withdraw_if_departed, instance)

    async def _withdraw_if_departed(self, instance: str) -> None:
        """A proxy whose watch ended (its process died: the kernel closed its connection) is out of
        every caller's endpoint set at once, not when its lease runs out; one that only reconnects
        (here, or to another controller of the mesh, which rewrites its registration) stays."""
        entry = self.state.entry(instance)
        if entry is None or entry.source != "registration" or entry.controller != self.address:
            return
        try:
            revision = await self.durable.registration_revision(instance)
            await trio.sleep(DEPARTURE_GRACE)
            if instance in self.state.watches:
                return  # back already
            withdrawn = await self.durable.withdraw_departed(instance, revision)
        except StoreError as exc:
            log.debug("could not withdraw %s (its lease will): %s", instance, exc.message)
            return
        if withdrawn:
            log.info(
                "withdrew %s (%s at %s): its proxy went away without a word", instance, entry.endpoint.service,
                entry.endpoint.address,
            )
            self.changed()
            if self.on_departure is not None:
                self.on_departure(entry)

    async def ack(self, request: ApiRequest) -> ApiResponse:
        body = _object(request.json())
        instance = _string(body, "instance")
        watch = self.state.watches.get(instance)
        if watch is not None:
            self._require_service(request, watch.service)
        ok = self.state.ack(instance, int(body.get("version", 0)))
        return ApiResponse(200 if ok else 404, {"acked": ok})

    # -- registrations ----------------------------------------------------------

    async def register(self, request: ApiRequest) -> ApiResponse:
        body = _object(request.json())
        service = _string(body, "service")
        self._require_service(request, service)
        role = body.get("role") or "service"
        if role not in ROLES:
            raise ApiError(400, f"invalid registration: role {role!r} is not one of {', '.join(ROLES)}")
        try:
            endpoint = endpoint_from_dict({**body, "identity": str(request.peer)})
        except (KeyError, ValueError, DiscoveryError) as exc:
            raise ApiError(400, f"invalid registration: {exc}") from None
        instance = _string(body, "instance")
        if loopback_from_another_host(endpoint.host, request.remote_ip, request.local_ip):
            # Every other host would dial itself; its own host finds it by zeroconf on loopback.
            log.info("refused %s: the loopback address %s, from %s", instance, endpoint.address, request.remote_ip)
            raise ApiError(
                400,
                f"{instance} registers the loopback address {endpoint.address} from {request.remote_ip}: "
                "other hosts cannot reach it, so the controller does not hand it out",
                "on a host that ran `mesh join`, leave --inbound out (it listens on the host's address); "
                "else give --inbound ADDR:0, or --inbound 0.0.0.0:0 --advertise ADDR",
            )
        ttl = min(float(body.get("ttl_seconds") or 30.0), 300.0)
        host = self._host_of(request)
        entry = EndpointEntry(
            endpoint,
            instance,
            "registration",
            version=str(body.get("mesh_version") or ""),
            cert_expiry=body.get("cert_expiry"),
            role=role,
            controller=self.address,
            host=host,
            zeroconf=_instance_label(body.get("zeroconf")),
        )
        their_time = body.get("time")
        self.state.heard_from(host, entry.version, their_time if _finite_number(their_time) else None)
        try:
            added = await self.durable.register(entry, ttl)
        except StoreError as exc:
            if any(e.instance == entry.instance and e.endpoint == endpoint for e in self.state.entries()):
                # A heartbeat while the store cannot write: the registration is known, and
                # its lease cannot run out either (etcd expires leases only with a leader).
                log.debug("heartbeat of %s not written: %s", entry.instance, exc.message)
                return ApiResponse(200, {"ttl_seconds": ttl})
            raise ApiError(503, f"cannot register {entry.instance}: {exc.message}", exc.hint) from None
        if added:
            what = "the gateway" if role == "gateway" else "registered"
            log.info("%s %s at %s (host %s)", what, entry.instance, endpoint.address, host)
            self.changed()
        return ApiResponse(200, {"ttl_seconds": ttl})

    def _host_of(self, request: ApiRequest) -> str:
        """The host a request came from: this controller's own (over loopback, or from the very
        address it was dialled at), else the peer's address."""
        remote = request.remote_ip
        if remote is None or remote == request.local_ip:
            return self.host_address
        try:
            if ipaddress.ip_address(remote).is_loopback:
                return self.host_address
        except ValueError:
            pass
        return remote

    async def deregister(self, request: ApiRequest) -> ApiResponse:
        instance = request.query.get("instance", "")
        entry = next((e for e in self.state.entries() if e.instance == instance), None)
        if entry is None:
            return ApiResponse(404, {"error": f"no registration {instance!r}"})
        self._require_service(request, entry.endpoint.service)
        try:
            removed = await self.durable.deregister(instance)
        except StoreError as exc:
            raise ApiError(503, f"cannot withdraw {instance}: {exc.message}", exc.hint) from None
        if removed:
            log.info("withdrew %s", instance)
            self.changed()
        return ApiResponse(200, {"removed": True})

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
        from mesh.controller._fanin import proxy_targets

        return proxy_targets(self.state)

    def _admin_dialer(self) -> Any:
        if self.admin_dialer is None:
            raise ApiError(503, "the controller cannot read proxies yet (no credentials)")
        return self.admin_dialer

    async def tap(self, request: ApiRequest) -> AsyncIterator[Any]:
        from mesh.controller._fanin import TapFanIn
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


def _leaf_ttl(asked: Any) -> timedelta:
    """The lifetime of a leaf to sign: what the caller asked for, within [MIN_LEAF_TTL, 24 h]
    (a shorter one would be renewed too often; the proxy refuses to ask for it anyway)."""
    from mesh.identity import MIN_LEAF_TTL

    if asked is None:
        return MAX_LEAF_TTL
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not math.isfinite(asked):
        raise ApiError(400, f"ttl_seconds must be a number of seconds, not {asked!r}")
    return min(max(timedelta(seconds=asked), MIN_LEAF_TTL), MAX_LEAF_TTL)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "expected a JSON object")
    return value


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"expected a non-empty string at {key!r}")
    return value


_INSTANCE_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _instance_label(value: Any) -> str | None:
    """The DNS-SD instance a registration names, when it is one (else it is ignored)."""
    return value if isinstance(value, str) and _INSTANCE_LABEL.fullmatch(value) else None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _grant_digest(grant: str) -> str:
    """Grants are kept by their hash: the store (an etcd others may read) never holds the secret."""
    return hashlib.sha256(grant.encode()).hexdigest()


def _host_address(claimed: Any, remote_ip: str | None) -> str:
    """The address a joining host says it has (`mesh join` records what it dialled from, or
    --advertise), else the one its connection came from."""
    if isinstance(claimed, str) and claimed:
        try:
            return str(ipaddress.ip_address(claimed))
        except ValueError:
            raise ApiError(400, f"invalid host address {claimed!r}: expected an IP address") from None
    return remote_ip or "?"


def loopback_from_another_host(endpoint_host: str, remote_ip: str | None, local_ip: str | None) -> bool:
    """A loopback endpoint registered over a connection from another host: only that host can
    dial it. A caller on this host connects from one of our addresses, usually the one it dialed."""
    try:
        if not ipaddress.ip_address(endpoint_host).is_loopback or remote_ip is None:
            return False
        return not ipaddress.ip_address(remote_ip).is_loopback and remote_ip != local_ip
    except ValueError:  # a host name: whoever resolves it decides
        return False
