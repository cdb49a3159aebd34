"""`mesh proxy` without typer: a sidecar should not carry the whole CLI.

typer validates every option through pydantic, and importing it with the other
command modules costs a `mesh proxy` process ~11 MB of its ~60 MB budget
(docs/performance.md). So ``main()`` first tries this parser: it accepts only
plain, well-formed command lines

    mesh [--home DIR] [--debug] proxy --service S --app HOST:PORT [--opt VALUE | --opt=VALUE | --flag]...

and returns None for anything else (help, unknown or repeated options, missing
or dash-leading values, positional arguments, shell completion), which then
goes through typer as before, errors and all. ``start_proxy`` is the one body
both paths run. ``OPTIONS``/``DEFAULTS`` mirror ``mesh.cli.proxy.proxy``;
tests/unit/cli/test_proxy_fast.py checks them against the typer command and
compares both parsers on many command lines.

This module must import neither typer nor anything heavy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mesh.home import MeshHome

Kind = Literal["str", "path", "multi", "on", "off"]

# Flag → (parameter of mesh.cli.proxy.proxy, how its value is taken).
OPTIONS: dict[str, tuple[str, Kind]] = {
    "--service": ("service", "str"),
    "--app": ("app", "str"),
    "--inbound": ("inbound", "str"),
    "--outbound": ("outbound", "str"),
    "--admin": ("admin", "str"),
    "--endpoints": ("endpoints", "path"),
    "--upstream": ("upstream", "multi"),
    "--label": ("label", "multi"),
    "--cert": ("cert", "path"),
    "--key": ("key", "path"),
    "--bundle": ("bundle", "path"),
    "--request-timeout": ("request_timeout", "str"),
    "--idle-timeout": ("idle_timeout", "str"),
    "--head-timeout": ("head_timeout", "str"),
    "--body-timeout": ("body_timeout", "str"),
    "--drain-timeout": ("drain_timeout", "str"),
    "--controller": ("controller", "str"),
    "--token": ("token", "str"),
    "--cert-ttl": ("cert_ttl", "str"),
    "--zeroconf": ("zeroconf", "on"),
    "--no-zeroconf": ("zeroconf", "off"),
    "--lan": ("lan", "on"),
    "--interface": ("interface", "multi"),
    "--advertise": ("advertise", "str"),
    "--protocol": ("protocol", "str"),
    "--log-level": ("log_level", "str"),
    "--workers": ("workers", "str"),
}

# The defaults of mesh.cli.proxy.proxy (service and app are required).
DEFAULTS: dict[str, Any] = {
    "inbound": "127.0.0.1:0",
    "outbound": "127.0.0.1:0",
    "admin": "127.0.0.1:0",
    "endpoints": None,
    "upstream": None,
    "label": None,
    "cert": None,
    "key": None,
    "bundle": None,
    "request_timeout": "10s",
    "idle_timeout": "5m",
    "head_timeout": "10s",
    "body_timeout": "30s",
    "drain_timeout": "10s",
    "controller": None,
    "token": None,
    "cert_ttl": None,
    "zeroconf": True,
    "lan": False,
    "interface": None,
    "advertise": None,
    "protocol": "auto",
    "log_level": "info",
    "workers": "1",
}

REQUIRED = ("service", "app")


@dataclass(frozen=True)
class ProxyArgs:
    """What typer would have handed to the root callback and to ``proxy``."""

    home: Path | None
    debug: bool
    values: dict[str, Any]

    def run(self) -> None:
        """The root callback, then the command, ending as typer's standalone mode does."""
        home = MeshHome.resolve(self.home)
        if self.home is not None:
            os.environ["MESH_HOME"] = str(home.root)  # as the root callback: children inherit it
        run_standalone(lambda: start_proxy(home, self.debug, **self.values))


