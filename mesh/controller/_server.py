"""`mesh controller`: the control plane in one trio process.

Start-up order: take the MESH_HOME lock (one controller per home), load the
CA, open the store (refusing a corrupt or unwritable one, or one that belongs
to another CA) and load the state from it, agree on the join token, make sure
the operator identity exists, bind the API port, write controller.json, then
serve: the API, the store's watch and health, this controller's announcement
to the others, fault expiry, and zeroconf (advertise ourselves, feed what we
browse into the registry).
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import trio

from mesh import __version__
from mesh.config import StoreUrl, parse_store_url
from mesh.controller._app import ControllerApp
from mesh.controller._durable import Durable
from mesh.controller._state import ControllerState, EndpointEntry
from mesh.controller._store import Store, open_store
from mesh.errors import ControllerError
from mesh.home import HostRecord, MeshHome, atomic_write, write_host_record
from mesh.identity import CONTROLLER_SERVICE

log = logging.getLogger("mesh.controller")

DEFAULT_LISTEN = ("127.0.0.1", 4190)
CONTROLLER_CERT_TTL = timedelta(days=30)


@dataclass(frozen=True)
class ControllerSettings:
    home: MeshHome
    listen: tuple[str, int] = DEFAULT_LISTEN
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    zeroconf: bool = True
    advertise: str | None = None  # the host other hosts dial (`mesh join`, zeroconf); None: the bound one
    store: StoreUrl = parse_store_url("embedded")
    # What host.json says of this host (`mesh up`'s host address): the commands run here by hand
    # listen and advertise there by default. None: the address the controller tells the others.
    host: HostRecord | None = None


def dial_addresses(bound: tuple[str, int], advertise: str | None) -> tuple[tuple[str, int], tuple[str, int]]:
    """(for this host, for other hosts). A wildcard bind is dialled on loopback here, and is
    never told to others: `mesh up` refuses it without an address to tell instead."""
    host, port = bound
    local = ("::1" if host == "::" else "127.0.0.1", port) if host in ("0.0.0.0", "::") else bound
    return local, ((advertise, port) if advertise else local)


@contextmanager
def home_lock(home: MeshHome) -> Iterator[None]:
    """One controller per MESH_HOME: an flock on run/controller.lock (released by the kernel on death)."""
    run_dir = home.ensure_dir(home.run_dir)
    path = run_dir / "controller.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ControllerError(
                f"another controller is already running on {home.root} (pid {holder})",
                hint="`mesh status` shows it; `mesh down` stops it",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def ensure_join_token(home: MeshHome) -> str:
    path = home.join_token
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    atomic_write(path, token + "\n", mode=0o600)
    return token


def operator_name() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        name = "admin"
    name = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63] or "admin"
    return name


def ensure_operator(home: MeshHome, ca: Any) -> None:
    """The CLI's own identity toward the controller (MESH_HOME/operator/)."""
    from mesh.identity import operator_identity

    cert = home.operator_dir / "cert.pem"
    if cert.exists():
        return
    home.ensure_dir(home.operator_dir)
    creds = ca.issue(operator_identity(ca.trust_domain, operator_name()), ttl=timedelta(days=365))
    creds.write(home.operator_dir)


def write_controller_json(
    home: MeshHome,
    address: tuple[str, int],
    trust_domain: str,
    identity: str,
    advertise: tuple[str, int] | None = None,
    controllers: list[str] | None = None,
) -> None:
    from mesh.discovery import format_address

    record = {
        "address": format_address(*address),  # what this host's proxies and CLI dial
        "advertise": format_address(*(advertise or address)),  # what other hosts dial: the `mesh join` line
        "controllers": controllers or [],  # every controller of the mesh (one etcd store): proxies fail over
        "trust_domain": trust_domain,
        "bundle": "ca/bundle.pem",
        "identity": identity,
        "version": __version__,
        "pid": os.getpid(),
    }
    atomic_write(home.controller_json, json.dumps(record, indent=2) + "\n", mode=0o644)


