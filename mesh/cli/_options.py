"""Options that several commands take, declared once (same flag, same help everywhere)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from mesh.proxy import SidecarOption, sidecar_option, sidecar_options

F = TypeVar("F", bound=Callable[..., Any])

_TYPES: dict[str, Any] = {
    "str": str,
    "path": Path,
    "int": int,
    "float": float,
    "multi": list[str],
    "switch": bool,
    "flag": bool,
}


def _typer_annotation(option: SidecarOption, command: str, optional: bool = False) -> Any:
    """The option's type and typer.Option; ``optional``: None when not given, whatever the default."""
    value_type = _TYPES[option.kind]
    if (optional or option.default is None) and option.kind not in ("switch", "flag"):
        value_type = Optional[value_type]
    decls = f"{option.flag}/--no-{option.flag[2:]}" if option.kind == "switch" else option.flag
    info = typer.Option(decls, help=option.help_in(command), show_default=option.show_default, metavar=option.metavar)
    return Annotated[value_type, info]


def _typer_parameter(option: SidecarOption, command: str) -> inspect.Parameter:
    default = inspect.Parameter.empty if option.required else option.default
    return inspect.Parameter(
        option.param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_typer_annotation(option, command)
    )


def with_sidecar_options(command: str) -> Callable[[F], F]:
    """Give a typer command the sidecar options ``command`` takes (``mesh.proxy.SIDECAR_OPTIONS``),
    after its own parameters; the command receives them in ``**sidecar``."""

    def decorate(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        params += [_typer_parameter(option, command) for option in sidecar_options(command)]  # type: ignore[arg-type]

        @functools.wraps(func)
        def command_with_options(**values: Any) -> Any:
            return func(**values)

        command_with_options.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        command_with_options.__annotations__ = {p.name: p.annotation for p in params}
        return command_with_options  # type: ignore[return-value]

    return decorate


# The controller's zeroconf options, said as the sidecars say them.
Lan = _typer_annotation(sidecar_option("lan"), "controller")
Interfaces = _typer_annotation(sidecar_option("interface"), "controller")
# `mesh up`'s telemetry options, said as the sidecars it starts say them; None when not given
# (then mesh.toml's [telemetry] decides).
OtlpEndpoint = _typer_annotation(sidecar_option("otlp_endpoint"), "up", optional=True)
TraceSample = _typer_annotation(sidecar_option("trace_sample"), "up", optional=True)
AccessLog = _typer_annotation(sidecar_option("access_log"), "up", optional=True)

Store = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        metavar="URL",
        help="Where the controller keeps its state: embedded (MESH_HOME/state, the default) or "
        "etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (several controllers serve one mesh).",
    ),
]


def store_url(given: str | None, configured: str | None = None) -> object:
    """``--store`` (else mesh.toml's ``[control] store``, else embedded) as a StoreUrl; a bad one is a clear error."""
    from mesh.config import STORE_EXPECTED, StoreUrlError, parse_store_url
    from mesh.errors import ConfigError

    text = given or configured or "embedded"
    try:
        return parse_store_url(text)
    except StoreUrlError as exc:
        raise ConfigError(f"--store: expected {STORE_EXPECTED}: {exc}, found {text!r}") from None
