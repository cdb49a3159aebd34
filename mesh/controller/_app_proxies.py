"""The controller's API: what proxies call (``/v1/watch``, ``/v1/ack``, ``/v1/registrations``)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import trio

from mesh.controller._api import ApiRequest
from mesh.controller._app_base import HandlerBase, _object, _string, log
from mesh.controller._state import ROLES, EndpointEntry
from mesh.discovery import endpoint_from_dict
from mesh.errors import DiscoveryError, StoreError
from mesh.net import ApiError, ApiResponse

# A proxy that hears nothing for WATCH_SILENCE_LIMIT (proxy/_control.py) moves to another
# controller: a keepalive this often lets it notice a dead host within 5 s.
KEEPALIVE_SECONDS = 1.5
# A proxy whose watch ended is withdrawn after this, unless it is back (a reconnect takes ~0.3 s):
# callers stop being sent to a dead process within a second or two, not a lease's 30 s.
DEPARTURE_GRACE = 1.0


class ProxyHandlers(HandlerBase):
    # -- watch ---------------------------------------------------------------------

    async def watch(self, request: ApiRequest) -> AsyncIterator[Any]:
        service = request.query.get("service", "")
        instance = request.query.get("instance", "")
        peer = self._require_service(request, service)
        if not instance:
            raise ApiError(400, "query parameter 'instance' is required")
        self._note_proxy_config_version(instance, request.query.get("config_version", ""))
        return self.revocations.until_revoked(request, self._watch_stream(instance, service, str(peer)))

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
                "withdrew %s (%s at %s): its proxy went away without a word",
                instance,
                entry.endpoint.service,
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


_INSTANCE_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _instance_label(value: Any) -> str | None:
    """The DNS-SD instance a registration names, when it is one (else it is ignored)."""
    return value if isinstance(value, str) and _INSTANCE_LABEL.fullmatch(value) else None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def loopback_from_another_host(endpoint_host: str, remote_ip: str | None, local_ip: str | None) -> bool:
    """A loopback endpoint registered over a connection from another host: only that host can
    dial it. A caller on this host connects from one of our addresses, usually the one it dialed."""
    try:
        if not ipaddress.ip_address(endpoint_host).is_loopback or remote_ip is None:
            return False
        return not ipaddress.ip_address(remote_ip).is_loopback and remote_ip != local_ip
    except ValueError:  # a host name: whoever resolves it decides
        return False
