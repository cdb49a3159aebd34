"""The verdicts of `mesh check`: pure functions from facts to a CheckResult.

No file, socket or clock is touched here: the I/O side (``_checks``) gathers
the facts and passes ``now`` in, so each rule is tested with plain values.
Every result says what was found; every warning or failure says what to do.

It is one long file on purpose: every function has the same shape (facts in, a
CheckResult out) and no rule calls another module's I/O, so splitting it would
only scatter the wording of `mesh check` that readers compare side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mesh.debug.check._model import CheckResult

MIN_PYTHON = (3, 11)
CA_WARN_BELOW = timedelta(days=60)
OPERATOR_WARN_BELOW = timedelta(days=30)
GATEWAY_CERT_WARN_BELOW = timedelta(days=30)  # the operator's own certificates, at the gateways
SKEW_WARN_SECONDS = 5.0
SKEW_FAIL_SECONDS = 60.0  # certificates start 60 s in the past (CLOCK_SKEW): beyond that, fresh ones are refused
PROXY_MIN_LIFE_LEFT = 0.10

REINSTALL_HINT = "reinstall mesh with its dependencies: ./install.sh (or pip install -e . in its virtualenv)"
RESTORE_CA_HINT = "restore MESH_HOME/ca from a backup, or start over with `mesh ca init --force` (re-issues everything)"
START_HINT = "start it with `mesh up --detach`"


def human(delta: timedelta) -> str:
    """Two most significant units: ``364d 23h``, ``23h 59m``, ``4m 10s``, ``9s``."""
    seconds = int(abs(delta.total_seconds()))
    parts: list[str] = []
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount or parts:
            parts.append(f"{amount}{suffix}")
        if len(parts) == 2:
            break
    if len(parts) == 2 and parts[1][0] == "0":
        parts.pop()
    return " ".join(parts) or "0s"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


# -- environment ---------------------------------------------------------------------


def python_version(version: Sequence[int]) -> CheckResult:
    text = ".".join(str(v) for v in version[:3])
    need = ".".join(str(v) for v in MIN_PYTHON)
    if tuple(version[:2]) >= MIN_PYTHON:
        return CheckResult.ok(f"Python {text} (mesh needs {need} or newer)")
    return CheckResult.fail(
        f"Python {text} is too old: mesh needs {need} or newer",
        f"install Python {need}+ and run ./install.sh again (it picks the newest python3.1x on PATH)",
    )


def dependencies(versions: Mapping[str, str], errors: Mapping[str, str]) -> CheckResult:
    """``versions``: what imported (name -> version); ``errors``: what did not (name -> why)."""
    if errors:
        missing = "; ".join(f"{name}: {why}" for name, why in errors.items())
        return CheckResult.fail(f"cannot import {', '.join(errors)} ({missing})", REINSTALL_HINT)
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    return CheckResult.ok(f"dependencies import ({listed})")


@dataclass(frozen=True, slots=True)
class HomeFacts:
    path: Path
    exists: bool
    is_dir: bool = False
    writable: bool = False
    mode: int | None = None  # permission bits
    # The nearest existing ancestor when ``path`` does not exist, and whether it is writable.
    ancestor: Path | None = None
    ancestor_writable: bool = False


def mesh_home(facts: HomeFacts, *, pre: bool) -> CheckResult:
    path = facts.path
    if not facts.exists:
        if not pre:
            return CheckResult.fail(
                f"MESH_HOME {path} does not exist",
                "`mesh up --detach` creates it and starts the mesh (`mesh check --pre` checks a host "
                "before that), or point --home / MESH_HOME at the right directory",
            )
        if facts.ancestor is not None and facts.ancestor_writable:
            return CheckResult.ok(f"MESH_HOME {path} does not exist yet; `mesh up` can create it in {facts.ancestor}")
        where = facts.ancestor or path.parent
        return CheckResult.fail(
            f"MESH_HOME {path} cannot be created: {where} is not writable",
            "choose a writable MESH_HOME with --home DIR or MESH_HOME=DIR",
        )
    if not facts.is_dir:
        return CheckResult.fail(
            f"MESH_HOME {path} is not a directory",
            "move that file away, or point --home / MESH_HOME at a directory",
        )
    if not facts.writable:
        return CheckResult.fail(
            f"MESH_HOME {path} is not writable",
            "run mesh as the user who owns it, or choose another MESH_HOME with --home DIR",
        )
    mode = facts.mode or 0
    if mode & 0o077:
        return CheckResult.warn(
            f"MESH_HOME {path} is {_open_to(mode)} (mode {mode:04o}); it holds private keys",
            f"chmod 700 {path}",
        )
    return CheckResult.ok(f"MESH_HOME {path} is writable and private (mode {mode:04o})")


def _open_to(mode: int) -> str:
    who = [name for name, bits in (("group", 0o070), ("others", 0o007)) if mode & bits]
    verb = "readable" if mode & 0o044 else "accessible"
    return f"{verb} by {' and '.join(who)}"


def port_free(address: str, error: OSError | None) -> CheckResult:
    if error is None:
        return CheckResult.ok(f"the controller's address {address} is free")
    if error.errno == 98:  # EADDRINUSE
        return CheckResult.fail(
            f"the controller's address {address} is in use",
            "is a mesh already running here? `mesh status` shows it and `mesh down` stops it; "
            "or choose another address: `mesh up --listen HOST:PORT`",
        )
    return CheckResult.fail(
        f"cannot listen on {address}: {error.strerror or error}",
        "choose an address of this host: `mesh up --listen HOST:PORT`",
    )


def on_path(found: str | None, this_one: str | None) -> CheckResult:
    """``found``: ``shutil.which("mesh")``; ``this_one``: the executable of the running install, if any."""
    bin_dir = str(Path(this_one).parent) if this_one else None
    if found is None:
        return CheckResult.warn(
            "`mesh` is not on PATH",
            (f"add {bin_dir} to PATH" if bin_dir else "add the directory of the mesh executable to PATH")
            + " (./install.sh links it into ~/.local/bin), or run `python -m mesh`",
        )
    if this_one and Path(found).resolve() != Path(this_one).resolve():
        return CheckResult.warn(
            f"`mesh` on PATH is {found}, not this installation ({this_one})",
            f"put {bin_dir} first on PATH, or remove the other installation",
        )
    return CheckResult.ok(f"`mesh` is on PATH ({found})")


# -- certificates ------------------------------------------------------------------


def cert_validity(
    what: str,
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    *,
    warn_below: timedelta,
    hint: str,
) -> CheckResult:
    """``what``: e.g. "root certificate". Invalid now fails; under ``warn_below`` left warns."""
    if now < not_before:
        return CheckResult.fail(
            f"{what} is not valid before {iso(not_before)} ({human(not_before - now)} from now)",
            "check this host's clock (NTP)",
        )
    left = not_after - now
    if left <= timedelta(0):
        return CheckResult.fail(f"{what} expired {human(left)} ago (on {iso(not_after)})", hint)
    if left < warn_below:
        return CheckResult.warn(f"{what} expires in {human(left)} (on {iso(not_after)})", hint)
    return CheckResult.ok(f"{what} is valid for {human(left)} more (until {not_after:%Y-%m-%d})")


def chain(what: str, ok: bool, line: str, hint: str = RESTORE_CA_HINT) -> CheckResult:
    if ok:
        return CheckResult.ok(f"{what} verifies: {line}")
    return CheckResult.fail(f"{what} does not verify: {line}", hint)


@dataclass(frozen=True, slots=True)
class FileMode:
    path: Path
    mode: int  # permission bits
    is_dir: bool = False

    @property
    def wanted(self) -> int:
        return 0o700 if self.is_dir else 0o600

    @property
    def loose(self) -> bool:
        return bool(self.mode & 0o077)


def key_permissions(files: Sequence[FileMode], home: Path) -> CheckResult:
    def name(path: Path) -> str:
        try:
            return str(path.relative_to(home))
        except ValueError:
            return str(path)

    loose = [f for f in files if f.loose]
    if not loose:
        names = ", ".join(name(f.path) + ("/" if f.is_dir else "") for f in files)
        return CheckResult.ok(f"private files are owner-only ({names})")
    found = ", ".join(f"{name(f.path)}{'/' if f.is_dir else ''} is {f.mode:04o}" for f in loose)
    commands = []
    for wanted, kind in ((0o600, False), (0o700, True)):
        paths = [str(f.path) for f in loose if f.is_dir == kind]
        if paths:
            commands.append(f"chmod {wanted:o} {' '.join(paths)}")
    return CheckResult.warn(f"private files are open to group or others: {found}", "; ".join(commands))


def bundle_has_root(bundle_fingerprints: Sequence[str], root_fingerprint: str) -> CheckResult:
    anchors = plural(len(bundle_fingerprints), "trust anchor")
    if root_fingerprint in bundle_fingerprints:
        return CheckResult.ok(f"ca/bundle.pem holds the root ({anchors})")
    return CheckResult.fail(
        f"ca/bundle.pem ({anchors}) does not hold the root {root_fingerprint[:23]}...: "
        "peers would not trust this CA's certificates",
        "add the root to the bundle (cat ca/root.pem >> ca/bundle.pem) or " + RESTORE_CA_HINT.split(", ", 1)[0],
    )


# -- control plane -----------------------------------------------------------------


def controller_unreachable(
    address: str, error: str, *, pid: int | None, pid_alive: bool | None, log_path: Path
) -> CheckResult:
    message = f"cannot connect to the controller at {address}: {error}"
    if pid is not None and pid_alive is False:
        message += f"; its process (pid {pid}) is gone"
    elif pid is not None and pid_alive:
        message += f"; its process (pid {pid}) is alive but does not accept connections"
    return CheckResult.fail(
        message,
        f"{START_HINT}; if it was killed, the end of {log_path} says why "
        "(`mesh status` works again once it is back; proxies keep their last config meanwhile)",
    )


def version_match(controller_version: str, cli_version: str) -> CheckResult:
    if controller_version == cli_version:
        return CheckResult.ok(f"the controller runs mesh {controller_version}, like this CLI")
    return CheckResult.warn(
        f"the controller runs mesh {controller_version}, this CLI is {cli_version}",
        "restart the controller with this version (`mesh down && mesh up --detach`), or use the matching CLI",
    )


def clock_skew(skew: float, uncertainty: float) -> CheckResult:
    """``skew``: controller time minus local time, seconds; ``uncertainty``: half the round trip."""
    size = abs(skew)
    text = f"{size:.2f} s (controller {'ahead' if skew > 0 else 'behind'}, +/-{uncertainty:.2f} s)"
    hint = "synchronise the clocks of both hosts (NTP)"
    if size - uncertainty >= SKEW_FAIL_SECONDS:
        return CheckResult.fail(
            f"clock skew with the controller is {text}: fresh certificates look not yet valid",
            hint,
        )
    if size - uncertainty >= SKEW_WARN_SECONDS:
        return CheckResult.warn(f"clock skew with the controller is {text}, over {SKEW_WARN_SECONDS:g} s", hint)
    return CheckResult.ok(f"clock skew with the controller is {size:.2f} s (under {SKEW_WARN_SECONDS:g} s)")


def status_summary(status: Mapping[str, Any]) -> CheckResult:
    controller = status.get("controller", {})
    services = status.get("services", {})
    endpoints = sum(len(v) for v in services.values())
    watching = len(status.get("watches", []))
    return CheckResult.ok(
        f"GET /v1/status: {plural(len(services), 'service')}, {plural(endpoints, 'endpoint')}, "
        f"{plural(watching, 'proxy', 'proxies')} watching (state version {controller.get('state_version')}, "
        f"config version {controller.get('config_version')})"
    )


# -- discovery -----------------------------------------------------------------------


def zeroconf(ok: bool, line: str) -> CheckResult:
    if ok:
        return CheckResult.ok(f"zeroconf works: {line}")
    return CheckResult.fail(
        f"zeroconf does not work: {line}",
        "proxies cannot find each other by mDNS here: allow multicast (224.0.0.251:5353) on these "
        'interfaces, or use static discovery ([discovery] mode = "static" with an endpoints file)',
    )


@dataclass(frozen=True, slots=True)
class Advert:
    """A ``_mesh-ctl._tcp`` record, as found."""

    host: str
    port: int
    identity: str
    version: str


def controller_advert(
    found: Advert | None,
    *,
    expected_port: int,
    expected_identity: str,
    where: str,
    timeout: float,
    joined: bool = False,
) -> CheckResult:
    if found is None and joined:
        return CheckResult.ok(
            f"no _mesh-ctl._tcp record of this mesh seen on {where}; not needed here: this host joined "
            "and knows the controller from controller.json"
        )
    if found is None:
        return CheckResult.warn(
            f"no _mesh-ctl._tcp record of this mesh seen on {where} within {timeout:g} s",
            "hosts without controller.json cannot find the controller by mDNS; the controller log "
            "(MESH_HOME/run/controller.log) says whether its zeroconf started",
        )
    if found.port != expected_port or found.identity != expected_identity:
        return CheckResult.warn(
            f"zeroconf finds a controller at {found.host}:{found.port} ({found.identity}), but "
            f"controller.json names port {expected_port} ({expected_identity})",
            "two controllers of one trust domain? `mesh status` shows the one this CLI talks to",
        )
    return CheckResult.ok(
        f"the controller advertises itself over zeroconf on {where} ({found.host}:{found.port}, mesh {found.version})"
    )


# -- data plane ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyFacts:
    """What the CLI learned about one proxy instance: its admin pages and certificate, read over
    mTLS at its inbound listener (ALPN mesh-admin, as the operator)."""

    admin: str  # host:port of the inbound listener
    ready_status: int | None = None  # HTTP status of GET /ready
    ready_error: str | None = None
    config: Mapping[str, Any] | None = None  # GET /config
    config_error: str | None = None
    # The certificate the inbound listener presents (mTLS as the operator).
    tls_identity: str | None = None
    tls_not_before: datetime | None = None
    tls_not_after: datetime | None = None
    tls_error: str | None = None


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def proxy_label(service: str, entry: Mapping[str, Any]) -> str:
    instance = entry.get("instance") or "?"
    return f"{service} {entry.get('address')} ({instance})"


def _config_page(entry: Mapping[str, Any]) -> str:
    """Where a person looks next: the admin server answers on the proxy's own host only."""
    port = entry.get("admin_port") or "ADMIN_PORT"
    return f"its admin server's /config (on its host: curl http://127.0.0.1:{port}/config)"


