"""The proxy's link to the controller: certificates, renewal, registration, watch.

A controller that goes away is survived: the proxy keeps its last snapshot and
certificate, exports ``controller_connected 0``, and reconnects with backoff.

A mesh may have several controllers (sharing one etcd store): the proxy knows
every one of them (controller.json, then the list each snapshot carries) and,
when its controller stops answering, moves to the next one at once; only after
trying them all does it back off. A keepalive every 1.5 s on the watch stream
lets it notice a controller whose host died (no RST) within WATCH_SILENCE_LIMIT.

A snapshot whose config version is older than the one in force here is never
applied: a controller that lost its store would otherwise hand out an empty
config. The proxy keeps what it has, says so in its log and in /config
(``refused``), which `mesh check` reads.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from mesh import __version__
from mesh.discovery import ControllerAddress
from mesh.errors import ControllerError, IdentityError, MeshError, first_leaf

if TYPE_CHECKING:
    from mesh.home import MeshHome
    from mesh.proxy._server import Proxy

log = logging.getLogger("mesh.proxy.control")

HEARTBEAT_SECONDS = 10.0
REGISTRATION_TTL = 30.0
WATCH_SILENCE_LIMIT = 4.0  # the controller sends a keepalive every 1.5 s
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0
# What a controller going away looks like from here: a reason to log, never a traceback.
_LINK_FAILURES = (ControllerError, trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)


def read_join_token(home: MeshHome, given: str | None) -> str | None:
    if given:
        return given
    env = os.environ.get("MESH_JOIN_TOKEN")
    if env:
        return env
    try:
        return home.join_token.read_text().strip() or None
    except OSError:
        return None


async def request_certificate(
    controller: ControllerAddress,
    service: str,
    *,
    token: str | None,
    current: Any | None,
    ttl: timedelta | None = None,
) -> Any:
    """A fresh key (made by our identity helper process; it never leaves this host) and a leaf
    signed by the controller."""
    from mesh.identity import IssuedCredentials, SpiffeId, client_context
    from mesh.net import ApiClient, bootstrap_client_context
    from mesh.proxy._identity import ask_identity_helper

    trust_domain = SpiffeId.parse(controller.identity).trust_domain
    identity = SpiffeId(trust_domain, "svc", service)
    fresh = await ask_identity_helper({"op": "new-key", "identity": str(identity)})
    body: dict[str, Any] = {"service": service, "csr": fresh["csr"]}
    if ttl is not None:
        body["ttl_seconds"] = ttl.total_seconds()
    if current is None:
        if not token:
            raise IdentityError(
                "no certificate yet and no join token to ask the controller for one",
                hint="pass --token, set MESH_JOIN_TOKEN, or run on the controller's host (MESH_HOME/join-token)",
            )
        body["token"] = token
        context = bootstrap_client_context(controller.bundle_pem)
    else:
        context = client_context(current, alpn=("h2",))
    client = await ApiClient.connect(controller.host, controller.port, context, expected_identity=controller.identity)
    try:
        response = await client.request("POST", "/v1/certificates", body)
    finally:
        await client.aclose()
    if response.status != 200:
        error = response.body.get("error") if isinstance(response.body, dict) else response.body
        raise IdentityError(f"the controller refused a certificate for {service}: {error}")
    bundle = response.body.get("bundle", controller.bundle_pem.decode()).encode()
    return IssuedCredentials.from_pem(response.body["certificate"].encode(), fresh["key"].encode(), bundle, identity)


async def keep_renewed(
    proxy: Proxy,
    obtain: Callable[[Any], Awaitable[Any]],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Renew the proxy's certificate forever, on the one schedule (``mesh.identity.renew_at``).

    ``obtain(current)`` returns fresh credentials (from the controller, or the
    local CA); a failure is retried with backoff while the current certificate
    keeps serving.
    """
    from mesh.identity import renew_at

    backoff = BACKOFF_START
    previous: datetime | None = None
    while True:
        identity = proxy.identity
        creds = identity.creds
        due = renew_at(creds.leaf_facts, received_at=identity.received_at, previous=previous)
        wait = (due - now()).total_seconds()
        if wait > 0:
            await trio.sleep(wait)
        try:
            fresh = await obtain(creds)
        except (ControllerError, IdentityError, OSError, trio.BrokenResourceError) as exc:
            left = (creds.not_after - now()).total_seconds()
            log.warning("certificate renewal failed (%s); %.0fs left on the current one; retrying", exc, left)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            continue
        backoff = BACKOFF_START
        previous = now()
        proxy.set_credentials(fresh, received_at=previous)
        log.info("renewed the certificate of %s; valid until %s", fresh.identity, fresh.not_after.isoformat())


