"""The checkers of `mesh check`, category by category, wired to the real world.

``build_categories(home, pre=..., proxy=...)`` returns the categories in the
order they run. Checkers are closures over one ``CheckContext``, which also
carries what earlier checks learned (the controller's address, its health and
status) to later ones. The verdicts are the pure functions of ``_rules``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mesh import __version__
from mesh.debug.check import _probes as probes
from mesh.debug.check import _rules as rules
from mesh.debug.check._model import Category, Checker, CheckResult
from mesh.errors import MeshError
from mesh.home import MeshHome, read_host_record

ENVIRONMENT = "environment"
CA = "ca"
CONTROL_PLANE = "control plane"
STORE = "store"
DISCOVERY = "discovery"
DATA_PLANE = "data plane"
POLICY = "policy"
GATEWAY = "gateway"

DEFAULT_CONTROLLER_ADDRESS = ("127.0.0.1", 4190)
CONNECT_RETRY = 5.0  # the controller may have just been started
HEALTH_RETRY = 3.0
PROXY_RETRY = 3.0  # a proxy catches up with a new snapshot within moments
NETWORK_TIMEOUT = 3.0
ZEROCONF_TIMEOUT = 3.0

CA_ROTATE_HINT = "run `mesh ca rotate` for a new issuer (leaves of the old one keep working until they expire)"
ROOT_HINT = "the root is replaced by hand (docs/security.md, Rotation); `mesh ca init --force` starts a new trust anchor"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CheckContext:
    """The inputs of one `mesh check` run, and what its checks found along the way."""

    def __init__(
        self,
        home: MeshHome,
        *,
        pre: bool = False,
        proxy: bool = False,
        now: Callable[[], datetime] = _utcnow,
        cli_version: str = __version__,
        zeroconf_timeout: float = ZEROCONF_TIMEOUT,
    ) -> None:
        self.home = home
        self.pre = pre
        self.proxy = proxy
        self.now = now
        self.cli_version = cli_version
        self.zeroconf_timeout = zeroconf_timeout
        # Learned by earlier checks:
        self.trust_domain: str | None = None
        self.controller: Any = None  # mesh.discovery.ControllerAddress
        self.controller_record: dict[str, Any] = {}
        self.health: dict[str, Any] | None = None
        self.health_window: tuple[float, float] = (0.0, 0.0)
        self.status: dict[str, Any] | None = None
        self._config: tuple[int, dict[str, Any]] | None = None
        self._cli_creds: Any = None
        self.host = read_host_record(home)
        # What this host is to the mesh: where the controller runs, or one that joined it. Homes
        # from before host.json: a CA means the controller's host, a bare controller.json a join.
        if self.host is not None:
            self.role: str | None = self.host.role
        elif home.has_ca():
            self.role = "controller"
        elif home.controller_json.exists():
            self.role = "joined"
        else:
            self.role = None

    # -- controller access -----------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self.role == "joined"

    def request(self, method: str, path: str, timeout: float = NETWORK_TIMEOUT) -> Any:
        from mesh.net import controller_request

        return controller_request(self.home, method, path, None, timeout)

    def applied_config(self) -> tuple[int, dict[str, Any]] | None:
        """``(config version, config)`` in force at the controller; None when it cannot say."""
        if self._config is None and self.health is not None:
            try:
                response = self.request("GET", "/v1/config")
            except MeshError:
                return None
            if response.status == 200 and isinstance(response.body, dict):
                self._config = (int(response.body.get("version") or 0), dict(response.body.get("config") or {}))
        return self._config

    def cli_creds(self) -> Any:
        """The CLI's identity: the operator's, else this host's (`mesh join`)."""
        if self._cli_creds is None:
            from mesh.net import cli_credentials

            self._cli_creds = cli_credentials(self.home)
        return self._cli_creds

    def discovery_interfaces(self) -> tuple[str, tuple[str, ...]]:
        """``(mode, interfaces)`` from the applied config; zeroconf on loopback by default. A host
        whose address is recorded (host.json) spans its interface: its sidecars do."""
        applied = self.applied_config()
        discovery = (applied[1].get("discovery") or {}) if applied else {}
        mode = str(discovery.get("mode") or "zeroconf")
        interface = self.host.zeroconf_interface if self.host is not None else None
        interfaces = tuple(discovery.get("interfaces") or ((interface,) if interface else ("127.0.0.1",)))
        return mode, interfaces


