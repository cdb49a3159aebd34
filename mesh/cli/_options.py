"""Options that several commands take, declared once (same flag, same help everywhere)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Lan = Annotated[bool, typer.Option("--lan", help="zeroconf on every interface (default: loopback only).")]
Interfaces = Annotated[
    Optional[list[str]], typer.Option("--interface", help="zeroconf on this interface address (repeatable).")
]
Advertise = Annotated[
    Optional[str], typer.Option(help="Host that peers dial for the inbound listener (default: its bind address).")
]
AppProtocol = Annotated[
    str,
    typer.Option(
        "--protocol",
        help="What the app speaks: auto (detect), http, http2, grpc or tcp. Declared HTTP is never relayed as raw bytes.",
    ),
]

# Telemetry beyond metrics (each off unless given): `mesh proxy`, `mesh inject`, `mesh gateway`, `mesh up`.
OtlpEndpoint = Annotated[
    Optional[str],
    typer.Option(
        "--otlp-endpoint",
        metavar="URL",
        help="Trace: a span per request and hop, sent to this OTLP/HTTP collector (e.g. http://127.0.0.1:4318).",
    ),
]
TraceSample = Annotated[
    Optional[str],
    typer.Option(
        "--trace-sample",
        metavar="RATE",
        help="Share of new traces sampled, 0.0-1.0 (default 1.0); a caller's own decision is followed.",
    ),
]
AccessLog = Annotated[
    Optional[str],
    typer.Option("--access-log", metavar="PATH|-", help="Append one JSON line per request to PATH, or - for stdout."),
]


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
