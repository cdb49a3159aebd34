"""From `mesh proxy` options to a running proxy: parse, get an identity, run.

Where it listens and advertises, when the options do not say: on a host whose MESH_HOME
records its address (``host.json``: `mesh join` on a joined host, `mesh up` on the
controller's), the inbound listener binds that address and zeroconf spans its interface;
elsewhere everything stays on loopback (``with_host_defaults``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio

from mesh.errors import ConfigError, ControllerError, IdentityError, ProxyError
from mesh.home import MeshHome
from mesh.proxy._exchange import Timeouts
from mesh.proxy._export import TelemetrySettings
from mesh.proxy._identity import Identity
from mesh.proxy._options import option_default
from mesh.proxy._server import Proxy, ProxySettings

log = logging.getLogger("mesh.proxy")


@dataclass(frozen=True)
class ProxyOptions:
    """What a sidecar is started with; the defaults are those of its command-line options
    (``mesh.proxy._options``, the one description of them)."""

    home: MeshHome
    service: str
    app: str
    inbound: str | None = None  # None: the host's address (host.json), else 127.0.0.1, port 0
    outbound: str = option_default("outbound")
    admin: str = option_default("admin")
    endpoints: Path | None = None
    upstreams: list[str] | tuple[str, ...] = ()
    labels: list[str] | tuple[str, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    bundle: Path | None = None
    request_timeout: str = option_default("request_timeout")
    idle_timeout: str = option_default("idle_timeout")
    head_timeout: str = option_default("head_timeout")
    body_timeout: str = option_default("body_timeout")
    drain_timeout: str = option_default("drain_timeout")
    controller: str | None = None  # HOST:PORT, overriding MESH_HOME/controller.json
    token: str | None = None  # join token for the first certificate
    cert_ttl: str | None = None  # ask for leaves this short (renewal tests); default 24h
    zeroconf: bool = option_default("zeroconf")
    interfaces: tuple[str, ...] | None = None  # None: the host's interface (host.json), else loopback
    advertise: str | None = None  # host peers dial for our inbound listener
    protocol: str = option_default("protocol")  # what the app speaks (mesh.config.APP_PROTOCOLS)
    workers: int | str = option_default("workers")  # processes sharing the listeners (mesh/proxy/_workers.py)
    otlp_endpoint: str | None = None  # spans go to this OTLP/HTTP collector; None: no tracing
    trace_sample: str = option_default("trace_sample")  # share of new traces sampled
    access_log: str | None = None  # a file, or "-" for stdout; None: no access log


LOOPBACK_INBOUND = "127.0.0.1:0"
LOOPBACK_INTERFACES = ("127.0.0.1",)


def with_host_defaults(options: ProxyOptions) -> ProxyOptions:
    """Fill in what the options left to the host: the inbound listener on the host's address
    (the wildcard when the address was advertised, e.g. behind NAT), peers told that address when
    the listener binds a wildcard, zeroconf on the host's interface. Idempotent."""
    from mesh.discovery import format_address
    from mesh.home import read_host_record

    if options.inbound is not None and options.interfaces is not None and options.advertise is not None:
        return options
    record = read_host_record(options.home)
    address = record.address if record is not None else None
    inbound = options.inbound
    if inbound is None:
        inbound = format_address(record.bind or address, 0) if record is not None and address else LOOPBACK_INBOUND
    advertise = options.advertise
    if advertise is None and address is not None and parse_listen_address(inbound, "--inbound")[0] in ("0.0.0.0", "::"):
        advertise = address
    interfaces = options.interfaces
    if interfaces is None:
        interface = record.zeroconf_interface if record is not None else None
        interfaces = (interface,) if interface else LOOPBACK_INTERFACES
    return replace(options, inbound=inbound, advertise=advertise, interfaces=interfaces)