# -- environment ---------------------------------------------------------------------


def _environment(ctx: CheckContext) -> list[Checker]:
    def home() -> CheckResult:
        return rules.mesh_home(probes.home_facts(ctx.home.root), pre=ctx.pre)

    def dependencies() -> CheckResult:
        versions, errors = probes.import_dependencies()
        return rules.dependencies(versions, errors)

    checkers = [
        Checker(
            ENVIRONMENT,
            f"Python {rules.MIN_PYTHON[0]}.{rules.MIN_PYTHON[1]} or newer",
            lambda: rules.python_version(tuple(sys.version_info)),
            fatal=True,
        ),
        Checker(
            ENVIRONMENT,
            "dependencies import",
            dependencies,
            fatal=True,
            blocked_reason="mesh's dependencies do not import",
        ),
        Checker(
            ENVIRONMENT,
            "MESH_HOME is creatable" if ctx.pre else "MESH_HOME exists and is writable",
            home,
            fatal=not ctx.pre,
            blocked_reason="MESH_HOME is not usable",
        ),
    ]
    if ctx.pre:
        checkers += [
            Checker(ENVIRONMENT, "the controller's address is free", lambda: _port_free(ctx)),
            Checker(ENVIRONMENT, "`mesh` is on PATH", lambda: rules.on_path(shutil.which("mesh"), _this_executable())),
        ]
    return checkers


def _controller_address(ctx: CheckContext) -> tuple[str, int]:
    from mesh.discovery import parse_address

    try:
        record = json.loads(ctx.home.controller_json.read_text())
        return parse_address(str(record["address"]))
    except (OSError, ValueError, KeyError, MeshError):
        return DEFAULT_CONTROLLER_ADDRESS


def _port_free(ctx: CheckContext) -> CheckResult:
    host, port = _controller_address(ctx)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return rules.port_free(address, probes.try_bind(host, port))


def _this_executable() -> str | None:
    """The `mesh` of the running installation (the single file, or the script beside the venv's python)."""
    from mesh.self_command import executable

    return executable()


# -- ca ------------------------------------------------------------------------------


class _CaFiles:
    root: Any = None
    issuer: Any = None
    root_pem: bytes = b""
    issuer_pem: bytes = b""


def _joined_trust(ctx: CheckContext) -> list[Checker]:
    """A joined host holds the mesh's trust bundle, never its CA: what a joined host should have."""
    home = ctx.home

    def bundle() -> CheckResult:
        from mesh.identity import fingerprint, load_certificates, trust_domain_of

        if not home.bundle.exists():
            return CheckResult.fail(
                f"no trust bundle in {home.bundle}: this host cannot verify the mesh's certificates",
                "run the `mesh join …` line `mesh up` printed on the controller's host again",
            )
        anchors = load_certificates(home.bundle.read_bytes(), source=str(home.bundle))
        ctx.trust_domain = trust_domain_of(anchors[0])
        where = f" at {ctx.host.controller}" if ctx.host is not None and ctx.host.controller else ""
        return CheckResult.ok(
            f"this host joined the mesh{where} (trust domain {ctx.trust_domain}): ca/bundle.pem pins "
            f"{rules.plural(len(anchors), 'trust anchor')} ({fingerprint(anchors[0])[:23]}...); "
            "the CA itself stays on the controller's host"
        )

    def no_ca_keys() -> CheckResult:
        keys = [p for p in (home.root_key, home.issuer_key) if p.exists()]
        if keys:
            return CheckResult.warn(
                f"this joined host holds CA keys ({', '.join(str(p) for p in keys)}): "
                "they belong on the controller's host only",
                "move them off this host (keep a backup where the controller runs)",
            )
        return CheckResult.ok("no CA keys on this host, as it should be for a joined host")

    def permissions() -> CheckResult:
        paths = [
            home.host_dir,
            home.host_dir / "key.pem",
            home.operator_dir,
            home.operator_dir / "key.pem",
            home.join_token,
            home.run_dir,
        ]
        return rules.key_permissions(probes.file_modes(paths), home.root)

    return [
        Checker(
            CA, "the trust bundle of the mesh this host joined", bundle, fatal=True, blocked_reason="no trust bundle"
        ),
        Checker(CA, "no CA keys on a joined host", no_ca_keys),
        Checker(CA, "key files are private (0600, directories 0700)", permissions),
    ]


