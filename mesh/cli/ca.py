"""`mesh ca …`: the certificate authority in MESH_HOME/ca (init, issue, inspect, rotate), and what the
controllers signed and revoked (issued, revoke).

Thin: parse → call mesh.identity → render. cryptography is imported inside the
commands only, so `mesh --help` stays fast.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, key_value_table, render
from mesh.cli._state import state

if TYPE_CHECKING:
    from mesh.home import MeshHome
    from mesh.identity import CertificateAuthority

# Mirrors mesh.identity.DEFAULT_TRUST_DOMAIN (not imported here: it pulls in cryptography).
_DEFAULT_TRUST_DOMAIN = "mesh.local"

ca_app = typer.Typer(
    name="ca",
    help="The certificate authority: trust anchor, issuer and workload certificates (SPIFFE ids).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TTL_RE = re.compile(r"(?:\d+[smhd])+")


def _parse_ttl(text: str) -> timedelta:
    """``30s``, ``20m``, ``24h``, ``7d`` (and sums such as ``1h30m``) → timedelta."""
    from mesh.errors import IdentityError

    value = text.strip().lower()
    seconds = 0
    if _TTL_RE.fullmatch(value):
        seconds = sum(int(n) * _TTL_UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", value))
    if seconds <= 0:
        raise IdentityError(
            f"invalid --ttl {text!r}: expected a positive duration",
            hint="use a number followed by s, m, h or d: 30s, 20m, 24h, 7d",
        )
    return timedelta(seconds=seconds)


def _load_ca(home: MeshHome) -> CertificateAuthority:
    """Load the CA, turning Python warnings (loose key permissions) into one-line CLI warnings."""
    import warnings

    from mesh.identity import CertificateAuthority

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ca = CertificateAuthority.load(home)
    for warning in caught:
        sys.stderr.write(f"warning: {warning.message}\n")
    return ca


def _table(data: dict[str, Any], title: str | None = None) -> Any:
    table = key_value_table(data, title=title)
    # Fold, never truncate: a fingerprint cut with "…" cannot be copied.
    table.columns[-1].overflow = "fold"
    return table


def _view(title: str) -> Any:
    return lambda data: [title, _table(data)]


# ------------------------------------------------------------------ init


@ca_app.command("init")
def init(
    ctx: typer.Context,
    trust_domain: Annotated[
        str,
        typer.Option("--trust-domain", metavar="TD", help="Trust domain of every SPIFFE id this CA issues."),
    ] = _DEFAULT_TRUST_DOMAIN,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing CA (everything it issued stops verifying)."),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create the root (trust anchor, 10 years) and the issuer (1 year) in MESH_HOME/ca."""
    from mesh.identity import CertificateAuthority, fingerprint, iso_utc

    home = state(ctx).home
    ca = CertificateAuthority.init(home, trust_domain=trust_domain, force=force)
    data = {
        "trust_domain": ca.trust_domain,
        "root_fingerprint": fingerprint(ca.root_cert),
        "root_not_after": iso_utc(ca.root_cert.not_valid_after_utc),
        "issuer_not_after": iso_utc(ca.issuer_not_after),
        "ca_dir": str(home.ca_dir),
        "root_cert": str(home.root_cert),
        "issuer_cert": str(home.issuer_cert),
        "bundle": str(home.bundle),
    }
    render(output, data, _view(f"created a CA for trust domain {ca.trust_domain}"))


# ------------------------------------------------------------------ issue


