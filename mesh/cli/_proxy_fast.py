"""`mesh proxy` without typer: a sidecar should not carry the whole CLI.

typer validates every option through pydantic, and importing it with the other
command modules costs a `mesh proxy` process ~11 MB of its ~60 MB budget
(docs/performance.md). So ``main()`` first tries this parser: it accepts only
plain, well-formed command lines

    mesh [--home DIR] [--debug] [--log-format F] proxy --service S --app HOST:PORT
         [--opt VALUE | --opt=VALUE | --flag]...

and returns None for anything else (help, unknown or repeated options, missing
or dash-leading values, positional arguments, shell completion), which then
goes through typer as before, errors and all. ``start_proxy`` is the one body
both paths run. ``OPTIONS``/``DEFAULTS`` come from ``mesh.proxy.SIDECAR_OPTIONS``, as
the typer command's parameters do; tests/unit/cli/test_proxy_fast.py compares
both parsers on many command lines.

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
from mesh.proxy import sidecar_options

# Kind of value → how the parser takes it (mesh.proxy.SidecarOption.kind).
Take = Literal["str", "path", "int", "float", "multi", "on", "off"]


def _options() -> dict[str, tuple[str, Take]]:
    """Flag → (parameter of `mesh proxy`, how its value is taken), from mesh.proxy.SIDECAR_OPTIONS."""
    table: dict[str, tuple[str, Take]] = {}
    for option in sidecar_options("proxy"):
        if option.kind == "switch":
            table[option.flags[0]] = (option.param, "on")
            table[option.flags[1]] = (option.param, "off")
        elif option.kind == "flag":
            table[option.flag] = (option.param, "on")
        else:
            table[option.flag] = (option.param, option.kind)
    return table


OPTIONS = _options()
# What typer would pass for an option not given (the required ones have no default).
DEFAULTS: dict[str, Any] = {o.param: o.default for o in sidecar_options("proxy") if not o.required}
REQUIRED = tuple(o.param for o in sidecar_options("proxy") if o.required)
LOG_FORMATS = ("text", "json")  # mesh._logging.FORMATS, as typed (anything else: typer's error)


@dataclass(frozen=True)
class ProxyArgs:
    """What typer would have handed to the root callback and to ``proxy``."""

    home: Path | None
    debug: bool
    values: dict[str, Any]
    log_format: str | None = None

    def run(self) -> None:
        """The root callback, then the command, ending as typer's standalone mode does."""
        home = MeshHome.resolve(self.home)
        if self.home is not None:
            os.environ["MESH_HOME"] = str(home.root)  # as the root callback: children inherit it
        if self.log_format is not None:
            from mesh._logging import ENV_FORMAT

            os.environ[ENV_FORMAT] = self.log_format
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
        sys.stdout = _PacifyFlush(sys.stdout)
        sys.stderr = _PacifyFlush(sys.stderr)
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


def _number(text: str, kind: type[int] | type[float]) -> int | float | None:
    """The number as typer (click) converts it, else None (typer then says what is wrong)."""
    try:
        return kind(text)
    except ValueError:
        return None


def parse_proxy_argv(args: Sequence[str]) -> ProxyArgs | None:
    """A plain `mesh [--home DIR] [--debug] proxy OPTIONS` command line, else None (typer's turn)."""
    if os.environ.get("_MESH_COMPLETE"):  # shell completion: typer's job
        return None
    home: str | None = None
    debug = False
    log_format: str | None = None
    i = 0
    while i < len(args):  # root options, before the command
        arg = args[i]
        if arg == "--debug" and not debug:
            debug = True
        elif arg == "--log-format" and log_format is None and i + 1 < len(args) and args[i + 1] in LOG_FORMATS:
            i += 1
            log_format = args[i]
        elif arg.startswith("--log-format=") and log_format is None and arg.partition("=")[2] in LOG_FORMATS:
            log_format = arg.partition("=")[2]
        elif arg == "--home" and home is None and i + 1 < len(args) and _plain(args[i + 1]):
            i += 1
            home = args[i]
        elif arg.startswith("--home=") and home is None and _plain(arg[len("--home=") :]):
            home = arg[len("--home=") :]
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
            elif kind in ("int", "float"):
                number = _number(value, int if kind == "int" else float)
                if number is None:
                    return None  # typer says what is wrong with it
                values[param] = number
            else:
                values[param] = Path(value) if kind == "path" else value
        i += 1
    if any(name not in values for name in REQUIRED):
        return None
    return ProxyArgs(
        home=Path(home) if home is not None else None, debug=debug, values={**DEFAULTS, **values}, log_format=log_format
    )


def start_proxy(home: MeshHome, debug: bool, **sidecar: Any) -> int | None:
    """Run the sidecar in the foreground: the body of `mesh proxy`, whichever parser ran."""
    from mesh._logging import setup_logging
    from mesh.proxy import ProxyOptions, proxy_fields, run_proxy_command

    setup_logging(f"proxy {sidecar['service']}", debug=debug, level=sidecar.get("log_level", "info"))
    return run_proxy_command(ProxyOptions(home=home, **proxy_fields(sidecar)))
