"""Where the controller keeps its state: ``embedded`` or an etcd v3 cluster (pure parsing).

    embedded                                        MESH_HOME/state/mesh.db (SQLite, WAL)
    etcd://10.0.0.1:2379,10.0.0.2:2379              plain HTTP to the members' client URLs
    etcds://10.0.0.1:2379/prod?ca=ca.pem&cert=c.pem&key=k.pem
    etcd://10.0.0.1:2379?user=mesh&password_file=/etc/mesh/etcd-password

The path, when given, is the key prefix (default ``/mesh/``): several meshes may
share one etcd cluster under different prefixes. ``etcds`` is TLS (``ca`` the
members' CA, default the system's; ``cert``/``key`` a client certificate).
``user`` turns on etcd authentication; the password comes from
``password_file`` or the ``MESH_ETCD_PASSWORD`` environment variable, never
from the URL itself (URLs end up in logs, `ps` and mesh.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from mesh.config._names import split_host_port

EMBEDDED = "embedded"
DEFAULT_ETCD_PREFIX = "/mesh/"
STORE_EXPECTED = '"embedded" or an etcd URL like "etcd://10.0.0.1:2379,10.0.0.2:2379"'
_OPTIONS = ("ca", "cert", "key", "user", "password_file")


@dataclass(frozen=True, slots=True)
class StoreUrl:
    kind: str  # "embedded" | "etcd"
    endpoints: tuple[tuple[str, int], ...] = ()
    prefix: str = DEFAULT_ETCD_PREFIX
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None

    @property
    def embedded(self) -> bool:
        return self.kind == EMBEDDED

    def describe(self) -> str:
        """For messages and logs: the members and prefix, never a secret."""
        if self.embedded:
            return "the embedded store"
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"{'etcds' if self.tls else 'etcd'}://{hosts}{self.prefix.rstrip('/') or '/'}"


class StoreUrlError(ValueError):
    """What is wrong with a store URL, in words that follow "expected …, found …"."""


def parse_store_url(text: str) -> StoreUrl:
    """``embedded`` or ``etcd[s]://H:P[,H:P…][/prefix][?options]``; raises StoreUrlError."""
    if text == EMBEDDED:
        return StoreUrl(EMBEDDED)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise StoreUrlError("the scheme etcd:// or etcds://")
    # urlsplit cannot hold several host:port pairs in one netloc: split them by hand.
    rest, _, query = rest.partition("?")
    hosts, _, path = rest.partition("/")
    parts = urlsplit(f"x://h/{path}?{query}")
    endpoints = []
    for item in hosts.split(","):
        address = split_host_port(item)
        if address is None or not address[1]:
            raise StoreUrlError(f"members as host:port, comma-separated (bad member {item!r})")
        endpoints.append(address)
    prefix = parts.path if parts.path not in ("", "/") else DEFAULT_ETCD_PREFIX
    if not prefix.endswith("/"):
        prefix += "/"
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _OPTIONS:
            raise StoreUrlError(f"options among {', '.join(_OPTIONS)} (unknown option {name!r})")
        if not value:
            raise StoreUrlError(f"a value for option {name!r}")
        options[name] = value
    tls = scheme == "etcds"
    if not tls and any(name in options for name in ("ca", "cert", "key")):
        raise StoreUrlError("etcds:// when ca, cert or key is given (they are TLS options)")
    if ("cert" in options) != ("key" in options):
        raise StoreUrlError("cert and key together (a client certificate and its key)")
    if "password_file" in options and "user" not in options:
        raise StoreUrlError("user together with password_file")
    return StoreUrl("etcd", tuple(endpoints), prefix, tls, **options)