def parse_listen_address(text: str, what: str, allow_any_port: bool = True) -> tuple[str, int]:
    """HOST:PORT; port 0 (any free port) only where we listen."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535 or (int(port) == 0 and not allow_any_port):
        raise ProxyError(f"{what}: invalid address {text!r}", hint="write it as HOST:PORT, e.g. 127.0.0.1:4140")
    return host, int(port)


def admin_address(text: str) -> tuple[str, int]:
    """``--admin``: loopback only. The admin server answers without authentication (metrics,
    config, tap); what other hosts need of it (the controller, operators) goes over mTLS."""
    from mesh.discovery import is_loopback

    host, port = parse_listen_address(text, "--admin")
    if not is_loopback(host):
        raise ProxyError(
            f"--admin {text}: the admin server listens on loopback only (it answers anyone who reaches it)",
            hint="use --admin 127.0.0.1:PORT; the controller reads proxies on other hosts over mTLS at their "
            "inbound address (`mesh tap`, `mesh stat`), and `mesh check --proxy` does too",
        )
    return host, port


def parse_pairs(items: list[str] | tuple[str, ...], what: str, example: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ProxyError(f"{what}: expected {example}, found {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def settings_from(options: ProxyOptions) -> ProxySettings:
    from mesh.config import APP_PROTOCOLS, SERVICE_NAME_RULE, is_valid_service_name, parse_duration

    options = with_host_defaults(options)
    assert options.inbound is not None
    if not is_valid_service_name(options.service):
        raise ProxyError(f"--service: invalid service name {options.service!r}", hint=f"use {SERVICE_NAME_RULE}")
    if options.protocol not in APP_PROTOCOLS:
        raise ProxyError(
            f"--protocol: unknown protocol {options.protocol!r}",
            hint=f"one of {', '.join(APP_PROTOCOLS)} (auto detects; declare http or tcp to be sure)",
        )
    upstreams: dict[str, tuple[str, int]] = {}
    for name, port in parse_pairs(options.upstreams, "--upstream", "SVC=PORT, e.g. web=9001").items():
        if not is_valid_service_name(name):
            raise ProxyError(f"--upstream: invalid service name {name!r}", hint=f"use {SERVICE_NAME_RULE}")
        if not port.isdigit() or int(port) > 65535:
            raise ProxyError(
                f"--upstream: invalid port {port!r} for {name}", hint="a port is 1-65535 (0: any free port)"
            )
        upstreams[name] = ("127.0.0.1", int(port))
    durations: dict[str, float] = {}
    for option in ("request_timeout", "idle_timeout", "head_timeout", "body_timeout", "drain_timeout"):
        text = getattr(options, option)
        try:
            durations[option] = parse_duration(text)
        except (ConfigError, ValueError):
            flag = "--" + option.replace("_", "-")
            raise ProxyError(f"{flag}: invalid duration {text!r}", hint="write durations like 250ms, 10s, 5m") from None
    if options.endpoints is not None and not options.endpoints.exists():
        raise ProxyError(f"--endpoints: {options.endpoints} does not exist")
    telemetry = telemetry_settings(options.otlp_endpoint, options.trace_sample, options.access_log)
    return ProxySettings(
        service=options.service,
        app=parse_listen_address(options.app, "--app", allow_any_port=False),
        inbound=parse_listen_address(options.inbound, "--inbound"),
        outbound=parse_listen_address(options.outbound, "--outbound"),
        admin=admin_address(options.admin),
        endpoints_file=options.endpoints,
        upstreams=upstreams,
        labels=parse_pairs(options.labels, "--label", "k=v, e.g. version=v1"),
        timeouts=Timeouts(**durations),
        protocol=options.protocol,
        telemetry=telemetry,
    )


def telemetry_settings(otlp_endpoint: str | None, trace_sample: str, access_log: str | None) -> TelemetrySettings:
    """``--otlp-endpoint``, ``--trace-sample`` and ``--access-log``, checked as mesh.toml's ``[telemetry]`` is."""
    from mesh.config import (
        ACCESS_LOG_EXPECTED,
        SAMPLE_EXPECTED,
        OtlpEndpointError,
        is_valid_access_log,
        parse_otlp_endpoint,
        parse_sample_rate,
    )

    endpoint = None
    if otlp_endpoint is not None:
        try:
            endpoint = parse_otlp_endpoint(otlp_endpoint)
        except OtlpEndpointError as exc:
            raise ProxyError(f"--otlp-endpoint: expected {exc}, found {otlp_endpoint!r}") from None
    try:
        sample = parse_sample_rate(trace_sample)
    except ValueError:
        raise ProxyError(f"--trace-sample: expected {SAMPLE_EXPECTED}, found {trace_sample!r}") from None
    if access_log is not None:
        if not is_valid_access_log(access_log):
            raise ProxyError(f"--access-log: expected {ACCESS_LOG_EXPECTED}, found {access_log!r}")
        if access_log != "-":
            access_log = os.path.abspath(access_log)
    return TelemetrySettings(endpoint, sample, access_log)


async def issue_locally(options: ProxyOptions, ttl: timedelta) -> Any:
    """No controller: a key and certificate from MESH_HOME's CA (single-host development), made by
    the identity helper process (the CA needs cryptography; this process never loads it)."""
    from mesh.identity import IssuedCredentials
    from mesh.proxy._identity import ask_identity_helper

    if not options.home.has_ca():
        raise IdentityError(
            f"no certificate given, no controller and no CA in {options.home.root}",
            hint="run `mesh up` (or `mesh ca init`), or pass --cert/--key/--bundle",
        )
    issued = await ask_identity_helper(
        {"op": "issue", "home": str(options.home.root), "service": options.service, "ttl_seconds": ttl.total_seconds()}
    )
    return IssuedCredentials.from_pem(issued["chain"].encode(), issued["key"].encode(), issued["bundle"].encode())