def _ca(ctx: CheckContext) -> list[Checker]:
    if ctx.joined:
        return _joined_trust(ctx)
    home = ctx.home
    loaded = _CaFiles()

    def load() -> CheckResult:
        from cryptography.hazmat.primitives import serialization

        from mesh.identity import load_certificate, trust_domain_of

        files = (home.root_cert, home.issuer_cert, home.issuer_key, home.bundle)
        missing = [p for p in files if not p.exists()]
        if len(missing) == len(files):
            return CheckResult.fail(f"no CA in {home.ca_dir}", "`mesh up` creates one (or `mesh ca init`)")
        if missing:
            names = ", ".join(p.name for p in missing)
            return CheckResult.fail(f"the CA in {home.ca_dir} is incomplete: {names} missing", rules.RESTORE_CA_HINT)
        loaded.root_pem = home.root_cert.read_bytes()
        loaded.issuer_pem = home.issuer_cert.read_bytes()
        loaded.root = load_certificate(loaded.root_pem, source=str(home.root_cert))
        loaded.issuer = load_certificate(loaded.issuer_pem, source=str(home.issuer_cert))
        try:
            key = serialization.load_pem_private_key(home.issuer_key.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            return CheckResult.fail(f"{home.issuer_key} is not a readable private key ({exc})", rules.RESTORE_CA_HINT)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, spki) != loaded.issuer.public_key().public_bytes(
            serialization.Encoding.DER, spki
        ):
            return CheckResult.fail(f"{home.issuer_key} does not belong to {home.issuer_cert}", rules.RESTORE_CA_HINT)
        ctx.trust_domain = trust_domain_of(loaded.root)
        return CheckResult.ok(f"root and issuer of trust domain {ctx.trust_domain} load from {home.ca_dir}")

    def validity(role: str, hint: str) -> Callable[[], CheckResult]:
        def check() -> CheckResult:
            cert = getattr(loaded, role)
            return rules.cert_validity(
                f"{role} certificate",
                cert.not_valid_before_utc,
                cert.not_valid_after_utc,
                ctx.now(),
                warn_below=rules.CA_WARN_BELOW,
                hint=hint,
            )

        return check

    def chain() -> CheckResult:
        from mesh.identity import verify_chain

        ok, line = verify_chain(loaded.issuer_pem, loaded.root_pem, now=ctx.now())
        return rules.chain("the issuer's chain to the root", ok, line)

    def permissions() -> CheckResult:
        paths = [
            home.ca_dir,
            home.root_key,
            home.issuer_key,
            home.operator_dir,
            home.operator_dir / "key.pem",
            home.join_token,
            home.run_dir,  # logs (who called what; the join line) and pid files
        ]
        return rules.key_permissions(probes.file_modes(paths), home.root)

    def bundle() -> CheckResult:
        from mesh.identity import fingerprint, load_certificates

        anchors = load_certificates(home.bundle.read_bytes(), source=str(home.bundle))
        return rules.bundle_has_root([fingerprint(a) for a in anchors], fingerprint(loaded.root))

    return [
        Checker(CA, "root and issuer load", load, fatal=True, blocked_reason="the CA does not load"),
        Checker(CA, "root certificate is valid (warn under 60 days left)", validity("root", ROOT_HINT)),
        Checker(CA, "issuer certificate is valid (warn under 60 days left)", validity("issuer", CA_ROTATE_HINT)),
        Checker(CA, "issuer chains to the root", chain),
        Checker(CA, "key files are private (0600, directories 0700)", permissions),
        Checker(CA, "bundle contains the root", bundle),
    ]


# -- control plane -------------------------------------------------------------------