def proxy(
    service: str,
    entry: Mapping[str, Any],
    facts: ProxyFacts,
    *,
    state_version: int,
    cli_version: str,
    now: datetime,
    default_life: timedelta = timedelta(hours=24),
    config_version: int | None = None,
    controller_address: str | None = None,
) -> CheckResult:
    """One line for one proxy instance: ready, certificate, config, version; the worst decides.

    ``config_version`` and ``controller_address`` are the checked controller's: a proxy that
    watches another controller of the mesh is current when its config version is.
    """
    label = proxy_label(service, entry)
    failures: list[tuple[str, str]] = []  # (what, hint)
    warnings: list[tuple[str, str]] = []
    good: list[str] = []

    # reachability: a proxy that answers nowhere is gone; say that once, not three ways
    if facts.ready_error is not None and facts.tls_error is not None:
        return CheckResult.fail(
            f"{label}: nothing answers at its inbound listener {facts.admin} ({facts.tls_error}): the proxy is gone",
            "a proxy that died without a goodbye stays registered until its lease runs out (30 s); "
            "if it should be running, its log says why it stopped",
        )
    # readiness
    if facts.ready_error is not None:
        failures.append(
            (
                f"its admin pages at {facts.admin} do not answer ({facts.ready_error})",
                "is the proxy hung? its log says more; a dead proxy's registration expires within 30 s",
            )
        )
    elif facts.ready_status is None:
        pass  # not read: the mTLS failure below says why
    elif facts.ready_status != 200:
        failures.append(
            (
                f"GET /ready answered {facts.ready_status} (draining or not started)",
                f"see the proxy's log; {_config_page(entry)} shows its state",
            )
        )
    else:
        good.append("ready")

    config = facts.config or {}
    # certificate: presented identity and freshness
    expected_identity = entry.get("identity")
    if facts.tls_error is not None:
        failures.append(
            (
                f"mTLS to its inbound listener failed ({facts.tls_error})",
                "peers cannot reach it either: check that it uses this mesh's CA (restart it to get a fresh certificate)",
            )
        )
    elif expected_identity and facts.tls_identity and facts.tls_identity != expected_identity:
        failures.append(
            (
                f"its inbound presents {facts.tls_identity}, but it registered as {expected_identity}",
                "another process took over its address? restart the proxy",
            )
        )
    not_after = (
        _parse_time(config.get("certificate_expiry")) or facts.tls_not_after or _parse_time(entry.get("cert_expiry"))
    )
    if not_after is None:
        warnings.append(("certificate expiry unknown", f"see {_config_page(entry)}"))
    else:
        if facts.tls_not_before is not None and facts.tls_not_after is not None:
            life = facts.tls_not_after - facts.tls_not_before
        else:
            life = default_life
        left = not_after - now
        fraction = left / life if life > timedelta(0) else 0.0
        if left <= timedelta(0):
            failures.append(
                (
                    f"certificate expired {human(left)} ago",
                    "it could not renew: is the controller reachable from it? restarting the proxy gets a fresh one",
                )
            )
        elif fraction < PROXY_MIN_LIFE_LEFT:
            failures.append(
                (
                    f"certificate has {human(left)} left ({fraction:.0%} of its life)",
                    "it should have renewed at 70 % of its life: is the controller reachable from it? "
                    "its log says why; restarting the proxy gets a fresh certificate",
                )
            )
        else:
            good.append(f"certificate {human(left)} left")

    # config: does it run with the controller's latest snapshot?
    control = config.get("controller") if facts.config is not None else None
    acked = entry.get("acked_version")
    snapshot = control.get("snapshot_version") if isinstance(control, Mapping) else None
    if facts.config is None and facts.config_error is not None:
        if acked == state_version:
            good.append(f"config current (v{state_version})")
        else:
            warnings.append((f"GET /config failed ({facts.config_error})", f"see {_config_page(entry)}"))
    elif isinstance(control, Mapping) and not control.get("connected"):
        failures.append(
            (
                f"not connected to the controller (serving with snapshot {snapshot})",
                "it retries with backoff; its log says why it cannot connect",
            )
        )
    elif isinstance(control, Mapping) and isinstance(control.get("refused"), Mapping):
        refused = control["refused"]
        warnings.append(
            (
                f"kept config version {refused.get('kept_version')}: the controller at {refused.get('controller')} "
                f"offers the older version {refused.get('config_version')}",
                "a controller that lost its store? restore the store from a backup (docs/operations.md, Backup), "
                "or `mesh apply` the config again; a restarted proxy takes what the controller has",
            )
        )
    elif (
        isinstance(control, Mapping)
        and controller_address is not None
        and control.get("address") not in (None, controller_address)
    ):
        proxy_config = control.get("config_version")
        if config_version is None or proxy_config == config_version:
            good.append(f"config current (config v{proxy_config}, via the controller at {control.get('address')})")
        else:
            warnings.append(
                (
                    f"config version {proxy_config} from the controller at {control.get('address')}, "
                    f"this controller has {config_version}",
                    "the controllers share one store and agree within a second or two; if not, `mesh check` "
                    "on each controller's host shows its store",
                )
            )
    elif acked == state_version or (isinstance(snapshot, int) and snapshot >= state_version):
        good.append(f"config current (v{state_version})")
    elif control is None and not entry.get("watching"):
        zeroconf_only = entry.get("source") == "zeroconf"
        warnings.append(
            (
                "not watching the controller"
                + (" (seen via zeroconf only)" if zeroconf_only else " (its watch stream ended)"),
                "a proxy started without MESH_HOME/controller.json gets no config: start it on a host that joined the mesh"
                if zeroconf_only
                else "it reconnects with backoff; its log says why the stream ended",
            )
        )
    else:
        behind = snapshot if isinstance(snapshot, int) else acked
        warnings.append(
            (
                f"config at snapshot {behind}, the controller is at {state_version}",
                "it should catch up within seconds; if it does not, its log says why",
            )
        )

    # mesh version
    version = entry.get("mesh_version") or config.get("version")
    if version and version != cli_version:
        warnings.append((f"runs mesh {version}, this CLI is {cli_version}", "restart it with this version of mesh"))
    elif version:
        good.append(f"mesh {version}")

    if failures or warnings:
        problems = failures + warnings
        message = f"{label}: " + "; ".join(what for what, _ in problems)
        hints = list(dict.fromkeys(h for _, h in problems))
        hint = hints[0] if len(hints) == 1 else "\n".join(f"- {h}" for h in hints)
        return CheckResult.fail(message, hint) if failures else CheckResult.warn(message, hint)
    return CheckResult.ok(f"{label}: {', '.join(good)}")


