"""The sidecar's command-line options, described once.

`mesh proxy`, `mesh inject` and `mesh gateway` start the same sidecar. Each option they
share is one ``SidecarOption`` here (flag, kind, default, help, which commands take it);
from this table come the typer parameters of the three commands (``mesh.cli._options``),
the lean parser of `mesh proxy` (``mesh.cli._proxy_fast``), what `inject` and `gateway`
hand to their re-exec'd sidecar, and the defaults of ``ProxyOptions``. Options that only
one command has and that are not the sidecar's (inject's ``-- CMD``, the gateway's routes)
stay with that command.

This module imports nothing heavy: the lean paths read it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# How a value is taken from the command line:
#   str, path, int, float: one value;  multi: repeatable, a list (None when not given);
#   switch: --x/--no-x;  flag: --x alone (False unless given).
Kind = Literal["str", "path", "int", "float", "multi", "switch", "flag"]
Command = Literal["proxy", "inject", "gateway"]

PROXY: frozenset[Command] = frozenset({"proxy"})
SIDECARS: frozenset[Command] = frozenset({"proxy", "inject"})  # the sidecars that serve an app
ALL: frozenset[Command] = frozenset({"proxy", "inject", "gateway"})


@dataclass(frozen=True)
class SidecarOption:
    param: str  # the commands' parameter name (flag: --param-with-dashes)
    kind: Kind
    default: Any
    help: str
    commands: frozenset[Command] = ALL
    required: bool = False
    help_for: Mapping[str, str] | None = None  # a command that says it differently
    show_default: bool = True
    metavar: str | None = None  # what --help shows for the value (default: its type)

    @property
    def flag(self) -> str:
        return "--" + self.param.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """Every token that names this option (a switch has two)."""
        return (self.flag, "--no-" + self.flag[2:]) if self.kind == "switch" else (self.flag,)

    def help_in(self, command: str) -> str:
        return (self.help_for or {}).get(command, self.help)


_HOST_DEFAULT = "Default: port 0 on this host's address (recorded by `mesh join`), else on 127.0.0.1."

SIDECAR_OPTIONS: tuple[SidecarOption, ...] = (
    SidecarOption("service", "str", None, "Name of the service this sidecar serves.", PROXY, required=True),
    SidecarOption(
        "app", "str", None, "HOST:PORT where the app listens (inbound traffic goes there).", PROXY, required=True
    ),
    SidecarOption(
        "inbound",
        "str",
        None,
        f"Inbound mTLS listener, HOST:PORT (port 0: any). {_HOST_DEFAULT}",
        SIDECARS,
        show_default=False,
    ),
    SidecarOption("outbound", "str", "127.0.0.1:0", "Outbound listener for the app, HOST:PORT.", PROXY),
    SidecarOption(
        "admin", "str", "127.0.0.1:0", "Admin server (/metrics, /ready, /live, /config, /tap), HOST:PORT on loopback."
    ),
    SidecarOption(
        "endpoints", "path", None, "Static endpoints file (TOML, docs/discovery.md), re-read when it changes."
    ),
    SidecarOption(
        "upstream", "multi", None, "SVC=PORT: a local listener on PORT that carries any protocol to SVC.", PROXY
    ),
    SidecarOption("label", "multi", None, "k=v label of this instance.", SIDECARS),
    SidecarOption("cert", "path", None, "Certificate chain (PEM); default: issue from MESH_HOME's CA.", PROXY),
    SidecarOption("key", "path", None, "Private key (PEM) for --cert.", PROXY),
    SidecarOption("bundle", "path", None, "Trust bundle (PEM) for --cert.", PROXY),
    SidecarOption("request_timeout", "str", "10s", "Time to wait for a response head (504 after).", PROXY),
    SidecarOption("idle_timeout", "str", "5m", "Close client connections idle this long.", PROXY),
    SidecarOption("head_timeout", "str", "10s", "A whole request head must arrive within this (408 after).", PROXY),
    SidecarOption(
        "body_timeout",
        "str",
        "30s",
        "A request body that stalls this long is cut (408, or 504 when the app stops reading).",
        PROXY,
    ),
    SidecarOption("drain_timeout", "str", "10s", "On SIGTERM, let in-flight requests finish for this long.", PROXY),
    SidecarOption("controller", "str", None, "Controller HOST:PORT (default: from MESH_HOME/controller.json)."),
    SidecarOption(
        "token",
        "str",
        None,
        "Join token for the first certificate (default: $MESH_JOIN_TOKEN or MESH_HOME/join-token).",
    ),
    SidecarOption("cert_ttl", "str", None, "Lifetime of the certificates to ask for (default 24h, at least 60s)."),
    SidecarOption(
        "zeroconf", "switch", True, "Advertise and discover with mDNS.", help_for={"gateway": "Discover with mDNS."}
    ),
    SidecarOption("lan", "flag", False, "zeroconf on every interface (default: loopback only)."),
    SidecarOption("interface", "multi", None, "zeroconf on this interface address (repeatable)."),
    SidecarOption(
        "advertise", "str", None, "Host that peers dial for the inbound listener (default: its bind address).", SIDECARS
    ),
    SidecarOption(
        "protocol",
        "str",
        "auto",
        "What the app speaks: auto (detect), http, http2, grpc or tcp. Declared HTTP is never relayed as raw bytes.",
        SIDECARS,
    ),
    # Telemetry beyond metrics, each off unless given (docs/config.md [telemetry]).
    SidecarOption(
        "otlp_endpoint",
        "str",
        None,
        "Trace: a span per request and hop, sent to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318).",
        metavar="URL",
    ),
    SidecarOption(
        "trace_sample",
        "str",
        "1.0",
        "Share of new traces sampled, 0.0-1.0; a caller's own decision is followed.",
        metavar="RATE",
    ),
    SidecarOption(
        "access_log", "str", None, "Append one JSON line per request to PATH, or - for stdout.", metavar="PATH|-"
    ),
    SidecarOption("log_level", "str", "info", "debug, info, warning or error.", PROXY),
    SidecarOption(
        "workers",
        "str",
        "1",
        "Processes sharing the listeners (SO_REUSEPORT), one per CPU at most (docs/performance.md).",
        frozenset({"proxy", "gateway"}),
    ),
)

_BY_PARAM = {option.param: option for option in SIDECAR_OPTIONS}


def sidecar_options(command: Command) -> Iterator[SidecarOption]:
    """The options ``command`` takes, in the table's order."""
    return (option for option in SIDECAR_OPTIONS if command in option.commands)


def sidecar_option(param: str) -> SidecarOption:
    return _BY_PARAM[param]


def option_default(param: str) -> Any:
    return _BY_PARAM[param].default


def sidecar_interfaces(lan: bool, interface: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``--lan`` / ``--interface ADDR``...: every interface, the ones named, else None (the host's
    interface from host.json, else loopback: ``mesh.proxy.with_host_defaults``)."""
    if lan:
        return ("all",)
    return tuple(interface) if interface else None


def proxy_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ProxyOptions`` fields for the sidecar options among ``values`` (the commands' parameter
    names): the repeatable ones become lists, --lan and --interface the zeroconf interfaces."""
    fields: dict[str, Any] = {}
    for param, value in values.items():
        option = _BY_PARAM.get(param)
        if option is None or param in ("lan", "interface", "log_level"):
            continue
        if param == "upstream":
            fields["upstreams"] = list(value or [])
        elif param == "label":
            fields["labels"] = list(value or [])
        elif option.kind == "path" and value is not None:
            fields[param] = Path(value)
        else:
            fields[param] = value
    if "lan" in values or "interface" in values:
        fields["interfaces"] = sidecar_interfaces(values.get("lan", False), values.get("interface"))
    return fields