def _control_plane(ctx: CheckContext) -> list[Checker]:
    home = ctx.home

    def recorded() -> CheckResult:
        from mesh.discovery import controller_from_home

        controller = controller_from_home(home)
        if controller is None:
            return CheckResult.fail(
                f"no controller recorded in {home.root} (no controller.json): the mesh was never started here",
                f"{rules.START_HINT}; on another host, `mesh join HOST:PORT --token T --ca-fingerprint F`",
            )
        ctx.controller = controller
        try:
            ctx.controller_record = json.loads(home.controller_json.read_text())
        except (OSError, ValueError):
            ctx.controller_record = {}
        return CheckResult.ok(f"controller.json: the controller is at {controller.address} ({controller.identity})")

    def operator() -> CheckResult:
        from mesh.net import cli_identity_dir
        from mesh.identity import load_certificates, verify_chain

        directory = cli_identity_dir(home)
        if directory is None:
            if ctx.joined:
                return CheckResult.fail(
                    f"no identity in {home.host_dir} or {home.operator_dir}: this CLI cannot talk to the controller",
                    "run the `mesh join …` line again: it gives this host its identity "
                    "(it joined with an older mesh?)",
                )
            return CheckResult.fail(
                f"no operator identity in {home.operator_dir}: this CLI cannot talk to the controller as an operator",
                "operator commands (`mesh status`, `mesh apply`, `mesh check`) run on the controller's host, "
                "where `mesh up` creates MESH_HOME/operator, or on a host that ran `mesh join`",
            )
        creds = ctx.cli_creds()
        what = "operator certificate" if directory == home.operator_dir else "host certificate"
        leaf = load_certificates(creds.cert_chain_pem, source=str(directory / "cert.pem"))[0]
        ok, line = verify_chain(creds.cert_chain_pem, creds.bundle_pem, now=ctx.now())
        if ctx.joined:
            renew = "run the `mesh join …` line again: it renews this host's identity"
        else:
            renew = (
                f"move {home.operator_dir} away and restart the controller (`mesh down && mesh up --detach`): "
                "it issues a new operator certificate"
            )
        if not ok and ctx.now() <= leaf.not_valid_after_utc:
            return CheckResult.fail(f"{what} {creds.identity} does not verify: {line}", renew)
        reads_only = " (reads the mesh; operators change it)" if what == "host certificate" else ""
        result = rules.cert_validity(
            f"{what} {creds.identity}{reads_only}",
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
            ctx.now(),
            warn_below=rules.OPERATOR_WARN_BELOW,
            hint=renew,
        )
        return result

    def reachable() -> CheckResult:
        controller = ctx.controller
        try:
            probes.tcp_connect(controller.host, controller.port, NETWORK_TIMEOUT)
        except OSError as exc:
            pid = ctx.controller_record.get("pid")
            pid = pid if isinstance(pid, int) else None
            return rules.controller_unreachable(
                controller.address,
                probes.os_reason(exc),
                pid=pid,
                pid_alive=probes.pid_alive(pid) if pid is not None else None,
                log_path=home.run_dir / "controller.log",
            )
        return CheckResult.ok(f"the controller accepts connections at {controller.address}")

    def health() -> CheckResult:
        from mesh.errors import ControllerError

        start = time.time()
        try:
            response = ctx.request("GET", "/v1/health")
        except ControllerError as exc:
            message = exc.message.replace("TLS handshake failed: TLS handshake failed:", "TLS handshake failed:")
            return CheckResult.fail(
                message,
                exc.hint
                or f"is it the mesh controller that listens at {ctx.controller.address}? "
                f"its log ({home.run_dir / 'controller.log'}) says more",
            )
        end = time.time()
        if response.status != 200 or not isinstance(response.body, dict):
            body = response.body if isinstance(response.body, dict) else {}
            return CheckResult.fail(
                f"GET /v1/health answered {response.status}: {body.get('error', response.body)}",
                body.get("hint"),
            )
        ctx.health = response.body
        ctx.health_window = (start, end)
        domain = response.body.get("trust_domain")
        if ctx.trust_domain and domain != ctx.trust_domain:
            return CheckResult.fail(
                f"the controller serves trust domain {domain}, but the CA in {home.ca_dir} is for {ctx.trust_domain}",
                "the CA was replaced after the controller started: restart it (`mesh down && mesh up --detach`)",
            )
        return CheckResult.ok(
            f"the controller answers over mTLS as {ctx.controller.identity} "
            f"(GET /v1/health as {ctx.cli_creds().identity}; trust domain {domain})"
        )

    def version() -> CheckResult:
        assert ctx.health is not None
        return rules.version_match(str(ctx.health.get("version")), ctx.cli_version)

    def skew() -> CheckResult:
        assert ctx.health is not None
        start, end = ctx.health_window
        local = (start + end) / 2
        return rules.clock_skew(float(ctx.health["time"]) - local, (end - start) / 2)

    def status() -> CheckResult:
        response = ctx.request("GET", "/v1/status")
        if response.status != 200 or not isinstance(response.body, dict):
            body = response.body if isinstance(response.body, dict) else {}
            return CheckResult.fail(
                f"GET /v1/status answered {response.status}: {body.get('error', response.body)}",
                body.get("hint")
                or "operators and joined hosts may read the status: is this CLI's identity of this mesh?",
            )
        ctx.status = response.body
        return rules.status_summary(response.body)

    return [
        Checker(
            CONTROL_PLANE,
            "controller.json exists",
            recorded,
            fatal=True,
            blocked_reason="no controller is recorded in MESH_HOME",
        ),
        Checker(
            CONTROL_PLANE,
            "the controller accepts TCP connections",
            reachable,
            retry_for=CONNECT_RETRY,
            fatal=True,
            blocked_reason="the controller is not reachable",
        ),
        Checker(
            CONTROL_PLANE,
            "the CLI's certificate (operator, or this host's) is valid (warn under 30 days left)",
            operator,
            fatal=True,
            blocked_reason="the CLI has no valid identity",
        ),
        Checker(
            CONTROL_PLANE,
            "the controller answers GET /v1/health over mTLS",
            health,
            retry_for=HEALTH_RETRY,
            fatal=True,
            blocked_reason="the controller's API does not answer",
        ),
        Checker(CONTROL_PLANE, "the controller's version matches the CLI's", version),
        Checker(CONTROL_PLANE, "clock skew with the controller is under 5 s", skew),
        Checker(
            CONTROL_PLANE,
            "the controller answers GET /v1/status",
            status,
            fatal=True,
            blocked_reason="the controller's status is not available",
        ),
    ]