class ControlLink:
    def __init__(
        self,
        proxy: Proxy,
        controller: ControllerAddress | list[ControllerAddress],
        view: Any,  # MemoryRegistry that mirrors the controller's endpoints
        instance: str,
        leaf_ttl: timedelta | None = None,
    ) -> None:
        self.proxy = proxy
        self.controllers = list(controller) if isinstance(controller, list) else [controller]
        self._current = 0
        self.view = view
        self.instance = instance
        self.leaf_ttl = leaf_ttl
        self.snapshot_version = 0
        self.config_version = 0
        self.connected = False
        self.refused: dict[str, Any] | None = None  # the last snapshot refused as older than ours
        self.registration_refused: str | None = None  # why the controller refused our registration
        self._client: Any = None

    @property
    def controller(self) -> ControllerAddress:
        """The controller in use now."""
        return self.controllers[self._current]

    def _next_controller(self) -> bool:
        """Move to the next known controller; True when the round of them starts again."""
        self._current = (self._current + 1) % len(self.controllers)
        return self._current == 0

    def _learn_controllers(self, addresses: Any) -> None:
        """The controllers a snapshot lists (all of the mesh's, by their lease in the store)."""
        if not isinstance(addresses, list) or not addresses:
            return
        current = self.controller
        known = {c.address: c for c in self.controllers}
        listed = []
        for address in addresses:
            try:
                listed.append(known.get(str(address)) or current.sibling(str(address)))
            except MeshError:
                log.debug("ignored controller address %r in the snapshot", address)
        # The one in use stays first (and stays even when a store hiccup leaves it out).
        ordered = [current] + [c for c in listed if c.address != current.address]
        if [c.address for c in ordered] != [c.address for c in self.controllers]:
            log.info("controllers of the mesh: %s", ", ".join(c.address for c in ordered))
            self.controllers = ordered
            self._current = 0

    def describe(self) -> dict[str, Any]:
        """What /config shows about the link (and `mesh check` reads)."""
        return {
            "address": self.controller.address,
            "controllers": [c.address for c in self.controllers],
            "connected": self.connected,
            "snapshot_version": self.snapshot_version,
            "config_version": self.config_version,
            "refused": self.refused,
        }

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew_loop)
            nursery.start_soon(self._watch_loop)

    # -- certificate renewal -------------------------------------------------------

    async def _renew_loop(self) -> None:
        async def from_controller(current: Any) -> Any:
            service = self.proxy.settings.service
            return await request_certificate(self.controller, service, token=None, current=current, ttl=self.leaf_ttl)

        await keep_renewed(self.proxy, from_controller)

    # -- watch and registration ---------------------------------------------------

    async def _watch_loop(self) -> None:
        from mesh.identity import client_context
        from mesh.net import ApiClient

        backoff = BACKOFF_START
        outage_logged = False
        while True:
            controller = self.controller
            try:
                context = client_context(self.proxy.identity.creds, alpn=("h2",))
                client = await ApiClient.connect(
                    controller.host, controller.port, context, expected_identity=controller.identity, timeout=2.0
                )
                self._client = client
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._heartbeat_loop, client)
                        await self._consume_watch(client)
                        nursery.cancel_scope.cancel()
                finally:
                    self._client = None
                    await client.aclose()
                reason = "the controller ended the watch"
            except Exception as exc:  # noqa: BLE001 - the link must never take the proxy down
                # trio groups what the watch and the heartbeat raised: the reason is the leaf. Even
                # an unexpected one is a reason, logged below in one line (a controller that goes
                # away, whatever it breaks, is no error of this proxy); --debug shows the traceback.
                leaf = first_leaf(exc, _LINK_FAILURES)
                expected = isinstance(leaf, _LINK_FAILURES) or type(leaf).__name__ == "ApiError"
                if not expected:
                    log.debug("the controller link failed unexpectedly", exc_info=exc)
                reason = str(leaf) or type(leaf).__name__
                if not expected:
                    reason = f"{type(leaf).__name__}: {reason}"
            was_connected = self.connected
            self._set_connected(False)
            if was_connected:  # a fresh outage: start again from short waits
                backoff, outage_logged = BACKOFF_START, False
            if not outage_logged:
                others = len(self.controllers) - 1
                log.warning(
                    "lost the controller at %s (%s); serving with snapshot %d, %s",
                    controller.address,
                    reason,
                    self.snapshot_version,
                    f"trying the {others} other controller(s)" if others else "retrying",
                )
                outage_logged = True
            if self._next_controller():  # every controller tried: wait before the next round
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _consume_watch(self, client: Any) -> None:
        # config_version: a controller with less (a restored or lost store) numbers its next apply above it.
        path = (
            f"/v1/watch?service={self.proxy.settings.service}&instance={self.instance}"
            f"&config_version={self.config_version}"
        )
        async with client.stream("GET", path) as events:
            iterator = events.__aiter__()
            while True:
                with trio.move_on_after(WATCH_SILENCE_LIMIT) as silent:
                    try:
                        event = await iterator.__anext__()
                    except StopAsyncIteration:
                        return
                if silent.cancelled_caught:
                    raise ControllerError(f"the watch stream went silent for {WATCH_SILENCE_LIMIT:g}s")
                if not self.connected:
                    self._set_connected(True)
                    log.info("connected to the controller at %s", self.controller.address)
                if event.get("type") != "snapshot":
                    continue
                if self.apply_snapshot(event):
                    await client.request("POST", "/v1/ack", {"instance": self.instance, "version": event["version"]})
                elif len(self.controllers) > 1:
                    raise ControllerError("it offers an older config than the one in force here")

    def apply_snapshot(self, snapshot: dict[str, Any]) -> bool:
        """Swap in a whole snapshot at once (the hot path never sees half of one); refuse an older config."""
        from mesh.discovery import endpoint_from_dict

        offered = int(snapshot.get("config_version", 0))
        if offered < self.config_version:
            self._refuse(snapshot, offered)
            return False
        if self.refused is not None:
            log.info(
                "the controller at %s offers config version %d: applied (it had offered %d)",
                self.controller.address,
                offered,
                self.refused["config_version"],
            )
            self.refused = None
        endpoints: dict[str, list[Any]] = {}
        for service, items in snapshot.get("endpoints", {}).items():
            for item in items:
                try:
                    endpoints.setdefault(service, []).append(endpoint_from_dict(item))
                except (KeyError, ValueError) as exc:
                    log.debug("ignored an endpoint of %s in the snapshot: %s", service, exc)
        self.view.replace_all(endpoints)
        self.proxy.apply_policy_snapshot(snapshot)
        self.snapshot_version = int(snapshot.get("version", 0))
        self.config_version = offered
        self._learn_controllers(snapshot.get("controllers"))
        log.debug("applied snapshot %d (config version %d)", self.snapshot_version, offered)
        return True

    def _refuse(self, snapshot: dict[str, Any], offered: int) -> None:
        refused = {
            "controller": self.controller.address,
            "config_version": offered,
            "kept_version": self.config_version,
            "at": round(time.time(), 3),
        }
        if self.refused is None or (self.refused["controller"], self.refused["config_version"]) != (
            refused["controller"],
            offered,
        ):
            log.warning(
                "the controller at %s offers config version %d, older than version %d in force here: "
                "kept version %d (%s)",
                refused["controller"],
                offered,
                self.config_version,
                self.config_version,
                "it has an empty store: lost or reset?" if offered == 0 else "it is behind",
            )
        self.refused = refused

    async def _heartbeat_loop(self, client: Any) -> None:
        if self.proxy.settings.worker:  # one of `--workers N`: worker 0 alone registers (one instance)
            return
        if self.proxy.settings.app is not None:  # a gateway has no app to wait for
            await self.proxy.app_ready.wait()
        while True:
            await self._register(client)
            await trio.sleep(HEARTBEAT_SECONDS)

    async def _register(self, client: Any) -> None:
        bound = self.proxy.bound
        assert bound is not None
        host, port = self.proxy.advertised_inbound()
        body = {
            "service": self.proxy.settings.service,
            "instance": self.instance,
            "address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "labels": dict(self.proxy.settings.labels),
            "protocol": self.proxy.settings.protocol,
            "admin_port": bound.admin[1],
            "ttl_seconds": REGISTRATION_TTL,
            "mesh_version": __version__,
            "cert_expiry": self.proxy.identity.creds.not_after.timestamp(),
            "role": "gateway" if self.proxy.settings.app is None else "service",
            "zeroconf": self.proxy.zeroconf_instance,  # for the goodbye the controller says should we die
            "time": time.time(),  # the controller tells this host's clock skew (`mesh status --hosts`)
        }
        response = await client.request("POST", "/v1/registrations", body)
        if response.status == 200:
            self.registration_refused = None
            return
        answer = response.body if isinstance(response.body, dict) else {"error": str(response.body)}
        reason = str(answer.get("error") or f"status {response.status}")
        if reason != self.registration_refused:  # once, not at every heartbeat
            self.registration_refused = reason
            hint = answer.get("hint")
            log.warning(
                "the controller at %s refused to register this proxy: %s%s",
                self.controller.address,
                reason,
                f" (hint: {hint})" if hint else "",
            )

    async def withdraw(self) -> None:
        """Best effort, on shutdown: tell the controller before the listeners close."""
        client = self._client
        if client is None:
            return
        with trio.move_on_after(1.0):
            try:
                await client.request("DELETE", f"/v1/registrations?instance={self.instance}")
            except Exception:  # noqa: BLE001 - the controller may be gone; expiry covers us
                pass

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self.proxy.metrics.controller_connected.set(1 if connected else 0)
