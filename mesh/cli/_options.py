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