# -- store ---------------------------------------------------------------------------


def _store(ctx: CheckContext) -> list[Checker]:
    """The controller's store as the controller sees it (GET /v1/store, asked when this category's
    turn comes): etcd need not be reachable from the host `mesh check` runs on."""
    response = ctx.request("GET", "/v1/store")
    health = response.body if isinstance(response.body, dict) else {}
    if response.status != 200:
        failure = CheckResult.fail(
            f"GET /v1/store answered {response.status}: {health.get('error', response.body)}", health.get("hint")
        )
        return [Checker(STORE, "the controller reports its store", lambda: failure)]
    checkers = [
        Checker(STORE, "the store takes writes (else the controllers are read-only)", lambda: rules.store_writable(health)),
        Checker(STORE, "the controllers that share the store", lambda: rules.store_controllers(health)),
        Checker(STORE, "revoked certificates in force (`mesh ca revoke`)", lambda: _revocations(ctx)),
    ]
    if health.get("backend") == "etcd":
        checkers += [
            Checker(STORE, "every etcd member answers", lambda: rules.store_members(health)),
            Checker(STORE, "etcd has a leader and a quorum", lambda: rules.store_quorum(health)),
            Checker(STORE, "round-trip time to etcd is under 100 ms", lambda: rules.store_rtt(health)),
        ]
    return checkers


def _revocations(ctx: CheckContext) -> CheckResult:
    response = ctx.request("GET", "/v1/revocations")
    return rules.revocations(response.status, response.body)


# -- discovery -----------------------------------------------------------------------