@ca_app.command("issue")
def issue(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Service name, e.g. reviews.", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Directory for cert.pem, key.pem, bundle.pem (default: ./NAME).",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        str,
        typer.Option("--ttl", metavar="DURATION", help="Certificate lifetime: 30s, 20m, 24h, 7d."),
    ] = "24h",
    force: Annotated[bool, typer.Option("--force", help="Overwrite credentials already in --out.")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Issue a workload certificate for spiffe://<trust-domain>/svc/NAME with a fresh key."""
    from mesh.errors import IdentityError
    from mesh.identity import (
        fingerprint,
        human_duration,
        iso_utc,
        renew_at,
        service_identity,
        validate_name,
    )

    validate_name(name)
    lifetime = _parse_ttl(ttl)
    directory = out if out is not None else Path(name)
    existing = [p for p in (directory / "cert.pem", directory / "key.pem") if p.exists()]
    if existing and not force:
        raise IdentityError(
            f"{existing[0]} already exists",
            hint="pass --force to overwrite it, or choose another --out DIR",
        )
    ca = _load_ca(state(ctx).home)
    remaining = ca.issuer_not_after - datetime.now(UTC)
    if lifetime > remaining:
        raise IdentityError(
            f"--ttl {ttl} is longer than the issuer's remaining life ({human_duration(remaining)})",
            hint="use a shorter --ttl, or run `mesh ca rotate` for a fresh issuer",
        )
    creds = ca.issue(service_identity(ca.trust_domain, name), lifetime)
    paths = creds.write(directory)
    leaf = creds.leaf
    data = {
        "identity": str(creds.identity),
        "cert": str(paths.cert),
        "key": str(paths.key),
        "bundle": str(paths.bundle),
        "not_after": iso_utc(creds.not_after),
        "renew_at": iso_utc(renew_at(leaf)),
        "fingerprint": fingerprint(leaf),
    }
    render(output, data, _view(f"issued {creds.identity}"))


# ------------------------------------------------------------------ inspect


@ca_app.command("inspect")
def inspect(
    ctx: typer.Context,
    pem: Annotated[
        Path | None,
        typer.Argument(
            metavar="PEM",
            help="PEM file to inspect (default: the root and issuer of MESH_HOME).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Show each certificate (identity, validity, fingerprint) and if it chains to the bundle."""
    from mesh.errors import IdentityError
    from mesh.identity import cert_to_pem, describe_certificate, load_certificate_file, verify_chain

    home = state(ctx).home
    # (file, certificates in it): each certificate is verified with those after it as intermediates.
    sources: list[tuple[Path, list[Any]]] = []
    if pem is None:
        if not home.root_cert.exists():
            raise IdentityError(f"no CA in {home.ca_dir}", hint="run `mesh ca init`, or pass a PEM file")
        for path, what in (
            (home.root_cert, "root certificate"),
            (home.issuer_cert, "issuer certificate"),
        ):
            sources.append((path, load_certificate_file(path, what)))
    else:
        sources.append((pem, load_certificate_file(pem)))

    bundle_pem = home.bundle.read_bytes() if home.bundle.is_file() else None
    certificates = []
    for path, certs in sources:
        for index, cert in enumerate(certs):
            entry: dict[str, Any] = {
                "file": str(path),
                "index": index,
                **describe_certificate(cert),
            }
            if bundle_pem is None:
                entry["chain_ok"], entry["chain"] = (
                    None,
                    f"not checked: no CA bundle in {home.ca_dir}",
                )
            else:
                chain_pem = b"".join(cert_to_pem(c) for c in certs[index:])
                entry["chain_ok"], entry["chain"] = verify_chain(chain_pem, bundle_pem)
            certificates.append(entry)
    data = {
        "bundle": str(home.bundle) if bundle_pem is not None else None,
        "certificates": certificates,
    }

    def view(d: dict[str, Any]) -> list[Any]:
        parts: list[Any] = []
        for entry in d["certificates"]:
            fields = {k: v for k, v in entry.items() if k not in ("file", "index", "chain_ok")}
            verdict = {True: "ok", False: "FAILED", None: "-"}[entry["chain_ok"]]
            fields["chain"] = f"{verdict}: {entry['chain']}" if entry["chain_ok"] is not None else entry["chain"]
            parts.append(_table(fields, title=f"{entry['file']} [{entry['index']}]"))
            parts.append("")
        return parts[:-1]

    render(output, data, view)


# ------------------------------------------------------------------ rotate


@ca_app.command("rotate")
def rotate(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """Replace the issuer with a new one under the same root; the bundle does not change."""
    from mesh.identity import fingerprint, iso_utc

    ca = _load_ca(state(ctx).home)
    previous = fingerprint(ca.issuer_cert)
    ca.rotate()
    data = {
        "issuer_fingerprint": fingerprint(ca.issuer_cert),
        "issuer_subject": ca.issuer_cert.subject.rfc4514_string(),
        "issuer_not_after": iso_utc(ca.issuer_not_after),
        "previous_issuer_fingerprint": previous,
        "root_fingerprint": fingerprint(ca.root_cert),
    }
    render(
        output,
        data,
        _view("rotated the issuer; certificates from the previous issuer verify until they expire"),
    )


@ca_app.command("issued")
def issued(
    ctx: typer.Context,
    service: Annotated[Optional[str], typer.Option(help="Only the certificates of this service.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Certificates the controllers signed that have not expired yet (kept in the store)."""
    from datetime import UTC, datetime

    from mesh.cli._output import rows_table
    from mesh.net import controller_request, raise_for_status

    data = raise_for_status(controller_request(state(ctx).home, "GET", "/v1/certificates"), "mesh ca issued")
    if service:
        suffix = f"/svc/{service}"
        data["certificates"] = [c for c in data["certificates"] if str(c.get("identity", "")).endswith(suffix)]

    def when(stamp: float) -> str:
        return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")

    def view(d: dict[str, Any]) -> list[Any]:
        rows = [
            [
                c["serial"],
                c["identity"],
                when(c["issued_at"]),
                when(c["not_after"]),
                c.get("controller") or "-",
                _revocation_text(c.get("revoked"), when),
            ]
            for c in d["certificates"]
        ]
        revoked = sum(1 for c in d["certificates"] if c.get("revoked"))
        title = f"{len(rows)} certificates signed by the controllers, not expired, {revoked} of them revoked (UTC)"
        return [rows_table(["serial", "identity", "issued", "expires", "by controller", "revoked"], rows, title=title)]

    render(output, data, view)


def _revocation_text(record: dict[str, Any] | None, when: Any) -> str:
    if not record:
        return "-"
    reason = f": {record['reason']}" if record.get("reason") else ""
    return f"{when(record['revoked_at'])} by {record.get('revoked_by', '?').rsplit('/', 1)[-1]}{reason}"


@ca_app.command("revoke")
def revoke(
    ctx: typer.Context,
    serial: Annotated[
        Optional[str], typer.Argument(help="The certificate's serial, as `mesh ca issued` shows it (hex).")
    ] = None,
    identity: Annotated[
        Optional[str],
        typer.Option(help="Instead of a serial: every certificate in force of this spiffe:// id or service name."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, kept with the revocation (at most 200 characters).")] = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Revoke a certificate (a host or key compromised): every proxy refuses it within a second or
    two and closes its open connections; the controllers renew it no more. Operators only."""
    from mesh.errors import IdentityError
    from mesh.net import controller_request, raise_for_status

    if (serial is None) == (identity is None):
        raise IdentityError(
            "give a serial or --identity, not both and not neither",
            hint="`mesh ca revoke 3f9c…` revokes one certificate; `mesh ca revoke --identity reviews` every one of a service",
        )
    body: dict[str, Any] = {"serial": serial} if serial is not None else {"identity": identity}
    if reason:
        body["reason"] = reason
    data = raise_for_status(controller_request(state(ctx).home, "POST", "/v1/revocations", body), "mesh ca revoke")

    def view(d: dict[str, Any]) -> list[Any]:
        from mesh.cli._output import rows_table

        rows = [[r["serial"], r["identity"], "revoked now"] for r in d["revoked"]]
        rows += [[r["serial"], r["identity"], "revoked already"] for r in d["already_revoked"]]
        title = f"{len(d['revoked'])} certificate(s) revoked; every proxy refuses them from its next snapshot"
        return [rows_table(["serial", "identity", ""], rows, title=title)]

    render(output, data, view)


def register(app: typer.Typer) -> None:
    app.add_typer(ca_app, name="ca")