async def credentials_from_files(options: ProxyOptions) -> Any | None:
    """``--cert/--key/--bundle``: read once here, checked by the identity helper (cryptography), and
    what was checked is what is served."""
    from mesh.identity import IssuedCredentials, read_credential_files, trust_domains_of
    from mesh.proxy._identity import ask_identity_helper

    given = [p for p in (options.cert, options.key, options.bundle) if p is not None]
    if not given:
        return None
    if len(given) != 3:
        raise IdentityError("--cert, --key and --bundle go together", hint="give all three, or none")
    paths = {"cert_path": options.cert, "key_path": options.key, "bundle_path": options.bundle}
    chain_pem, key_pem, bundle_pem = read_credential_files(*paths.values())  # type: ignore[arg-type]
    await ask_identity_helper(
        {
            "op": "check",
            **{name: str(path) for name, path in paths.items()},
            **{
                name: pem.decode("latin-1")
                for name, pem in (("chain_pem", chain_pem), ("key_pem", key_pem), ("bundle_pem", bundle_pem))
            },
        }
    )
    creds = IssuedCredentials.from_pem(chain_pem, key_pem, bundle_pem)
    if creds.identity.name != options.service:
        raise IdentityError(
            f"the certificate is for {creds.identity}, not for service {options.service!r}",
            hint=f"issue one with `mesh ca issue {options.service}`",
        )
    domains = set(trust_domains_of(creds.bundle_pem, source=str(options.bundle)))
    if creds.identity.trust_domain not in domains:
        raise IdentityError(
            f"the certificate is for {creds.identity}, but {options.bundle} trusts the trust domain "
            f"{', '.join(sorted(domains))}: every peer would refuse it",
            hint=f"issue one with `mesh ca issue {options.service}` on the host of this mesh's CA",
        )
    return creds


async def obtain_identity(options: ProxyOptions, controllers: list[Any], ttl: timedelta | None) -> Any:
    """Files first; else a controller (CSR with the join token; the next one if it is down); else the local CA."""
    from mesh.proxy._control import read_join_token, request_certificate

    creds = await credentials_from_files(options)
    if creds is not None:
        return creds
    failure: ControllerError | IdentityError | None = None
    for controller in controllers:
        try:
            return await request_certificate(
                controller, options.service, token=read_join_token(options.home, options.token), current=None, ttl=ttl
            )
        except (ControllerError, IdentityError) as exc:
            failure = exc
            if isinstance(exc, IdentityError):
                break  # refused (a wrong token): another controller of the mesh would refuse too
    if failure is not None:
        if not options.home.has_ca():
            raise failure
        log.warning("%s; issuing a certificate from the local CA instead", failure.message)
    return await issue_locally(options, ttl or timedelta(hours=24))


def run_proxy_command(options: ProxyOptions) -> int | None:
    """Run the proxy (or, with ``workers`` > 1, its workers); the exit status."""
    settings = settings_from(options)

    def run_one(settings: ProxySettings, worker: int) -> None:
        async def main() -> None:
            proxy = await build_proxy(options, settings)
            if worker == 0:  # a standalone sidecar: the app is already there. One worker advertises.
                proxy.app_ready.set()
            await proxy.run()

        trio.run(main)

    return run_in_workers(options.workers, settings, run_one)


MAX_WORKERS = 64


def parse_workers(text: int | str) -> int:
    """``--workers``: a whole number from 1 to 64."""
    value = str(text).strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise ProxyError(
            f"--workers: expected a whole number from 1 to {MAX_WORKERS}, found {text!r}",
            hint=f"one worker process per CPU is the usual choice (this machine has {os.cpu_count() or 1})",
        )
    return int(value)


def run_in_workers(workers: int | str, settings: ProxySettings, run_one: Any) -> int | None:
    """``run_one(settings, 0)`` here, or ``workers`` processes running it (mesh/proxy/_workers.py)."""
    count = parse_workers(workers)
    if count == 1:
        run_one(settings, 0)
        return None
    from mesh.proxy._workers import run_workers

    return run_workers(count, settings, run_one)


def _cert_ttl(options: ProxyOptions) -> timedelta | None:
    if options.cert_ttl is None:
        return None
    from mesh.config import parse_duration
    from mesh.identity import MIN_LEAF_TTL

    try:
        ttl = timedelta(seconds=parse_duration(options.cert_ttl))
    except (ConfigError, ValueError):
        raise ProxyError(f"--cert-ttl: invalid duration {options.cert_ttl!r}", hint="e.g. 60s, 1h, 24h") from None
    if ttl < MIN_LEAF_TTL:
        least = f"{MIN_LEAF_TTL.total_seconds():g}s"
        raise ProxyError(
            f"--cert-ttl {options.cert_ttl}: certificates must live at least {least}",
            hint=f"use --cert-ttl {least} or longer (the default is 24h); it is renewed at 70 % of its life",
        )
    return ttl