# -- policy --------------------------------------------------------------------------


def policy_references(config: Mapping[str, Any], config_version: int, with_endpoints: set[str]) -> CheckResult:
    """Warn about ``[[route]]`` / ``[[policy]]`` entries whose service has no endpoints."""
    if not config_version:
        return CheckResult.ok("no config applied yet (`mesh apply mesh.toml`): no routes or policies to check")
    routes = list(config.get("route") or [])
    policies = list(config.get("policy") or [])
    dangling: list[tuple[str, str]] = []
    for kind, entries in (("route", routes), ("policy", policies)):
        for index, item in enumerate(entries):
            service = item.get("service") if isinstance(item, Mapping) else None
            if service and service not in with_endpoints:
                dangling.append((f"{kind}[{index}]", service))
    if dangling:
        if len(dangling) == 1:
            ref, service = dangling[0]
            what = f"{ref} names service {service!r}, which has no endpoints"
        else:
            listed = ", ".join(f"{ref} -> {service}" for ref, service in dangling)
            what = f"{len(dangling)} entries name services with no endpoints: {listed}"
        return CheckResult.warn(
            f"config v{config_version}: {what}",
            "start the service's proxy, or fix the name in the config (`mesh status` lists the services "
            "with endpoints); until then, requests to it get 503 no-endpoints",
        )
    return CheckResult.ok(
        f"config v{config_version}: {plural(len(routes), 'route')} and "
        f"{plural(len(policies), 'policy', 'policies')} name services with endpoints"
    )