def run_standalone(run: Callable[[], int | None]) -> None:
    """Run a command body and end as typer's standalone mode ends a command (for the lean paths)."""
    try:
        status = run()
    except EOFError:
        sys.stderr.write("\nAborted!\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        import errno

        if exc.errno != errno.EPIPE:
            raise
        sys.stdout = _PacifyFlush(sys.stdout)  # type: ignore[assignment]
        sys.stderr = _PacifyFlush(sys.stderr)  # type: ignore[assignment]
        sys.exit(1)
    sys.exit(status or 0)


class _PacifyFlush:
    """Like click's PacifyFlushWrapper: a broken pipe found while exiting is not reported twice."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            import errno

            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def _plain(value: str) -> bool:
    """A value both parsers read the same way: typer takes a dash-leading token as a value too,
    pydantic may reject lone surrogates; leave those (and empty values) to typer."""
    if not value or value.startswith("-"):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_proxy_argv(args: Sequence[str]) -> ProxyArgs | None:
    """A plain `mesh [--home DIR] [--debug] proxy OPTIONS` command line, else None (typer's turn)."""
    if os.environ.get("_MESH_COMPLETE"):  # shell completion: typer's job
        return None
    home: str | None = None
    debug = False
    i = 0
    while i < len(args):  # root options, before the command
        arg = args[i]
        if arg == "--debug" and not debug:
            debug = True
        elif arg == "--home" and home is None and i + 1 < len(args) and _plain(args[i + 1]):
            i += 1
            home = args[i]
        elif arg.startswith("--home=") and home is None and _plain(arg[len("--home="):]):
            home = arg[len("--home="):]
        else:
            break
        i += 1
    if i >= len(args) or args[i] != "proxy":
        return None
    values: dict[str, Any] = {}
    i += 1
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        spec = OPTIONS.get(name)
        if spec is None:  # help, unknown options, positional arguments, `--`
            return None
        param, kind = spec
        if kind in ("on", "off"):
            if eq or param in values:
                return None
            values[param] = kind == "on"
        else:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if not _plain(value):
                return None
            if kind == "multi":
                values.setdefault(param, []).append(value)
            elif param in values:
                return None
            else:
                values[param] = Path(value) if kind == "path" else value
        i += 1
    if any(name not in values for name in REQUIRED):
        return None
    return ProxyArgs(home=Path(home) if home is not None else None, debug=debug, values={**DEFAULTS, **values})


def start_proxy(
    home: MeshHome,
    debug: bool,
    *,
    service: str,
    app: str,
    inbound: str,
    outbound: str,
    admin: str,
    endpoints: Path | None,
    upstream: list[str] | None,
    label: list[str] | None,
    cert: Path | None,
    key: Path | None,
    bundle: Path | None,
    request_timeout: str,
    idle_timeout: str,
    head_timeout: str,
    body_timeout: str,
    drain_timeout: str,
    controller: str | None,
    token: str | None,
    cert_ttl: str | None,
    zeroconf: bool,
    lan: bool,
    interface: list[str] | None,
    advertise: str | None,
    protocol: str,
    log_level: str,
    workers: str = "1",
) -> int | None:
    """Run the sidecar in the foreground: the body of `mesh proxy`, whichever parser ran."""
    from mesh._logging import setup_logging
    from mesh.proxy._main import ProxyOptions, run_proxy_command

    setup_logging(f"proxy {service}", debug=debug, level=log_level)
    return run_proxy_command(
        ProxyOptions(
            home=home,
            service=service,
            app=app,
            inbound=inbound,
            outbound=outbound,
            admin=admin,
            endpoints=endpoints,
            upstreams=upstream or [],
            labels=label or [],
            cert=cert,
            key=key,
            bundle=bundle,
            request_timeout=request_timeout,
            idle_timeout=idle_timeout,
            head_timeout=head_timeout,
            body_timeout=body_timeout,
            drain_timeout=drain_timeout,
            controller=controller,
            token=token,
            cert_ttl=cert_ttl,
            zeroconf=zeroconf,
            interfaces=("all",) if lan else tuple(interface or ("127.0.0.1",)),
            advertise=advertise,
            protocol=protocol,
            workers=workers,
        )
    )