async def build_proxy(options: ProxyOptions, settings: ProxySettings) -> Proxy:
    """Identity, registries, controller link and zeroconf, wired into a Proxy (not yet running)."""
    from mesh.discovery import CompositeRegistry, MemoryRegistry, StaticFileRegistry, controllers_from_home
    from mesh.identity import mesh_ids
    from mesh.proxy._control import ControlLink

    options = with_host_defaults(options)
    ttl = _cert_ttl(options)
    controllers = controllers_from_home(options.home, options.controller)
    if not controllers and options.zeroconf:
        found = await _controller_by_zeroconf(options)
        controllers = [found] if found is not None else []
    creds = await obtain_identity(options, controllers, ttl)
    parts: list[Any] = []
    if settings.endpoints_file is not None:
        parts.append(StaticFileRegistry(settings.endpoints_file))
    view = MemoryRegistry()
    parts.append(view)
    zeroconf = None
    ours = mesh_ids(creds.bundle_pem)  # records of another mesh (another CA) are never endpoints
    if options.zeroconf:
        from mesh.discovery import ZeroconfRegistry

        assert options.interfaces is not None
        zeroconf = ZeroconfRegistry(
            interfaces=options.interfaces, trust_domain=creds.identity.trust_domain, mesh_ids=ours
        )
        parts.append(zeroconf)
    proxy = Proxy(settings, Identity(creds), CompositeRegistry(parts))
    proxy.advertise_host = options.advertise
    instance = f"{settings.service[:48]}-{os.urandom(3).hex()}"
    if controllers:
        link = ControlLink(proxy, controllers, view, instance, leaf_ttl=ttl)
        proxy.control = link
        proxy.background.append(link.run)
        proxy.shutdown_hooks.append(link.withdraw)
    elif ttl is not None:
        proxy.background.append(lambda: _renew_locally(proxy, options, ttl))
    if zeroconf is not None and settings.app is not None:  # nobody calls a gateway: never advertised
        from mesh.discovery import new_instance_name

        # Chosen now, so the registration names it: should this proxy die, the controller says goodbye for it.
        proxy.zeroconf_instance = new_instance_name(settings.service)
        _advertise(proxy, options, ours[0])
    return proxy


async def _controller_by_zeroconf(options: ProxyOptions) -> Any:
    """No controller.json: look for `_mesh-ctl._tcp`, trusting it only through the bundle we hold."""
    from mesh.discovery import ControllerAddress, find_controller
    from mesh.identity import SpiffeId, mesh_ids, trust_domains_of

    bundle_path = options.home.bundle
    if not bundle_path.exists():
        return None
    # Only a controller of our own mesh: others on the same LAN (or laptop) are ignored.
    bundle = bundle_path.read_bytes()
    trust_domain = trust_domains_of(bundle)[0]
    assert options.interfaces is not None
    record = await find_controller(
        options.interfaces, timeout=1.5, trust_domain=trust_domain, mesh_ids=mesh_ids(bundle)
    )
    if record is None:
        return None
    log.info("found the controller at %s:%d by zeroconf", record.host, record.port)
    SpiffeId.parse(record.identity)
    return ControllerAddress(record.host, record.port, record.identity, bundle_path.read_bytes())


def _advertise(proxy: Proxy, options: ProxyOptions, mesh: str) -> None:
    from mesh import __version__
    from mesh.discovery import MeshServiceRecord, ZeroconfAdvertiser

    assert options.interfaces is not None
    advertiser = ZeroconfAdvertiser(interfaces=options.interfaces)
    record: list[Any] = []

    async def advertise() -> None:
        await proxy.app_ready.wait()
        assert proxy.bound is not None
        host, port = proxy.advertised_inbound()
        record.append(
            MeshServiceRecord(
                service=proxy.settings.service,
                identity=str(proxy.identity.creds.identity),
                host=host,
                port=port,
                labels=tuple(dict(proxy.settings.labels).items()),
                admin_port=proxy.bound.admin[1],
                version=__version__,
                protocol=proxy.settings.protocol,
                mesh=mesh,
                instance=proxy.zeroconf_instance,
            )
        )
        await advertiser.advertise(record[0])

    async def withdraw() -> None:
        await advertiser.aclose()

    proxy.background.append(advertise)
    proxy.shutdown_hooks.append(withdraw)


async def _renew_locally(proxy: Proxy, options: ProxyOptions, ttl: timedelta) -> None:
    from mesh.proxy._control import keep_renewed

    async def from_local_ca(current: Any) -> Any:
        return await issue_locally(options, ttl)

    await keep_renewed(proxy, from_local_ca)
