"""Who can reach what `mesh up` runs (pure): one decision for the controller and
for every sidecar and gateway, so that they never disagree.

Every default is loopback. A host serves other hosts once it knows its own
address on their network, the *host address*; first found:

1. ``--advertise ADDR``: the address the others dial. Listeners then bind the
   wildcard, since ADDR need not be one of this host's (NAT, a forwarded port);
2. the controller's ``--listen`` host, when it is one specific, non-loopback address;
3. the first non-loopback address of ``[discovery] interfaces``.

With a host address the sidecars' inbound listeners bind it (the controller
reads their metrics and tap there too, over mTLS; admin servers stay on
loopback), the controller listens on it unless ``--listen`` says otherwise, and it is the
address of the ``mesh join`` line and of the controller's zeroconf record.
Without one everything stays on loopback, and a wildcard ``--listen`` is
refused: `mesh up` could not tell anybody an address to dial.

``[discovery] mode`` picks where the sidecars learn endpoints, on top of the
controller's snapshots: zeroconf on ``interfaces`` (``--lan``: every
interface), the endpoints file (``static``), or nothing else (``controller``).
When ``interfaces`` is left at loopback and the host address is the controller's
``--listen`` host (an address of this host), zeroconf spans that interface too:
the controller then sees, and says goodbye for, the records of proxies on other
hosts that die, and the records of other meshes reach it only to be ignored.
The host address is recorded in MESH_HOME/host.json (``host_record``): the
commands run by hand on this host listen and advertise there too.
Details: docs/cli.md, "Several hosts".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mesh.config import DiscoveryConfig
from mesh.discovery import format_address, is_loopback
from mesh.errors import ControllerError
from mesh.home import HostRecord

DEFAULT_CONTROLLER_PORT = 4190
WILDCARDS = frozenset({"0.0.0.0", "::"})
_WILDCARD_HINT = (
    "give --advertise ADDR (the address of this host that the other hosts reach), listen on that "
    "address (--listen ADDR:PORT), or make it a zeroconf interface (mesh.toml's [discovery] interfaces "
    "for `mesh up`, --interface ADDR for `mesh controller`)"
)


def zeroconf_interfaces(
    lan: bool, interface: list[str] | None, default: tuple[str, ...] | None = ("127.0.0.1",)
) -> tuple[str, ...] | None:
    """``--lan`` / ``--interface ADDR``...: every interface, the ones named, else ``default``
    (loopback; None lets a sidecar take its host's interface, see mesh.proxy._main)."""
    from mesh.proxy import sidecar_interfaces

    return sidecar_interfaces(lan, interface) or default


def check_advertise(host: str) -> str:
    """``--advertise``: an IPv4 address, since it goes into zeroconf A records as well."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ControllerError(
            f"--advertise {host!r}: expected the IPv4 address other hosts dial, such as 10.0.0.1",
            hint="an address, not HOST:PORT or a name (zeroconf records carry IPv4 addresses)",
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise ControllerError(f"--advertise {host}: nobody can dial that address", hint=_WILDCARD_HINT)
    return host


def host_address(listen_host: str | None, advertise: str | None, interfaces: tuple[str, ...]) -> str | None:
    """This host's address for the other hosts (see the module docstring), or None."""
    if advertise is not None:
        return advertise
    if listen_host is not None and listen_host not in WILDCARDS and not is_loopback(listen_host):
        return listen_host
    return DiscoveryConfig(interfaces=interfaces).lan_address


def controller_advertise(listen: tuple[str, int], advertise: str | None, interfaces: tuple[str, ...]) -> str | None:
    """The host the controller tells others to dial (`mesh join`, zeroconf), or None for its
    bind address. A wildcard bind with nothing to tell is refused, not printed as 0.0.0.0."""
    if advertise is not None:
        check_advertise(advertise)
    host = host_address(listen[0], advertise, interfaces)
    if listen[0] in WILDCARDS:
        if host is None:
            raise ControllerError(
                f"--listen {format_address(*listen)}: other hosts cannot dial {listen[0]}, and this host "
                "has no address configured to tell them instead",
                hint=_WILDCARD_HINT,
            )
        return host
    return advertise  # a specific bind address is dialable as it is (unless --advertise says otherwise)


@dataclass(frozen=True)
class Reach:
    """What `mesh up` binds and tells, for the controller and for everything it runs."""

    listen: tuple[str, int]  # the controller's API
    controller_advertise: str | None  # the controller's host for other hosts; None: its bind address
    host: str | None  # the host address; None: only this host reaches the services
    advertise: str | None  # --advertise as given: listeners bind the wildcard
    interfaces: tuple[str, ...]  # zeroconf of the controller, sidecars and gateways
    zeroconf: bool  # [discovery] mode = "zeroconf"
    endpoints_file: str | None  # mode = "static"

    @property
    def sidecar_host(self) -> str:
        """Where sidecars bind inbound: what they advertise must reach them."""
        if self.advertise is not None:
            return "0.0.0.0"
        return self.host or "127.0.0.1"

    def discovery_args(self) -> list[str]:
        """Flags of `mesh inject` and `mesh gateway` for where endpoints come from."""
        if not self.zeroconf:
            return ["--no-zeroconf"] + (["--endpoints", self.endpoints_file] if self.endpoints_file else [])
        if self.interfaces == ("all",):
            return ["--lan"]
        return [arg for interface in self.interfaces for arg in ("--interface", interface)]

    def sidecar_args(self) -> list[str]:
        """Flags of `mesh inject`: the very ones a user gives to reach other hosts by hand."""
        args = ["--inbound", format_address(self.sidecar_host, 0)]
        if self.advertise is not None:
            args += ["--advertise", self.advertise]
        return args + self.discovery_args()

    def host_record(self) -> HostRecord:
        """What MESH_HOME/host.json says of the controller's host."""
        if self.host is None:
            return HostRecord(role="controller", operator=True)
        return HostRecord(role="controller", address=self.host, bind=self.sidecar_host, operator=True)

    def daemon_args(self) -> list[str]:
        """Flags that make a detached `mesh up --daemon` decide exactly the same."""
        args = ["--listen", format_address(*self.listen)]
        if self.advertise is not None:
            args += ["--advertise", self.advertise]
        return args + (["--lan"] if self.interfaces == ("all",) else [])


def plan_reach(
    discovery: DiscoveryConfig | None,
    *,
    listen: tuple[str, int] | None = None,
    advertise: str | None = None,
    lan: bool = False,
) -> Reach:
    """`mesh up`'s options and mesh.toml's [discovery] → what to bind and what to tell.
    ``listen`` None means not given: the host address if there is one, else loopback; port 4190."""
    discovery = discovery or DiscoveryConfig()
    host = host_address(listen[0] if listen else None, advertise, discovery.interfaces)
    if listen is None:
        listen = ("0.0.0.0" if advertise is not None else host or "127.0.0.1", DEFAULT_CONTROLLER_PORT)
    interfaces = discovery.interfaces
    if interfaces == DiscoveryConfig().interfaces and advertise is None and host is not None and host == listen[0]:
        interfaces = (host,)  # the controller listens on this interface: zeroconf spans it too
    return Reach(
        listen=listen,
        controller_advertise=controller_advertise(listen, advertise, discovery.interfaces),
        host=host,
        advertise=advertise,
        interfaces=("all",) if lan else interfaces,
        zeroconf=discovery.mode == "zeroconf",
        endpoints_file=discovery.endpoints_file if discovery.mode == "static" else None,
    )