def _discovery(ctx: CheckContext) -> list[Checker]:
    def works() -> CheckResult:
        from mesh.discovery import zeroconf_works

        mode, interfaces = ctx.discovery_interfaces()
        if mode != "zeroconf":
            return CheckResult.ok(f"discovery mode is {mode!r}: zeroconf is not used")
        ok, line = zeroconf_works(interfaces, timeout=ctx.zeroconf_timeout)
        return rules.zeroconf(ok, line)

    def advertised() -> CheckResult:
        import functools

        import trio

        from mesh.discovery import find_controller
        from mesh.identity import SpiffeId

        mode, interfaces = ctx.discovery_interfaces()
        if mode != "zeroconf":
            return CheckResult.ok(f"discovery mode is {mode!r}: the controller is not looked up by mDNS")
        from mesh.identity import mesh_ids

        controller = ctx.controller
        trust_domain = SpiffeId.parse(controller.identity).trust_domain
        ours = mesh_ids(ctx.home.bundle.read_bytes())
        look = functools.partial(
            find_controller, interfaces, ctx.zeroconf_timeout, trust_domain=trust_domain, mesh_ids=ours
        )
        record = trio.run(look)
        found = None if record is None else rules.Advert(record.host, record.port, record.identity, record.version)
        return rules.controller_advert(
            found,
            expected_port=controller.port,
            expected_identity=controller.identity,
            where=", ".join(interfaces),
            timeout=ctx.zeroconf_timeout,
            joined=ctx.joined,
        )

    return [
        Checker(
            DISCOVERY,
            "zeroconf works on the configured interfaces",
            works,
            fatal=True,
            blocked_reason="zeroconf does not work here",
        ),
        Checker(
            DISCOVERY,
            "zeroconf sees the controller's _mesh-ctl._tcp record",
            advertised,
            needs=(CONTROL_PLANE,),
        ),
    ]


# -- data plane ----------------------------------------------------------------------


def _data_plane(ctx: CheckContext) -> list[Checker]:
    status = ctx.status or {}
    services: dict[str, list[dict[str, Any]]] = status.get("services") or {}
    checkers: list[Checker] = []
    for service, entries in sorted(services.items()):
        for entry in sorted(entries, key=lambda e: str(e.get("address"))):
            label = rules.proxy_label(service, entry)
            if not entry.get("admin_port"):
                checkers.append(
                    Checker(
                        DATA_PLANE,
                        f"proxy {label}",
                        lambda label=label: CheckResult.warn(
                            f"{label}: no admin port known, so it cannot be checked",
                            "proxies report their admin port when they register; is this a static or foreign endpoint?",
                        ),
                    )
                )
                continue
            checkers.append(
                Checker(
                    DATA_PLANE,
                    f"proxy {label} is ready, fresh and current",
                    lambda service=service, entry=entry: _check_proxy(ctx, service, entry),
                    retry_for=PROXY_RETRY,
                )
            )
    if not checkers:
        checkers.append(
            Checker(
                DATA_PLANE,
                "proxies are registered",
                lambda: CheckResult.warn(
                    "no proxies are registered with the controller",
                    "start one with `mesh proxy --service NAME --app HOST:PORT`, or list services in "
                    "mesh.toml and run `mesh up mesh.toml`",
                ),
            )
        )
    return checkers


