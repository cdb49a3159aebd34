"""SPIFFE ids: who a workload or an operator is, as a URI.

``spiffe://<trust_domain>/svc/<service>`` for workloads,
``spiffe://<trust_domain>/operator/<name>`` for people driving the CLI, and
``spiffe://<trust_domain>/host/<name>`` for a host that joined the mesh (its CLI
may read the mesh: status, stats, routes, tap; never change it). The URI is the
only identity a certificate carries (its URI SAN); the subject CN is a readable
copy of the name, never trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mesh.errors import IdentityError

DEFAULT_TRUST_DOMAIN = "mesh.local"
SCHEME = "spiffe://"
# The control plane's service name, reserved: only the controller holds spiffe://<td>/svc/mesh-controller.
CONTROLLER_SERVICE = "mesh-controller"

IdentityKind = Literal["svc", "operator", "host"]
IDENTITY_KINDS: tuple[IdentityKind, ...] = ("svc", "operator", "host")
_KIND_WORDS = {"svc": "service name", "operator": "operator name", "host": "host name"}

# DNS-label-like, so a service name also works as a host name (`reviews.mesh`).
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# The SPIFFE spec's trust-domain alphabet (lowercase only: no normalisation surprises).
_TRUST_DOMAIN_RE = re.compile(r"^[a-z0-9._-]{1,255}$")


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` unchanged, or raise IdentityError saying what is allowed."""
    if not isinstance(trust_domain, str) or not _TRUST_DOMAIN_RE.match(trust_domain):
        raise IdentityError(
            f"invalid trust domain {trust_domain!r}: use lowercase letters, digits, '.', '-' and '_'",
            hint=f"for example --trust-domain {DEFAULT_TRUST_DOMAIN}",
        )
    return trust_domain


def validate_name(name: str, kind: IdentityKind = "svc") -> str:
    """Return ``name`` unchanged, or raise IdentityError saying what a name looks like."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        what = _KIND_WORDS.get(kind, "name")
        raise IdentityError(
            f"invalid {what} {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
            hint="for example reviews, ratings-v2" if kind != "host" else "for example host-b, rack2-node7",
        )
    return name


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A validated SPIFFE id; ``str(spiffe_id)`` is the URI."""

    trust_domain: str
    kind: IdentityKind
    name: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if self.kind not in IDENTITY_KINDS:
            raise IdentityError(f"invalid identity kind {self.kind!r}: expected one of {', '.join(IDENTITY_KINDS)}")
        validate_name(self.name, self.kind)

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}/{self.kind}/{self.name}"

    @property
    def uri(self) -> str:
        return str(self)

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://<td>/svc/<name>``, ``…/operator/<name>`` or ``…/host/<name>``; nothing else."""
        if not isinstance(uri, str) or not uri.startswith(SCHEME):
            raise IdentityError(f"invalid SPIFFE id {uri!r}: expected spiffe://<trust-domain>/svc/<name>")
        trust_domain, _, path = uri[len(SCHEME) :].partition("/")
        parts = path.split("/")
        if len(parts) != 2 or parts[0] not in IDENTITY_KINDS:
            raise IdentityError(
                f"invalid SPIFFE id {uri!r}: expected spiffe://<trust-domain>/svc/<name>, "
                "spiffe://<trust-domain>/operator/<name> or spiffe://<trust-domain>/host/<name>"
            )
        try:
            return cls(trust_domain, parts[0], parts[1])
        except IdentityError as exc:
            raise IdentityError(f"invalid SPIFFE id {uri!r}: {exc.message}") from None


def service_identity(trust_domain: str, name: str) -> SpiffeId:
    return SpiffeId(trust_domain, "svc", name)


def operator_identity(trust_domain: str, name: str) -> SpiffeId:
    return SpiffeId(trust_domain, "operator", name)


def host_identity(trust_domain: str, name: str) -> SpiffeId:
    return SpiffeId(trust_domain, "host", name)


def host_name_from(text: str) -> str:
    """A host name (``socket.gethostname()``) as a SPIFFE name: its first label, lowercase,
    other characters as '-'; ``host`` when nothing is left."""
    label = re.sub(r"[^a-z0-9-]", "-", text.split(".")[0].lower()).strip("-")[:63].strip("-")
    return label or "host"


def trust_domain_uri(trust_domain: str) -> str:
    """The URI naming a whole trust domain (the root certificate's URI SAN)."""
    return f"{SCHEME}{validate_trust_domain(trust_domain)}"


def parse_trust_domain_uri(uri: str) -> str:
    """``spiffe://mesh.local`` → ``mesh.local`` (IdentityError otherwise)."""
    if not uri.startswith(SCHEME) or "/" in uri[len(SCHEME) :]:
        raise IdentityError(f"invalid trust domain URI {uri!r}: expected spiffe://<trust-domain>")
    return validate_trust_domain(uri[len(SCHEME) :])