def gateway_tls_entries(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(where, cert, key)`` of every certificate the applied config's gateways serve."""
    entries = []
    for index, gateway in enumerate(config.get("gateway") or []):
        if not isinstance(gateway, Mapping):
            continue
        for number, pair in enumerate(gateway.get("tls") or []):
            if isinstance(pair, Mapping) and pair.get("cert") and pair.get("key"):
                entries.append((f"gateway[{index}].tls[{number}]", str(pair["cert"]), str(pair["key"])))
    return entries


def gateway_certificate(
    where: str, label: str, not_before: datetime, not_after: datetime, now: datetime
) -> CheckResult:
    """A certificate a gateway serves to outside clients: invalid fails, under 30 days left warns."""
    return cert_validity(
        f"{where}: the certificate for {label}",
        not_before,
        not_after,
        now,
        warn_below=GATEWAY_CERT_WARN_BELOW,
        hint="renew it and replace the files: the gateway serves the new pair from the next handshake, no restart",
    )


# -- store ---------------------------------------------------------------------------

STORE_RTT_WARN_MS = 100.0
READ_ONLY_CONSEQUENCE = (
    "the controllers serve the last state read-only: proxies keep their config and certificates renew, "
    "but `mesh apply`, `mesh fault` and new registrations are refused"
)


def store_writable(health: Mapping[str, Any]) -> CheckResult:
    """Does the controller's store take writes? A store that cannot makes the controllers read-only."""
    location = health.get("location")
    reason = health.get("read_only_reason")
    if reason or not health.get("writable"):
        why = str(reason or health.get("reason") or "it cannot take writes")
        where = "" if str(location) in why else f"{location}: "
        return CheckResult.fail(
            f"{where}{why}; {READ_ONLY_CONSEQUENCE}",
            "bring the etcd members back (a majority of them is needed), then `mesh apply` works again"
            if health.get("backend") == "etcd"
            else f"free space on the disk of {location} (docs/operations.md, Failures)",
        )
    if health.get("backend") == "embedded":
        size = health.get("size_bytes")
        detail = f", {size / 1024:.0f} KiB" if isinstance(size, int) else ""
        return CheckResult.ok(
            f"embedded store {location} is healthy and writable (revision {health.get('revision')}{detail}, "
            f"config version {health.get('config_version')})"
        )
    return CheckResult.ok(f"{location} takes writes (config version {health.get('config_version')})")


def store_members(health: Mapping[str, Any]) -> CheckResult:
    """etcd: does every member answer? Losing fewer than a majority is invisible, but worth knowing."""
    members = [m for m in health.get("members") or [] if isinstance(m, Mapping)]
    size = int(health.get("cluster_size") or len(members))
    down = [m for m in members if not m.get("reachable")]
    if not down:
        return CheckResult.ok(f"all {size} etcd members answer")
    names = ", ".join(f"{m.get('endpoint')} ({m.get('error') or 'no answer'})" for m in down)
    if health.get("quorum"):
        return CheckResult.warn(
            f"{len(down)} of {size} etcd members do not answer: {names}; the others still hold a quorum",
            f"bring them back: one more lost member of {size} and the controllers turn read-only",
        )
    return CheckResult.fail(
        f"{len(down)} of {size} etcd members do not answer: {names}",
        "restart the etcd members (docs/operations.md, Failures)",
    )


def store_quorum(health: Mapping[str, Any]) -> CheckResult:
    """etcd: a leader and a quorum, or why not."""
    size = int(health.get("cluster_size") or 0)
    leader = health.get("leader")
    if health.get("quorum") and leader:
        return CheckResult.ok(f"etcd has a leader ({leader}) and a quorum ({size // 2 + 1} of {size} needed)")
    return CheckResult.fail(
        f"etcd has {'no quorum' if not health.get('quorum') else 'no leader'}: "
        f"{health.get('reason') or 'no leader elected'}, so the controllers are read-only",
        f"a majority ({size // 2 + 1} of {size}) of the members must run and reach each other",
    )


def store_rtt(health: Mapping[str, Any], warn_ms: float = STORE_RTT_WARN_MS) -> CheckResult:
    """etcd: the round-trip time from the controller to each member that answers."""
    times = {
        str(m.get("endpoint")): float(m["rtt_ms"])
        for m in health.get("members") or []
        if isinstance(m, Mapping) and m.get("reachable") and isinstance(m.get("rtt_ms"), (int, float))
    }
    if not times:
        return CheckResult.warn("no etcd member answered, so no round-trip time", "see the members check above")
    worst = max(times, key=lambda k: times[k])
    text = ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(times.items()))
    if times[worst] > warn_ms:
        return CheckResult.warn(
            f"round-trip time to etcd: {text} ({worst} over {warn_ms:.0f} ms)",
            "a slow store slows `mesh apply` and registrations (the data plane does not wait for it)",
        )
    return CheckResult.ok(f"round-trip time to etcd: {text}")