def _check_proxy(ctx: CheckContext, service: str, entry: dict[str, Any]) -> CheckResult:
    """Read the proxy's certificate, /ready and /config over one mTLS connection to its inbound
    listener (ALPN mesh-admin, as the operator): its admin server itself is on its host's loopback."""
    from mesh.discovery import parse_address
    from mesh.identity import client_context, handshake_failure_reason
    from mesh.net import ALPN_ADMIN

    host, port = parse_address(str(entry["address"]))
    facts: dict[str, Any] = {"admin": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"}
    pages = None
    try:
        context = client_context(ctx.cli_creds(), alpn=(ALPN_ADMIN,))
        pages = probes.AdminPages(host, port, context, NETWORK_TIMEOUT)
        identity, not_before, not_after = probes.certificate_times(pages.certificate)
        facts.update(tls_identity=identity, tls_not_before=not_before, tls_not_after=not_after)
    except MeshError as exc:
        facts["tls_error"] = exc.message
    except ssl.SSLError as exc:
        facts["tls_error"] = handshake_failure_reason(exc)
    except probes.NoAdminPages as exc:
        facts["tls_error"] = str(exc)
    except OSError as exc:  # refused, unreachable, timed out: nothing answers at all
        facts["tls_error"] = facts["ready_error"] = probes.os_reason(exc)
    if pages is not None:
        try:
            facts["ready_status"] = pages.get("/ready")[0]
            code, body = pages.get("/config")
            if code == 200:
                facts["config"] = json.loads(body)
            else:
                facts["config_error"] = f"status {code}"
        except (OSError, http.client.HTTPException) as exc:  # broke after the handshake: what was not read yet
            facts["config_error" if "ready_status" in facts else "ready_error"] = probes.os_reason(exc)
        except ValueError as exc:
            facts["config_error"] = str(exc)
        finally:
            pages.close()
    controller = (ctx.status or {}).get("controller", {})
    return rules.proxy(
        service,
        entry,
        rules.ProxyFacts(**facts),
        state_version=int(controller.get("state_version") or 0),
        cli_version=ctx.cli_version,
        now=ctx.now(),
        config_version=controller.get("config_version"),
        controller_address=ctx.controller.address if ctx.controller is not None else None,
    )


# -- policy --------------------------------------------------------------------------


def _policy(ctx: CheckContext) -> list[Checker]:
    def references() -> CheckResult:
        applied = ctx.applied_config()
        if applied is None:
            return CheckResult.warn(
                "could not read the applied config (GET /v1/config)",
                "`mesh status` shows whether the controller answers",
            )
        version, config = applied
        services = (ctx.status or {}).get("services") or {}
        with_endpoints = {name for name, entries in services.items() if entries}
        return rules.policy_references(config, version, with_endpoints)

    return [Checker(POLICY, "routes and policies name services that have endpoints", references)]


# -- gateway -------------------------------------------------------------------------


def _gateway(ctx: CheckContext) -> list[Checker]:
    """The certificates the applied config's gateways serve to outside clients, read where `mesh
    check` runs (the host of `mesh up`, which starts them). Certificates of a gateway started by
    hand are not in the config: that gateway says so in its log and its metrics."""
    applied = ctx.applied_config()
    entries = rules.gateway_tls_entries(applied[1]) if applied else []
    if not entries:
        return [
            Checker(
                GATEWAY,
                "certificates the gateways serve (warn under 30 days left)",
                lambda: CheckResult.ok("no [[gateway]] of the applied config serves TLS"),
            )
        ]

    def check(where: str, cert: str, key: str) -> CheckResult:
        from pathlib import Path

        from mesh.identity import read_server_certificate

        try:
            certificate = read_server_certificate(Path(cert), Path(key))
        except MeshError as exc:
            return CheckResult.fail(f"{where}: {exc.message}", exc.hint or "the gateway cannot start with this pair")
        label = f"{certificate.label} ({cert})"
        return rules.gateway_certificate(where, label, certificate.not_before, certificate.not_after, ctx.now())

    return [
        Checker(GATEWAY, f"{where} is valid (warn under 30 days left)", lambda w=where, c=cert, k=key: check(w, c, k))
        for where, cert, key in entries
    ]


# -- all together --------------------------------------------------------------------


def build_categories(
    home: MeshHome, *, pre: bool = False, proxy: bool = False, context: CheckContext | None = None
) -> list[Category]:
    """The categories of `mesh check` in the order they run.

    ``--pre`` (before `mesh up`): the environment only, with the port and PATH
    checks. Otherwise: environment, ca, control plane, store, discovery, the data
    plane with ``--proxy``, policy, and the certificates the gateways serve.
    """
    ctx = context or CheckContext(home, pre=pre, proxy=proxy)
    categories = [Category(ENVIRONMENT, lambda: _environment(ctx))]
    if pre:
        return categories
    categories += [
        Category(CA, lambda: _ca(ctx), needs=(ENVIRONMENT,)),
        Category(CONTROL_PLANE, lambda: _control_plane(ctx), needs=(ENVIRONMENT,)),
        Category(STORE, lambda: _store(ctx), needs=(CONTROL_PLANE,)),
        Category(DISCOVERY, lambda: _discovery(ctx), needs=(ENVIRONMENT,)),
    ]
    if proxy:
        categories.append(Category(DATA_PLANE, lambda: _data_plane(ctx), needs=(CONTROL_PLANE,)))
    categories.append(Category(POLICY, lambda: _policy(ctx), needs=(CONTROL_PLANE,)))
    categories.append(Category(GATEWAY, lambda: _gateway(ctx), needs=(CONTROL_PLANE,)))
    return categories
