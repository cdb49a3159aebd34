"""From `mesh proxy` options to a running proxy: parse, get an identity, run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio

from mesh.errors import ConfigError, IdentityError, ProxyError
from mesh.home import MeshHome
from mesh.proxy._http import Limits
from mesh.proxy._server import Identity, Proxy, ProxySettings


@dataclass(frozen=True)
class ProxyOptions:
    home: MeshHome
    service: str
    app: str
    inbound: str = "127.0.0.1:0"
    outbound: str = "127.0.0.1:0"
    admin: str = "127.0.0.1:0"
    endpoints: Path | None = None
    upstreams: list[str] | tuple[str, ...] = ()
    labels: list[str] | tuple[str, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    bundle: Path | None = None
    request_timeout: str = "10s"
    idle_timeout: str = "5m"
    head_timeout: str = "10s"
    drain_timeout: str = "10s"


def parse_listen_address(text: str, what: str, allow_any_port: bool = True) -> tuple[str, int]:
    """HOST:PORT; port 0 (any free port) only where we listen."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535 or (int(port) == 0 and not allow_any_port):
        raise ProxyError(f"{what}: invalid address {text!r}", hint="write it as HOST:PORT, e.g. 127.0.0.1:4140")
    return host, int(port)


def parse_pairs(items: list[str] | tuple[str, ...], what: str, example: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ProxyError(f"{what}: expected {example}, found {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def settings_from(options: ProxyOptions) -> ProxySettings:
    from mesh.config import is_valid_service_name, parse_duration, SERVICE_NAME_RULE

    if not is_valid_service_name(options.service):
        raise ProxyError(f"--service: invalid service name {options.service!r}", hint=f"use {SERVICE_NAME_RULE}")
    upstreams: dict[str, int] = {}
    for name, port in parse_pairs(options.upstreams, "--upstream", "SVC=PORT, e.g. web=9001").items():
        if not is_valid_service_name(name):
            raise ProxyError(f"--upstream: invalid service name {name!r}", hint=f"use {SERVICE_NAME_RULE}")
        if not port.isdigit() or int(port) > 65535:
            raise ProxyError(f"--upstream: invalid port {port!r} for {name}", hint="a port is 1-65535 (0: any free port)")
        upstreams[name] = int(port)
    durations: dict[str, float] = {}
    for option in ("request_timeout", "idle_timeout", "head_timeout", "drain_timeout"):
        text = getattr(options, option)
        try:
            durations[option] = parse_duration(text)
        except (ConfigError, ValueError):
            flag = "--" + option.replace("_", "-")
            raise ProxyError(f"{flag}: invalid duration {text!r}", hint="write durations like 250ms, 10s, 5m") from None
    if options.endpoints is not None and not options.endpoints.exists():
        raise ProxyError(f"--endpoints: {options.endpoints} does not exist")
    return ProxySettings(
        service=options.service,
        app=parse_listen_address(options.app, "--app", allow_any_port=False),
        inbound=parse_listen_address(options.inbound, "--inbound"),
        outbound=parse_listen_address(options.outbound, "--outbound"),
        admin=parse_listen_address(options.admin, "--admin"),
        endpoints_file=options.endpoints,
        upstreams=upstreams,
        labels=parse_pairs(options.labels, "--label", "k=v, e.g. version=v1"),
        limits=Limits(**durations),
    )


def load_identity(options: ProxyOptions) -> Any:
    """Credentials from --cert/--key/--bundle, else freshly issued by MESH_HOME's CA (key stays in memory)."""
    from mesh.identity import CertificateAuthority, generate_key, key_to_pem, load_credentials, make_csr
    from mesh.identity import IssuedCredentials, load_certificates, service_identity

    given = [p for p in (options.cert, options.key, options.bundle) if p is not None]
    if given:
        if len(given) != 3:
            raise IdentityError("--cert, --key and --bundle go together", hint="give all three, or none")
        creds = load_credentials(options.cert, options.key, options.bundle)  # type: ignore[arg-type]
        if creds.identity.name != options.service:
            raise IdentityError(
                f"the certificate is for {creds.identity}, not for service {options.service!r}",
                hint=f"issue one with `mesh ca issue {options.service}`",
            )
        return creds
    if not options.home.has_ca():
        raise IdentityError(
            f"no certificate given and no CA in {options.home.root}",
            hint="run `mesh ca init` (or `mesh up`), or pass --cert/--key/--bundle",
        )
    ca = CertificateAuthority.load(options.home)
    identity = service_identity(ca.trust_domain, options.service)
    key = generate_key()
    chain = ca.sign_csr(make_csr(key, identity), identity, timedelta(hours=24))
    return IssuedCredentials(
        identity=identity,
        cert_chain_pem=chain,
        key_pem=key_to_pem(key),
        bundle_pem=ca.bundle_pem,
        not_after=load_certificates(chain)[0].not_valid_after_utc,
    )


def make_registry(settings: ProxySettings) -> Any:
    from mesh.discovery import MemoryRegistry, StaticFileRegistry

    if settings.endpoints_file is not None:
        return StaticFileRegistry(settings.endpoints_file)
    return MemoryRegistry()


def run_proxy_command(options: ProxyOptions) -> None:
    settings = settings_from(options)
    creds = load_identity(options)
    proxy = Proxy(settings, Identity(creds), make_registry(settings))
    trio.run(proxy.run)
