"""The checkers of traffic: each proxy (`--proxy`), the policies in force, and the certificates the gateways serve."""

from __future__ import annotations

import http.client
import json
import ssl
from functools import partial
from typing import Any

from mesh.debug.check import _probes as probes, _rules as rules
from mesh.debug.check._context import (
    DATA_PLANE,
    GATEWAY,
    NETWORK_TIMEOUT,
    POLICY,
    PROXY_RETRY,
    CheckContext,
)
from mesh.debug.check._model import Checker, CheckResult
from mesh.errors import MeshError

# -- data plane ----------------------------------------------------------------------


def data_plane_checkers(ctx: CheckContext) -> list[Checker]:
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
                        partial(
                            CheckResult.warn,
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
                    partial(_check_proxy, ctx, service, entry),
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


def policy_checkers(ctx: CheckContext) -> list[Checker]:
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


def gateway_checkers(ctx: CheckContext) -> list[Checker]:
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
        Checker(GATEWAY, f"{where} is valid (warn under 30 days left)", partial(check, where, cert, key))
        for where, cert, key in entries
    ]
