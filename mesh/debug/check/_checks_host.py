"""The checkers of this host: the environment (Python, dependencies, PATH, the port) and the CA's files."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from typing import Any

from mesh.debug.check import _probes as probes, _rules as rules
from mesh.debug.check._context import (
    CA,
    CA_ROTATE_HINT,
    DEFAULT_CONTROLLER_ADDRESS,
    ENVIRONMENT,
    ROOT_HINT,
    CheckContext,
)
from mesh.debug.check._model import Checker, CheckResult
from mesh.errors import MeshError

# -- environment ---------------------------------------------------------------------


def environment_checkers(ctx: CheckContext) -> list[Checker]:
    def home() -> CheckResult:
        return rules.mesh_home(probes.home_facts(ctx.home.root), pre=ctx.pre)

    def dependencies() -> CheckResult:
        versions, errors = probes.import_dependencies()
        return rules.dependencies(versions, errors)

    checkers = [
        Checker(
            ENVIRONMENT,
            f"Python {rules.MIN_PYTHON[0]}.{rules.MIN_PYTHON[1]} or newer",
            lambda: rules.python_version((sys.version_info.major, sys.version_info.minor, sys.version_info.micro)),
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


def ca_checkers(ctx: CheckContext) -> list[Checker]:
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
