"""The checkers of the control plane: the controller, its store, and discovery."""

from __future__ import annotations

import json
import time

from mesh.debug.check import _probes as probes, _rules as rules
from mesh.debug.check._context import (
    CONNECT_RETRY,
    CONTROL_PLANE,
    DISCOVERY,
    HEALTH_RETRY,
    NETWORK_TIMEOUT,
    STORE,
    CheckContext,
)
from mesh.debug.check._model import Checker, CheckResult

# -- control plane -------------------------------------------------------------------


def control_plane_checkers(ctx: CheckContext) -> list[Checker]:
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
        from mesh.identity import load_certificates, verify_chain
        from mesh.net import cli_identity_dir

        directory = cli_identity_dir(home)
        if directory is None:
            if ctx.joined:
                return CheckResult.fail(
                    f"no identity in {home.host_dir} or {home.operator_dir}: this CLI cannot talk to the controller",
                    "run the `mesh join …` line again: it gives this host its identity (it joined with an older mesh?)",
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


def store_checkers(ctx: CheckContext) -> list[Checker]:
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
        Checker(
            STORE, "the store takes writes (else the controllers are read-only)", lambda: rules.store_writable(health)
        ),
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


def discovery_checkers(ctx: CheckContext) -> list[Checker]:
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