async def run_controller(
    settings: ControllerSettings,
    stop: trio.Event | None = None,
    *,
    task_status: trio.TaskStatus[ControllerApp] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGTERM/SIGINT, or until ``stop`` is set (when the caller owns the signals)."""
    from mesh.controller._api import serve_api, server_context_optional_client
    from mesh.controller._fanin_admin import AdminDialer
    from mesh.discovery import format_address
    from mesh.identity import CertificateAuthority, fingerprint, service_identity

    home = settings.home
    with home_lock(home):
        ca = CertificateAuthority.load(home)
        local_token = ensure_join_token(home)
        state = ControllerState(trust_domain=ca.trust_domain)
        store = await _open_store(settings, home)
        try:
            durable = Durable(store, state, "" if settings.store.embedded else settings.store.prefix)
            token = await durable.open(fingerprint(ca.root_cert), local_token)
            if token != local_token:
                log.info("took the join token of %s (another controller wrote it first)", durable.location)
                atomic_write(home.join_token, token + "\n", mode=0o600)
            ensure_operator(home, ca)
            identity = service_identity(ca.trust_domain, CONTROLLER_SERVICE)
            creds = ca.issue(identity, ttl=CONTROLLER_CERT_TTL)
            context = server_context_optional_client(creds)
            listen_host, port = settings.listen
            try:
                listener = (await trio.open_tcp_listeners(port, host=listen_host))[0]
            except OSError as exc:
                hint = "stop what holds it, or pick another with --listen HOST:PORT" if exc.errno == 98 else None
                raise ControllerError(
                    f"cannot listen on {listen_host}:{port}: {exc.strerror or exc}", hint=hint
                ) from None
            bound = listener.socket.getsockname()[:2]
            local, public = dial_addresses(bound, settings.advertise)
            host = settings.host or _controller_host(public[0])
            app = ControllerApp(
                state, ca, token, format_address(*public), durable, host_address=host.address or public[0]
            )
            app.admin_dialer = AdminDialer.for_credentials(creds, revoked_now=lambda: state.revoked)
            others = sorted(set(state.controllers) | {format_address(*public)})
            write_controller_json(home, local, ca.trust_domain, str(identity), public, others)
            write_host_record(home, host)
            async with trio.open_nursery() as nursery:
                app.nursery = nursery
                await nursery.start(durable.run)
                await nursery.start(serve_api, listener, context, app.handle)
                nursery.start_soon(_expire_faults, app)
                nursery.start_soon(durable.announce, format_address(*public), _announcement(public, identity))
                if settings.zeroconf:
                    await nursery.start(_zeroconf, app, settings, str(identity), public)
                told = "" if public == bound else f", other hosts dial {format_address(*public)}"
                log.info(
                    "controller listening on %s%s (trust domain %s, store %s, config version %d)",
                    format_address(*bound),
                    told,
                    ca.trust_domain,
                    durable.location,
                    state.config_version,
                )
                task_status.started(app)
                if stop is None:
                    await _wait_for_signal()
                else:
                    await stop.wait()
                log.info("controller stopping")
                app.stopping = True  # the proxies' watches end with us: they did not go away
                await durable.withdraw()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()


def _controller_host(public_host: str) -> HostRecord:
    """host.json of a controller's host when nobody said more: the address the controller tells the
    other hosts, unless that is loopback (then everything here stays on loopback)."""
    from mesh.discovery import is_loopback

    if is_loopback(public_host):
        return HostRecord(role="controller", operator=True)
    return HostRecord(role="controller", address=public_host, bind=public_host, operator=True)


async def _open_store(settings: ControllerSettings, home: MeshHome) -> Store:
    """The store of ``settings``, opened: a corrupt, full or unreachable store stops the start here."""
    store = open_store(settings.store, home)
    await store.open()
    return store


def _announcement(public: tuple[str, int], identity: Any) -> dict[str, Any]:
    from mesh.discovery import format_address

    return {
        "address": format_address(*public),
        "identity": str(identity),
        "version": __version__,
        "pid": os.getpid(),
        "started_at": round(time.time(), 3),
    }


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            return


async def _expire_faults(app: ControllerApp) -> None:
    """Faults end on time everywhere; registrations end when the store's lease does (``_durable``)."""
    while True:
        await trio.sleep(1.0)
        dead = app.state.expire()
        if dead:
            log.info("expired: %s", ", ".join(dead))
            app.changed()


async def _zeroconf(
    app: ControllerApp,
    settings: ControllerSettings,
    identity: str,
    address: tuple[str, int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advertise `_mesh-ctl._tcp` at ``address`` (the one other hosts dial) and mirror every
    `_mesh._tcp` record into the registry."""
    from mesh.discovery import ControllerRecord, ZeroconfAdvertiser, ZeroconfRegistry

    registry = ZeroconfRegistry(
        interfaces=settings.interfaces, trust_domain=app.state.trust_domain, mesh_ids=app.ca.mesh_ids
    )
    advertiser = ZeroconfAdvertiser(interfaces=settings.interfaces)
    host, port = address
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            record = ControllerRecord(identity=identity, host=host, port=port, version=__version__, mesh=app.ca.mesh_id)
            await advertiser.advertise(record)

            def goodbye(entry: EndpointEntry) -> None:
                # A proxy that died cannot say goodbye: its records would live on in every cache for
                # up to RECORD_TTL. The controller says it for them (they come back if it lives).
                nursery.start_soon(registry.forget, entry.endpoint.host, entry.endpoint.port, entry.zeroconf)

            app.on_departure = goodbye
            task_status.started()
            version = -1
            while True:
                if registry.version != version:
                    version = registry.version
                    entries = [
                        EndpointEntry(endpoint, f"zeroconf:{endpoint.address}", "zeroconf")
                        for service in registry.services()
                        for endpoint in registry.endpoints(service)
                    ]
                    if app.state.replace_source("zeroconf", entries):
                        app.changed()
                await registry.wait_changed(version)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await advertiser.aclose()
