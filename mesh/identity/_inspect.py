"""Looking at certificates: fingerprints, a readable description, chain verification.

``verify_chain`` is our own small path builder rather than cryptography's
``x509.verification``: mesh supports cryptography >= 42, where that module only
verifies *server* certificates against a DNS name under the Web-PKI profile
(client verification came in 43, custom extension policies in 45), and a
SPIFFE leaf has no DNS name. What we check is the X.509 core that matters
here, spelled out in ``verify_chain``; the tests cross-check it against
cryptography's client verifier and ``openssl verify`` where available.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from mesh.errors import IdentityError
from mesh.identity._certs import is_ca, load_certificate, load_certificates, uri_sans
from mesh.identity._facts import FINGERPRINT_PREFIX, fingerprint, iso_utc, utcnow

# Longest chain we follow: leaf → issuer → root is 3; leave room, refuse loops.
_MAX_DEPTH = 8

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def parse_fingerprint(text: str) -> str:
    """Normalise a user-typed fingerprint to ``sha256:<hex>``.

    Accepts our own format and what ``openssl x509 -fingerprint -sha256`` prints
    (upper case, colons, ``SHA256 Fingerprint=`` prefix).
    """
    value = text.strip()
    lowered = value.lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        if lowered.startswith(prefix):
            lowered = lowered[len(prefix) :]
            break
    digits = lowered.replace(":", "")
    if not _HEX_RE.match(digits):
        raise IdentityError(
            f"invalid CA fingerprint {text!r}: expected sha256: followed by 64 hex digits",
            hint="copy the fingerprint printed by `mesh up` or `mesh ca init`",
        )
    return FINGERPRINT_PREFIX + digits


def human_duration(delta: timedelta) -> str:
    """Two most significant units: ``3649d 23h``, ``23h 59m``, ``4m 10s``, ``9s``."""
    seconds = int(abs(delta.total_seconds()))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for suffix, size in units:
        amount, seconds = divmod(seconds, size)
        if amount or parts:
            parts.append(f"{amount}{suffix}")
        if len(parts) == 2:
            break
    if not parts:
        return "0s"
    if len(parts) == 2 and parts[1][0] == "0":
        parts.pop()  # "2h 0m" reads better as "2h"
    return " ".join(parts)


def time_left(cert: x509.Certificate, now: datetime | None = None) -> str:
    now = now or utcnow()
    if now < cert.not_valid_before_utc:
        return f"not valid for another {human_duration(cert.not_valid_before_utc - now)}"
    remaining = cert.not_valid_after_utc - now
    if remaining <= timedelta(0):
        return f"expired {human_duration(remaining)} ago"
    return human_duration(remaining)


def describe_certificate(pem_or_cert: x509.Certificate | bytes | str, now: datetime | None = None) -> dict[str, Any]:
    """Plain data about one certificate (the first one when given PEM), for people and JSON."""
    cert = pem_or_cert if isinstance(pem_or_cert, x509.Certificate) else load_certificate(pem_or_cert)
    spiffe = [u for u in uri_sans(cert) if u.startswith("spiffe://")]
    return {
        "subject": cert.subject.rfc4514_string(),
        "spiffe_id": spiffe[0] if len(spiffe) == 1 else (spiffe or None),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": iso_utc(cert.not_valid_before_utc),
        "not_after": iso_utc(cert.not_valid_after_utc),
        "time_left": time_left(cert, now),
        "fingerprint": fingerprint(cert),
        "is_ca": is_ca(cert),
    }


# ------------------------------------------------------------ verification


def _label(cert: x509.Certificate) -> str:
    spiffe = [u for u in uri_sans(cert) if u.startswith("spiffe://")]
    if spiffe and not is_ca(cert):
        return spiffe[0]
    return cert.subject.rfc4514_string() or "<empty subject>"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _validity_problem(cert: x509.Certificate, now: datetime, role: str) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"{role} {_label(cert)} is not valid before {iso_utc(cert.not_valid_before_utc)} (check the clocks)"
    if now > cert.not_valid_after_utc:
        return (
            f"{role} {_label(cert)} expired {human_duration(now - cert.not_valid_after_utc)} ago "
            f"(not after {iso_utc(cert.not_valid_after_utc)})"
        )
    return None


def _ca_problem(cert: x509.Certificate, below: int, role: str) -> str | None:
    """Is ``cert`` allowed to sign, with ``below`` CA certificates between it and the leaf?"""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"{role} {_label(cert)} is not a CA certificate (no basicConstraints)"
    if not constraints.ca:
        return f"{role} {_label(cert)} is not a CA certificate"
    if constraints.path_length is not None and below > constraints.path_length:
        return f"{role} {_label(cert)} may not sign {below} levels of CAs (pathlen {constraints.path_length})"
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not usage.key_cert_sign:
        return f"{role} {_label(cert)} may not sign certificates (no keyCertSign)"
    return None


def verify_chain(
    leaf_pem_chain: bytes | str, bundle_pem: bytes | str, *, now: datetime | None = None
) -> tuple[bool, str]:
    """Does the first certificate of ``leaf_pem_chain`` chain up to an anchor of ``bundle_pem``?

    The remaining certificates of the chain may serve as intermediates. Checked
    for every certificate on the path: validity period at ``now``; each
    signature against the next certificate's key (matching issuer name);
    signers are CAs with keyCertSign and a respected pathlen. The anchor must
    be one of the bundle's certificates. Returns ``(ok, one line)``: the path
    (``leaf <- issuer <- root``) when it verifies, the reason when it does not.
    """
    try:
        chain = load_certificates(leaf_pem_chain, source="the chain")
        anchors = load_certificates(bundle_pem, source="the bundle")
    except IdentityError as exc:
        return False, exc.message
    now = now or utcnow()
    leaf, intermediates = chain[0], chain[1:]
    anchor_ders = {a.fingerprint(hashes.SHA256()) for a in anchors}

    if leaf.fingerprint(hashes.SHA256()) in anchor_ders:
        problem = _validity_problem(leaf, now, "trust anchor")
        return (False, problem) if problem else (True, "a trust anchor of the bundle")

    path = [leaf]
    current = leaf
    for _ in range(_MAX_DEPTH):
        role = "certificate" if current is leaf else "intermediate"
        problem = _validity_problem(current, now, role)
        if problem:
            return False, problem
        below = len(path) - 1  # CA certificates between the next signer and the leaf

        named = [a for a in anchors if a.subject == current.issuer]
        anchor = next((a for a in named if _signed_by(current, a)), None)
        if anchor is not None:
            problem = _ca_problem(anchor, below, "trust anchor") or _validity_problem(anchor, now, "trust anchor")
            if problem:
                return False, problem
            path.append(anchor)
            return True, " <- ".join(_label(c) for c in path)

        candidates = [c for c in intermediates if c.subject == current.issuer and c not in path]
        signer = next((c for c in candidates if _signed_by(current, c)), None)
        if signer is None:
            if named or candidates:
                return False, (
                    f"the signature of {_label(current)} does not verify with the key of "
                    f"{current.issuer.rfc4514_string()} (same name, different key: "
                    "a CA re-created with --force, or a stale bundle?)"
                )
            return False, (
                f"{_label(current)} was issued by {current.issuer.rfc4514_string()}, which is not "
                "a trust anchor of the bundle nor in the chain (another CA, or a stale bundle)"
            )
        problem = _ca_problem(signer, below, "intermediate")
        if problem:
            return False, problem
        path.append(signer)
        current = signer
    return False, f"the chain is longer than {_MAX_DEPTH} certificates"