def store_controllers(health: Mapping[str, Any]) -> CheckResult:
    """Which controllers serve the mesh from this store (each keeps a lease on its entry)."""
    this = health.get("this_controller")
    others = [str(c) for c in health.get("controllers") or [] if c != this]
    if not others:
        if health.get("backend") == "etcd":
            return CheckResult.ok(
                f"{this} is the only controller on {health.get('location')}: proxies have no other to move to"
            )
        return CheckResult.ok(f"{this} is the mesh's controller (the embedded store serves one controller)")
    return CheckResult.ok(f"{this} and {len(others)} other controller(s) serve the mesh: {', '.join(others)}")


def revocations(status: int, body: Any) -> CheckResult:
    """The certificates revoked and not yet expired (`mesh ca revoke`): every proxy refuses them."""
    if status != 200 or not isinstance(body, Mapping):
        error = body.get("error") if isinstance(body, Mapping) else body
        return CheckResult.warn(f"GET /v1/revocations answered {status}: {error}", "a controller older than this CLI?")
    items = [r for r in body.get("revocations") or [] if isinstance(r, Mapping)]
    if not items:
        return CheckResult.ok("no certificate is revoked")
    shown = ", ".join(
        f"{str(r.get('serial'))[:12]}… of {r.get('identity')}" + (f" ({r['reason']})" if r.get("reason") else "")
        for r in items[:3]
    )
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return CheckResult.ok(f"{len(items)} revoked certificate(s) in force, refused by every proxy: {shown}{more}")
